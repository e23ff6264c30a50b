"""`SequenceScorer.verify`: the fast paths are checked against the model's own logits, so a model
that post-processes logits under a name we do not know (Granite's `logits_scaling`) falls back."""

from __future__ import annotations

import logging

import pytest
import torch
from model_helpers import lora_grads, naive_logps, nontrivial_lora, random_pairs, tiny_causal_lm

from align.models.load import tiny_model
from align.models.logprobs import SequenceScorer
from align.util.ranks import any_rank


@pytest.fixture
def batch():
    return random_pairs(n=4)


def test_logit_scaling_model_falls_back_to_the_stock_forward(batch, caplog):
    model = nontrivial_lora(tiny_causal_lm("GraniteConfig", logits_scaling=8.0)).eval()
    want = naive_logps(model, batch)
    scorer = SequenceScorer(model)
    assert scorer.fast and scorer.layout == "packed"  # the name-based pre-filter does not know Granite
    with torch.no_grad():
        before = scorer(**batch.model_inputs()).sum
    assert (before - want).abs().max() > 0.5  # the fast path really is wrong here

    with caplog.at_level(logging.WARNING, logger="align.models.logprobs"):
        assert scorer.verify(batch.model_inputs()) is False
    assert not scorer.fast and scorer.layout == "padded"
    assert len(caplog.records) == 1 and "stock forward" in caplog.text

    got = scorer(**batch.model_inputs())
    torch.testing.assert_close(got.sum.detach(), want.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(lora_grads(model, got.sum), lora_grads(model, want), rtol=1e-4, atol=1e-4)


def test_llama_keeps_the_fast_paths_and_its_mode(batch, caplog):
    scorer = SequenceScorer(nontrivial_lora(tiny_model(seed=0))).train()
    with caplog.at_level(logging.WARNING, logger="align.models.logprobs"):
        assert scorer.verify(batch.model_inputs()) is True
    assert scorer.fast and scorer.layout == "packed" and not caplog.records
    assert scorer.training  # verification ran in eval mode and restored the mode


def test_verify_through_a_ddp_wrapper(batch, tmp_path):
    """`via`: forwards go through the prepared wrapper; the decision is all-reduced (gloo, 1 rank)."""
    from torch.nn.parallel import DistributedDataParallel

    scorer = SequenceScorer(nontrivial_lora(tiny_causal_lm("GraniteConfig", logits_scaling=8.0)))
    store = tmp_path / "store"
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(scorer)
        assert scorer.verify(batch.model_inputs(), via=wrapped) is False
        assert not scorer.fast and wrapped.training
    finally:
        torch.distributed.destroy_process_group()


def _agree_worker(rank: int, store: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    flags = [True, rank == 0]  # rank 1 saw the second path disagree, rank 0 did not
    decision = [not bad for bad in any_rank(torch.tensor([not f for f in flags]))]
    torch.save(decision, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def test_all_ranks_take_the_same_decision(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_agree_worker, args=(str(tmp_path / "store"), str(tmp_path / "flags")), nprocs=2)
    assert [torch.load(tmp_path / f"flags.{r}") for r in (0, 1)] == [[True, False], [True, False]]
