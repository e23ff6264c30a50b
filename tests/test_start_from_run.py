"""model.adapter: a run starts from an earlier run, its adapter merged into the base in float32.

The checks: the merged base is W + (alpha/r)·B·A of the earlier adapter exactly; the new run's
reference (adapters off) is the earlier run's policy; chains are followed; evals load the same
weights; the manifest and cache key name the chain; bad starts are clear errors before loading.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from align.evals.policies import describe_run, load
from align.methods import load_recipe
from align.models.load import load_model, model_identity
from align.recipe import ModelConfig
from align.util.errors import RecipeError
from tests.run_helpers import TINY, run_tiny

QUICK = (
    "train.max_steps=2",
    "report.eval_before=false",
    "data.max_eval_examples=0",
    "data.max_train_examples=8",
)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A finished tiny DPO run (the 'SFT model' later runs start from)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("start") / "first"
    run_tiny(out, *QUICK)
    return out


def _tiny(adapter=None, dtype="float32") -> ModelConfig:
    return ModelConfig(name="tiny-smollm2", dtype=dtype, adapter=None if adapter is None else str(adapter))


def _policy_logits(run_dir, ids):
    model, _ = load(describe_run(run_dir))
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merge_is_exact_in_float32(earlier):
    """Every targeted weight becomes W + (alpha / r) · B @ A, computed here by hand from the files."""
    cfg = json.loads((earlier / "adapter" / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    lora = load_file(earlier / "adapter" / "adapter_model.safetensors")
    plain = dict(load_model(_tiny()).named_parameters())
    merged = dict(load_model(_tiny(earlier)).named_parameters())
    touched, moved = 0, 0.0
    for key, a in lora.items():
        if ".lora_A." not in key:
            continue
        b = lora[key.replace(".lora_A.", ".lora_B.")]
        name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        expect = plain[name].detach() + scale * (b @ a)
        assert torch.allclose(merged[name].detach(), expect, atol=1e-6, rtol=0), name
        touched, moved = touched + 1, max(moved, float((b @ a).abs().max()))
    assert touched == 2 * 7  # two layers x q k v o gate up down
    assert moved > 1e-5  # the earlier run moved its adapter: the comparison can fail


def test_bf16_start_is_the_float32_merge_cast(earlier):
    """Merged before the cast: the bf16 base equals the fp32 merge rounded once."""
    fp32 = dict(load_model(_tiny(earlier)).named_parameters())
    bf16 = dict(load_model(_tiny(earlier, "bfloat16")).named_parameters())
    for name, p in bf16.items():
        assert p.dtype == torch.bfloat16
        assert torch.equal(p.detach(), fp32[name].detach().to(torch.bfloat16)), name


def test_second_run_references_the_first_and_records_the_chain(earlier, tmp_path):
    second = tmp_path / "second"
    summary = run_tiny(second, *QUICK, f"model.adapter={earlier}")
    ids = torch.tensor([[1, 520, 3000, 41, 9, 2]])
    peft_model = summary["peft_model"]
    with torch.no_grad(), peft_model.disable_adapter():
        reference = peft_model(input_ids=ids).logits
        # the bare base is a different model: the test would see a reference that ignores the start
        bare = load_model(_tiny())(input_ids=ids).logits
    first_policy = _policy_logits(earlier, ids)
    assert torch.allclose(reference, first_policy, atol=1e-5)
    assert not torch.allclose(bare, first_policy, atol=1e-3)
    # evals of the second run load base + first adapter merged + second adapter
    with torch.no_grad():
        trained = peft_model(input_ids=ids).logits
    assert torch.allclose(_policy_logits(second, ids), trained, atol=1e-5)

    manifest = json.loads((second / "manifest.json").read_text())
    (link,) = manifest["start_from"]
    assert link["run"] == str(earlier.resolve()) and link["method"] == "dpo"
    assert len(link["adapter_sha256"]) == 64
    assert manifest["model"]["adapter"] == str(earlier.resolve())  # recorded absolute

    # a third run follows the chain back: first, then second, merged in that order
    chain_spec = _tiny(second)
    assert model_identity(chain_spec, 0)["adapters"] == [link["adapter_sha256"], _sha(second)]
    with torch.no_grad():
        third_base = load_model(chain_spec)(input_ids=ids).logits
    assert torch.allclose(third_base, trained, atol=1e-5)


def _sha(run_dir) -> str:
    import hashlib

    return hashlib.sha256((run_dir / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_cache_key_changes_with_the_start(earlier):
    assert "adapters" not in model_identity(_tiny(), 0)
    assert model_identity(_tiny(earlier), 0)["adapters"] == [_sha(earlier)]


def test_bad_starts_are_recipe_errors(earlier, tmp_path):
    def err(adapter, *extra) -> str:
        r = load_recipe(TINY, [f"output_dir={tmp_path / 'x'}", f"model.adapter={adapter}", *extra])
        with pytest.raises(RecipeError) as e:
            from align.train import run

            run(r)
        return str(e.value)

    assert "does not exist" in err(tmp_path / "nope")
    assert "seed" in err(earlier, "seed=7")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "recipe.yaml").write_text((earlier / "recipe.yaml").read_text())
    assert "no finished adapter" in err(unfinished)
    reward = tmp_path / "reward"
    reward.mkdir()
    (reward / "recipe.yaml").write_text(
        (earlier / "recipe.yaml").read_text().replace("method: dpo", "method: reward")
    )
    assert "reward model run" in err(reward)
    other = tmp_path / "other"
    other.mkdir()
    (other / "recipe.yaml").write_text(
        (earlier / "recipe.yaml").read_text().replace("tiny-smollm2", "smollm2-135m-instruct")
    )
    assert "trained on base model 'smollm2-135m-instruct'" in err(other)
    assert "own output_dir" in err(tmp_path / "x")
    assert "neither" in err(tmp_path)


def _card(run_dir) -> str:
    """The README.md `align push` would upload (no network)."""
    import yaml

    from align.hub.card import RunRecord
    from align.hub.files import plan_uploads

    read = lambda name: json.loads((run_dir / name).read_text())  # noqa: E731
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    record = RunRecord(run_dir, read("manifest.json"), read("summary.json"), recipe)
    uploads, _ = plan_uploads(record, "someone/second")
    return uploads[0].content.decode()


def test_card_says_what_to_load(earlier, tmp_path):
    """The pushed card merges the earlier adapter before loading this one, and names the chain."""
    second = tmp_path / "second"
    run_tiny(second, *QUICK, f"model.adapter={earlier}")
    card = _card(second)
    merge = 'base = PeftModel.from_pretrained(base, "EARLIER_ADAPTER_first").merge_and_unload()'
    assert merge in card
    assert card.index(merge) < card.index('model = PeftModel.from_pretrained(base, "someone/second")')
    assert f"| starts from | first (dpo, sha256 {_sha(earlier)[:12]}) (merged into the base) |" in card
    assert str(tmp_path) not in card  # local paths stay out of the card


def test_a_reward_run_must_share_the_start(earlier):
    """A reward adapter rides on the policy's base: both must have merged the same earlier run."""
    from align.models.reward_model import check_same_base

    started = {"method": "reward", "seed": 0, "model": {"name": "tiny-smollm2", "adapter": str(earlier)}}
    check_same_base(started, "tiny-smollm2", "r.yaml", "rm", "online", str(earlier), 0)  # same start
    with pytest.raises(
        RecipeError, match="r.yaml: online.reward_run: rm was trained on 'tiny-smollm2' started"
    ):
        check_same_base(started, "tiny-smollm2", "r.yaml", "rm", "online", None, 0)
    bare = {"method": "reward", "model": {"name": "tiny-smollm2"}}
    with pytest.raises(RecipeError, match="this run starts from"):
        check_same_base(bare, "tiny-smollm2", "r.yaml", "rm", "ppo", str(earlier), 0)


