"""The log-prob path against the plain full-vocabulary computation, on the real tokenizer."""

from __future__ import annotations

import pytest
import torch
from model_helpers import lora_grads, naive_logps, nontrivial_lora

from align.data.batches import collate_pairs
from align.data.sources import load_pairs
from align.data.tokenize import TokenizeConfig, Tokenizer
from align.models.load import load_tokenizer, tiny_model
from align.models.logprobs import SequenceScorer
from align.recipe import ModelConfig

BUNDLED = "align/data/bundled/align_prefs_v1.jsonl"


@pytest.fixture(scope="module")
def batch():
    tok = load_tokenizer(ModelConfig("smollm2-135m-instruct"))
    records, _ = load_pairs(BUNDLED)
    tk = Tokenizer(tok, TokenizeConfig(max_length=128, max_prompt_length=96))
    examples = []
    for i, r in enumerate(records[:6]):
        ex = tk.pair(r)
        ex["index"] = i
        examples.append(ex)
    return collate_pairs(examples, tok.pad_token_id)


@pytest.fixture(scope="module")
def setup(batch):
    return nontrivial_lora(tiny_model(seed=0)).eval(), batch


LAYOUTS = ["padded", "shared", "packed"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("chunk", [1024, 7])
def test_scorer_matches_full_vocab_oracle(setup, layout, chunk):
    model, batch = setup
    want = naive_logps(model, batch)
    g_want = lora_grads(model, want)
    got = SequenceScorer(model, chunk_tokens=chunk, layout=layout)(**batch.model_inputs())
    g_got = lora_grads(model, got.sum)
    torch.testing.assert_close(got.sum, want.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-4)  # float32 sums of ~1e3 terms
    assert got.n_tokens.tolist() == batch.loss_mask.sum(-1).float().tolist()


def test_token_counts_ignore_pad_equal_eos(setup):
    """pad == eos: counts come from lengths, so each completion's final EOS is counted."""
    _, batch = setup
    ends_with_eos = batch.input_ids.gather(1, (batch.attention_mask.sum(-1) - 1)[:, None]).squeeze(-1)
    assert (ends_with_eos == 2).all()  # <|im_end|>
    assert (batch.loss_mask.sum(-1) == batch.completion_len).all()


def _train_step(batch, layout: str, checkpointing: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-mode log-probs and LoRA grads of a fresh (identical) tiny model + adapter."""
    model = nontrivial_lora(tiny_model(seed=0))
    if checkpointing:
        base = model.get_base_model()
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules()) == checkpointing
    model.train()
    scorer = SequenceScorer(model, layout=layout, gradient_checkpointing=checkpointing)
    got = scorer(**batch.model_inputs()).sum
    return got.detach(), lora_grads(model, got)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradient_checkpointing_gives_the_same_logps_and_grads(batch, layout, monkeypatch):
    """Checkpointed layers drop the KV cache under grad: the scorer must know (an explicit flag),
    not probe a version-specific attribute; removing transformers 5's `is_activation_checkpointing`
    (absent on 4.x, where the shared-prompt path then crashed) must change nothing."""
    from transformers import PreTrainedModel

    plain = _train_step(batch, layout, checkpointing=False)
    monkeypatch.delattr(PreTrainedModel, "is_activation_checkpointing")
    ckpt = _train_step(batch, layout, checkpointing=True)
    torch.testing.assert_close(ckpt[0], plain[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ckpt[1], plain[1], rtol=1e-5, atol=1e-5)
    assert plain[1].abs().max() > 1e-3  # the grads compared are not all ~0


def test_packed_layout_with_eager_attention_matches_the_oracle():
    """Eager attention adds the mask to the scores: the packed path must hand it an additive mask."""
    from model_helpers import random_pairs, tiny_causal_lm

    base = tiny_causal_lm("LlamaConfig")
    base.set_attn_implementation("eager")
    model = nontrivial_lora(base).eval()
    batch = random_pairs(n=5)
    want = naive_logps(model, batch)
    scorer = SequenceScorer(model, layout="packed")
    assert scorer.attn == "eager" and scorer.layout == "packed"
    got = scorer(**batch.model_inputs())
    torch.testing.assert_close(got.sum, want.detach(), rtol=1e-5, atol=1e-4)


def test_layout_resolution():
    from align.models.logprobs import resolve_layout
    from align.util.errors import RecipeError

    assert resolve_layout("auto", "sdpa", False) == "packed"
    assert resolve_layout("auto", None, True) == "packed"  # transformers' default is sdpa
    assert resolve_layout("auto", "flash_attention_2", False) == "shared"
    assert resolve_layout("auto", "flash_attention_2", True) == "padded"  # checkpointing drops the cache
    assert resolve_layout("shared", "sdpa", False) == "shared"
    with pytest.raises(RecipeError, match="train.layout: packed needs"):
        resolve_layout("packed", "flash_attention_2", False)
