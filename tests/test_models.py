"""Model resolution: the embedded default, the tiny test model, and offline failures."""

from __future__ import annotations

import pytest
import torch

from align.embedded import GGUF_SHA256, _sha256, cache_dir, embedded_model_dir
from align.errors import ModelError
from align.models import load_model, load_tokenizer, tiny_model
from align.recipe import ModelConfig


def test_embedded_gguf_checksum_and_cached_safetensors():
    out = embedded_model_dir()  # fetched and converted by `make` set-up; reused here
    assert (out / "model.safetensors").exists()
    assert not list(out.glob("*.bin")), "weights must be safetensors only"
    gguf = cache_dir() / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert _sha256(gguf) == GGUF_SHA256


def test_embedded_model_answers_a_factual_question():
    spec = ModelConfig("smollm2-135m-instruct")
    tok, model = load_tokenizer(spec), load_model(spec)
    assert tok.eos_token == tok.pad_token == "<|im_end|>"  # the trap the masks must avoid
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1]:])


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
    assert "HF_HUB_OFFLINE=1 is set" in msg  # said at once, no retries (align/offline.py)
    assert "smollm2-135m-instruct" in msg and "tiny-smollm2" in msg and "local directory" in msg


def test_missing_local_dir_is_a_model_error():
    with pytest.raises(ModelError, match="does not exist"):
        load_model(ModelConfig("./definitely/not/here"))
