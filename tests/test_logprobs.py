"""The log-prob path against the plain full-vocabulary computation, on the real tokenizer."""

from __future__ import annotations

import pytest
import torch

from align.data.batches import collate_pairs
from align.data.sources import load_pairs
from align.data.tokenize import TokenizeConfig, Tokenizer
from align.logprobs import SequenceScorer
from align.models import add_lora, load_tokenizer, tiny_model
from align.recipe import LoraConfig, ModelConfig

BUNDLED = "align/data/bundled/align_prefs_v1.jsonl"


@pytest.fixture(scope="module")
def setup():
    tok = load_tokenizer(ModelConfig("smollm2-135m-instruct"))
    records, _ = load_pairs(BUNDLED)
    tk = Tokenizer(tok, TokenizeConfig(max_length=128, max_prompt_length=96))
    examples = []
    for i, r in enumerate(records[:6]):
        ex = tk.pair(r)
        ex["index"] = i
        examples.append(ex)
    batch = collate_pairs(examples, tok.pad_token_id)
    torch.manual_seed(0)
    model = add_lora(tiny_model(seed=0), LoraConfig(r=4, dropout=0.0))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # a non-trivial adapter
            torch.nn.init.normal_(p, std=0.05)
    return model.eval(), batch


def naive_logps(model, batch) -> torch.Tensor:
    """Oracle: full logits at every position, log_softmax, gather, mask, sum."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
    lp = logits.log_softmax(-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return (lp * batch.loss_mask[:, 1:]).sum(-1)


def grads_of(model, value: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    value.sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("share_prompt,chunk", [(False, 1024), (True, 1024), (False, 7), (True, 7)])
def test_scorer_matches_full_vocab_oracle(setup, share_prompt, chunk):
    model, batch = setup
    want = naive_logps(model, batch)
    g_want = grads_of(model, want)
    got = SequenceScorer(model, chunk_tokens=chunk, share_prompt=share_prompt)(**batch.model_inputs())
    g_got = grads_of(model, got.sum)
    torch.testing.assert_close(got.sum, want.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-4)  # float32 sums of ~1e3 terms
    assert got.n_tokens.tolist() == batch.loss_mask.sum(-1).float().tolist()


def test_token_counts_ignore_pad_equal_eos(setup):
    """pad == eos: counts come from lengths, so each completion's final EOS is counted."""
    _, batch = setup
    ends_with_eos = batch.input_ids.gather(1, (batch.attention_mask.sum(-1) - 1)[:, None]).squeeze(-1)
    assert (ends_with_eos == 2).all()  # <|im_end|>
    assert (batch.loss_mask.sum(-1) == batch.completion_len).all()
