"""The optional vLLM rollout backend without vLLM: the adapter hand-over (PEFT files, no base
weights, rewritten only after a change), vLLM's outputs as our Rollout, and the recipe key."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from model_helpers import randomize_lora_b
from run_helpers import ROOT
from safetensors.torch import load_file

from align.methods import load_recipe
from align.models.adapters import POLICY, add_adapter, use_adapter
from align.models.load import add_lora, tiny_model
from align.models.vllm_rollout import VLLMHandover, to_rollout, vllm_available, vllm_rank, write_adapter
from align.recipe import LoraConfig
from align.util.errors import RecipeError

ONLINE = ROOT / "tests" / "online_tiny.yaml"
PPO = ROOT / "tests" / "ppo_tiny.yaml"


def policy_with_value_adapter():
    """A tiny llama with a non-zero policy adapter and a second (value) adapter beside it."""
    model = add_lora(tiny_model(seed=0), LoraConfig(r=4, alpha=8, dropout=0.0))
    add_adapter(model, "value", None, LoraConfig(r=4, alpha=8, dropout=0.0))
    randomize_lora_b(model)
    return model.eval()


def test_written_adapter_loads_back_with_the_live_logits(tmp_path):
    from peft import PeftModel

    model = policy_with_value_adapter()
    out = write_adapter(model, tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary directory was renamed, not left
    tensors = load_file(out / "adapter_model.safetensors")
    base_names = {n for n, _ in tiny_model(seed=0).named_parameters()}
    assert tensors and all(k.startswith("base_model.model.") for k in tensors)
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in tensors), sorted(tensors)[:4]
    assert not any(k.removeprefix("base_model.model.") in base_names for k in tensors)  # no base weight
    assert not any("value" in k or "default" in k for k in tensors)  # the policy only, PEFT's names
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA" and config["inference_mode"] is True
    assert isinstance(config["target_modules"], list | str)

    ids = torch.randint(3, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), use_adapter(model, POLICY):
        live = model(input_ids=ids).logits
    fresh = PeftModel.from_pretrained(tiny_model(seed=0), str(out)).eval()
    with torch.no_grad():
        loaded = fresh(input_ids=ids).logits
        base = tiny_model(seed=0)(input_ids=ids).logits
    assert torch.allclose(loaded, live, atol=1e-6, rtol=0)
    assert (live - base).abs().max() > 1e-3  # the adapter matters: the check is not vacuous


def test_write_adapter_leaves_the_live_model_unmerged(tmp_path):
    model = policy_with_value_adapter()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    write_adapter(model, tmp_path / "a")
    write_adapter(model, tmp_path / "a")  # replacing an existing directory
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert not any(getattr(m, "merged", False) for m in model.modules())


def test_handover_writes_only_after_a_change(tmp_path):
    model = policy_with_value_adapter()
    h = VLLMHandover(tmp_path / "h")
    first, path1 = h.current(model)
    assert first == 1 and path1.is_dir()
    mtime = (path1 / "adapter_model.safetensors").stat().st_mtime_ns
    assert h.current(model) == (1, path1)  # unchanged: same id, nothing written
    assert (path1 / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == [path1.name]

    value_b = next(p for n, p in model.named_parameters() if "lora_B.value" in n)
    with torch.no_grad():
        value_b.add_(1.0)  # another adapter changed: the policy's hand-over stays
    assert h.current(model)[0] == 1

    policy = [p for n, p in model.named_parameters() if "lora_" in n and ".default." in n]
    opt = torch.optim.AdamW(policy, lr=1e-2)
    with use_adapter(model, POLICY):
        model(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
    opt.step()  # an optimizer step updates in place
    second, path2 = h.current(model)
    assert second == 2 and path2 != path1
    a, b = load_file(path1 / "adapter_model.safetensors"), load_file(path2 / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        policy[0].mul_(0.5)  # any in-place change
    assert h.current(model)[0] == 3
    assert not path1.exists() and path2.exists()  # the previous one is kept, older ones go
    h.invalidate()
    assert h.current(model)[0] == 4


def test_vllm_outputs_become_a_rollout_with_our_conventions():
    eos, pad = [2, 7], 0

    def req(tokens, reason, stop_reason=None):
        return SimpleNamespace(
            outputs=[SimpleNamespace(token_ids=tokens, finish_reason=reason, stop_reason=stop_reason)]
        )

    outs = [req([5, 6, 2], "stop", 2), req([5, 6, 8, 9], "length"), req([4], "stop", 7)]
    r = to_rollout(outs, [[11, 12], [13], [14, 15, 16]], eos, pad, max_new=4)
    assert r.prompt_ids.tolist() == [[0, 11, 12], [0, 0, 13], [14, 15, 16]]
    assert r.response_len.tolist() == [3, 4, 2]  # EOS counted; a stop token left out is put back
    assert r.response_ids.tolist() == [[5, 6, 2, 0], [5, 6, 8, 9], [4, 7, 0, 0]]
    assert r.ended.tolist() == [True, False, True]
    assert (vllm_rank(1), vllm_rank(4), vllm_rank(16), vllm_rank(17)) == (8, 8, 16, 32)


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
@pytest.mark.parametrize("recipe, section", [(ONLINE, "online"), (PPO, "ppo")])
def test_backend_vllm_without_vllm_is_a_recipe_error(recipe, section, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    for name in ("load_model", "load_config", "tiny_model"):
        monkeypatch.setattr(f"align.models.load.{name}", no_model)
    with pytest.raises(
        RecipeError, match=rf"{section}\.backend: 'vllm': vLLM is not installed.*pip install vllm"
    ):
        load_recipe(recipe, [f"{section}.backend=vllm"])


@pytest.mark.parametrize("backend", ["auto", "fast", "hf"])
def test_other_backends_are_accepted(backend):
    assert load_recipe(ONLINE, [f"online.backend={backend}"]).online.backend == backend
    assert load_recipe(PPO, [f"ppo.backend={backend}"]).ppo.backend == backend
    with pytest.raises(RecipeError, match="online.backend: 'gpu' is not one of"):
        load_recipe(ONLINE, ["online.backend=gpu"])


def test_online_run_with_backend_hf(tmp_path, monkeypatch):
    """The recipe key reaches `sample`: one short run samples through the HF backend."""
    import align.methods.rollout_phase as phase
    from align.train import run

    seen = []

    def spy(*args, backend="auto", **kwargs):
        seen.append(backend)
        return sample(*args, backend=backend, **kwargs)

    sample = phase.sample
    monkeypatch.setattr(phase, "sample", spy)
    out = tmp_path / "run"
    summary = run(load_recipe(ONLINE, [f"output_dir={out}", "online.backend=hf", "train.max_steps=1"]))
    assert seen and set(seen) == {"hf"}
    assert summary["after"]["eval/kl_ref"] >= 0