def test_continue_trains_the_earlier_adapter_with_a_frozen_copy_as_reference(earlier, tmp_path):
    """adapter_mode: continue: the earlier adapter's own weights keep training (so the result is one
    PEFT adapter on the bare base), and the reference is a frozen copy of it: the earlier model."""
    from peft import PeftModel

    from align.evals.policies import baseline_of
    from align.models.adapters import REFERENCE, use_adapter

    second = tmp_path / "second"
    summary = run_tiny(second, *QUICK, f"model.adapter={earlier}", "model.adapter_mode=continue")
    peft_model = summary["peft_model"]
    ids = torch.tensor([[1, 520, 3000, 41, 9, 2]])
    with torch.no_grad():
        with use_adapter(peft_model, None):
            reference = peft_model(input_ids=ids).logits
        trained = peft_model(input_ids=ids).logits
    first = _policy_logits(earlier, ids)
    assert torch.allclose(reference, first, atol=1e-5)  # the frozen copy, not the bare base
    assert not torch.allclose(trained, first, atol=1e-4)  # and the adapter did train on
    frozen = {n: p for n, p in peft_model.named_parameters() if f".{REFERENCE}." in n}
    assert frozen and not any(p.requires_grad for p in frozen.values())

    # the saved adapter is the whole model on the bare base; no copy of the reference is written
    assert not (second / "adapter" / REFERENCE).exists()
    bare = PeftModel.from_pretrained(load_model(_tiny()), second / "adapter")
    with torch.no_grad():
        assert torch.allclose(bare(input_ids=ids).logits, trained, atol=1e-5)
    ref = describe_run(second)
    assert torch.allclose(_policy_logits(second, ids), trained, atol=1e-5)  # evals load the same
    base_model, _ = load(baseline_of(ref))  # the eval baseline is the model the run started from
    with torch.no_grad():
        assert torch.allclose(base_model(input_ids=ids).logits, first, atol=1e-5)
    assert json.loads((second / "manifest.json").read_text())["start_mode"] == "continue"
    card = _card(second)
    assert "continued training the adapter of first (dpo" in card and "EARLIER_ADAPTER" not in card


def test_continue_needs_the_same_lora_shape_and_a_start(earlier, tmp_path):
    from align.train import run

    for extra, says in (
        ((f"model.adapter={earlier}", "lora.r=8"), "LoRA of r 4, alpha 8; the recipe says r 8"),
        ((), "needs model.adapter"),
    ):
        r = load_recipe(TINY, [f"output_dir={tmp_path / 'x'}", "model.adapter_mode=continue", *extra])
        with pytest.raises(RecipeError, match=says):
            run(r)
