"""Model resolution: the embedded default, the tiny test model, and offline failures."""

from __future__ import annotations

import pytest
import torch
from model_helpers import nontrivial_lora, random_pairs, tiny_causal_lm

from align.models.embedded import GGUF_SHA256, embedded_model_dir
from align.models.load import disable_dropout, load_model, load_tokenizer, tiny_model
from align.models.logprobs import SequenceScorer
from align.recipe import ModelConfig
from align.util.errors import ModelError
from align.util.files import cache_dir, file_sha256


def test_embedded_gguf_checksum_and_cached_safetensors():
    out = embedded_model_dir()  # fetched and converted by `make` set-up; reused here
    assert (out / "model.safetensors").exists()
    assert not list(out.glob("*.bin")), "weights must be safetensors only"
    gguf = cache_dir() / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert file_sha256(gguf) == GGUF_SHA256


def test_embedded_model_answers_a_factual_question():
    spec = ModelConfig("smollm2-135m-instruct")
    tok, model = load_tokenizer(spec), load_model(spec)
    assert tok.eos_token == tok.pad_token == "<|im_end|>"  # the trap the masks must avoid
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])


def test_tiny_model_is_seeded():
    a, b, c = tiny_model(seed=0), tiny_model(seed=0), tiny_model(seed=1)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_unreachable_hub_id_names_offline_alternatives(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import time, so also patch the constant
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as e:
        load_tokenizer(ModelConfig("some-org/not-a-local-model"))
    msg = str(e.value)
    assert "HF_HUB_OFFLINE=1 is set" in msg  # said at once, no retries (align/util/offline.py)
    assert "smollm2-135m-instruct" in msg and "tiny-smollm2" in msg and "local directory" in msg


def test_missing_local_dir_is_a_model_error():
    with pytest.raises(ModelError, match="does not exist"):
        load_model(ModelConfig("./definitely/not/here"))


# -- disable_dropout ----------------------------------------------------------------------------


def _with_dropout(arch: str):
    """llama: functional attention dropout (a module attribute); phi3 adds nn.Dropout residuals."""
    if arch == "llama":
        return tiny_model(seed=0, attention_dropout=0.1)
    return tiny_causal_lm("Phi3Config", attention_dropout=0.1, resid_pdrop=0.1, embd_pdrop=0.1)


def _twice(scorer, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return tuple(scorer(**batch.model_inputs()).sum for _ in range(2))


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_disable_dropout_leaves_lora_dropout(arch):
    batch = random_pairs()
    noisy = SequenceScorer(_with_dropout(arch)).train()
    a, b = _twice(noisy, batch)
    assert not torch.equal(a, b)  # the base's dropout really is active in train mode

    base = _with_dropout(arch)
    changed = disable_dropout(base)
    assert any("attention_dropout" in c for c in changed)
    assert disable_dropout(base) == []  # nothing left
    model = nontrivial_lora(base, dropout=0.5)
    scorer = SequenceScorer(model).train()
    with model.disable_adapter():
        a, b = _twice(scorer, batch)
    assert torch.equal(a, b)  # base forward in train mode: deterministic
    a, b = _twice(scorer, batch)
    assert not torch.allclose(a, b)  # the adapter's own dropout (0.5) still applies
    lora_p = {m.p for n, m in model.named_modules() if n.endswith("lora_dropout.default")}
    assert lora_p == {0.5}


def test_disable_dropout_reaches_configs_and_sub_configs():
    from transformers import Qwen2Config

    cfg = Qwen2Config(attention_dropout=0.2)
    cfg.text_config = Qwen2Config(attention_dropout=0.3)  # multimodal configs nest the LM's config
    holder = torch.nn.Module()
    holder.config = cfg
    holder.drop = torch.nn.Dropout(0.4)
    holder.encoder_layerdrop = 0.1
    changed = disable_dropout(holder)
    assert sorted(changed) == [
        "config.attention_dropout",
        "config.text_config.attention_dropout",
        "drop.p",
        "encoder_layerdrop",
    ]
    assert cfg.attention_dropout == cfg.text_config.attention_dropout == holder.drop.p == 0.0
