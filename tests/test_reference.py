"""Reference scoring is deterministic, and the precomputed table's cache key covers its inputs."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch
from model_helpers import nontrivial_lora, random_pairs

from align.models import load as models
from align.models import reference
from align.models.load import tiny_model
from align.models.logprobs import SequenceScorer
from align.models.reference import AdapterOffReference, reference_cache_key
from align.recipe import ModelConfig


def test_adapter_off_reference_ignores_base_dropout_in_train_mode():
    """A base with attention dropout (not disabled): the reference still gives one answer."""
    batch = random_pairs()
    model = nontrivial_lora(tiny_model(seed=0, attention_dropout=0.1))
    scorer = SequenceScorer(model).train()
    with torch.no_grad(), model.disable_adapter():
        noisy = [scorer(**batch.model_inputs()).sum for _ in range(2)]
        exact = SequenceScorer(model).eval()(**batch.model_inputs()).sum
    assert not torch.equal(*noisy)  # dropout is live in train mode

    ref = AdapterOffReference(scorer, model)
    first, second = ref(batch).sum, ref(batch).sum
    assert torch.equal(first, second) and torch.equal(first, exact)
    assert scorer.training  # the training mode is restored


# -- reference_cache_key ------------------------------------------------------------------------

TOKENIZE = {"max_length": 512, "max_prompt_length": 256, "chat_template": "auto"}


@pytest.fixture
def local_model(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama", "rope_theta": 10000.0}')
    (d / "model.safetensors").write_bytes(b"\0" * 64)
    (d / "README.md").write_text("not part of the key")
    return d


def key(spec: ModelConfig, **changes) -> str:
    args = dict(
        model_spec=spec, seed=0, data_fingerprint="0123456789abcdef", mixed_precision="no", tokenize=TOKENIZE
    )
    return reference_cache_key(**{**args, **changes})


def test_cache_key_changes_with_each_ingredient(local_model, monkeypatch):
    spec = ModelConfig(name=str(local_model))
    base = key(spec)
    assert base == key(spec) and base.startswith("0123456789abcdef-")
    variants = {
        "dtype": key(replace(spec, dtype="bfloat16")),
        "attn_implementation": key(replace(spec, attn_implementation="eager")),
        "revision": key(replace(spec, revision="v2")),
        "trust_remote_code": key(replace(spec, trust_remote_code=True)),
        "data": key(spec, data_fingerprint="fedcba9876543210"),
        "mixed_precision": key(spec, mixed_precision="bf16"),
        "tokenize": key(spec, tokenize={**TOKENIZE, "max_prompt_length": 128}),
        "extra": key(spec, chunk_tokens=7),
    }
    (local_model / "config.json").write_text('{"model_type": "llama", "rope_theta": 50000.0}')  # same size
    variants["config.json"] = key(spec)
    (local_model / "config.json").write_text('{"model_type": "llama", "rope_theta": 10000.0}')
    assert key(spec) == base
    st = local_model / "model.safetensors"
    os.utime(st, (st.stat().st_atime, st.stat().st_mtime + 10))
    variants["weights mtime"] = key(spec)
    st.write_bytes(b"\0" * 65)
    variants["weights size"] = key(spec)
    real = reference.metadata.version
    monkeypatch.setattr(reference.metadata, "version", lambda n: "9.9" if n == "align" else real(n))
    variants["align version"] = key(spec)
    keys = list(variants.values())
    assert base not in keys and len(set(keys)) == len(keys), variants


def test_cache_key_ignores_what_does_not_change_the_numbers(local_model):
    spec = ModelConfig(name=str(local_model))
    base = key(spec)
    assert key(spec, seed=1) == base  # the weights come from the files, not the seed
    assert key(replace(spec, gradient_checkpointing=True, disable_dropout=False)) == base
    (local_model / "README.md").write_text("edited")
    assert key(spec) == base


def test_cache_key_of_the_tiny_model_covers_seed_and_config(monkeypatch):
    spec = ModelConfig(name=models.TINY_NAME)
    base = key(spec)
    assert key(spec, seed=1) != base
    real = models.tiny_config
    monkeypatch.setattr(models, "tiny_config", lambda **kw: real(hidden_size=32, **kw))
    assert key(spec) != base


def test_cache_key_of_a_hub_id_covers_the_cached_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--some-org--some-model"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text('{"model_type": "llama"}')
    (repo / "refs").mkdir()
    spec = ModelConfig(name="some-org/some-model")
    (repo / "refs" / "main").write_text("a" * 40)
    first = key(spec)
    assert key(spec) == first
    (repo / "refs" / "main").write_text("b" * 40)  # `main` moved to a new commit
    assert key(spec) != first
    assert models.model_identity(spec, 0)["commit"] == "b" * 40
