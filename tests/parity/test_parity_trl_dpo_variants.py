"""Parity of the DPO-family loss variants with TRL 1.16's DPOTrainer, on the same tiny model, tokenizer
and batch as tests/parity/test_parity_trl_dpo.py (whose helpers this reuses: same per-sequence log-probs
in all three of our layouts, then loss and LoRA gradients):

* dpo_norm == `loss_type="sigmoid_norm"` (per-token-mean log-ratios, counts from the completion mask).
* apo_zero == `loss_type="apo_zero"`.
* rpo == `loss_type=["sigmoid", "sft"]`, `loss_weights=[1, α]` when the chosen completions have equal
  lengths. Documented difference otherwise: TRL's "sft" term is one mean over all chosen tokens of the
  micro-batch, -Σ_i π_c,i / Σ_i |c_i|; ours is per pair, mean_i(-π_c,i / |c_i|) (the RPO paper's
  length-normalised NLL, and independent of how a step is split into micro-batches). The full-batch test
  asserts TRL's value is exactly the token-weighted form of the same log-probs, and that the two differ.
"""

from __future__ import annotations

import pytest
import torch

from align.data.batches import PairBatch
from align.models.load import load_tokenizer
from align.objectives import get_objective
from align.recipe import ModelConfig
from tests.parity.test_parity_trl_dpo import (
    ATOL,
    TrlSide,
    _check_against_trl,
    _lora_grads,
    _make_trainer,
    _our_batches,
    _our_logps,
    _trl_loss_and_logps,
)

ALPHA = 0.5  # RPO's NLL weight (TRL's loss_weights[1])
RPO_TRL = dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, ALPHA])
EQUAL_CHOSEN = 3  # the first three examples' chosen completions are 4 tokens each (asserted)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def make_trl(tokenizer, tmp_path_factory):
    def make(loss_type, beta: float, n_batch: int | None = None, **config) -> TrlSide:
        return _make_trainer(
            tokenizer, tmp_path_factory.mktemp("trl"), loss_type, beta, 0.0, n_batch, **config
        )

    return make


def _full_parity(side, tokenizer, objective: str, kwargs: dict, beta: float) -> None:
    model = side.trainer.model
    model.zero_grad(set_to_none=True)
    trl_out = _trl_loss_and_logps(side)
    trl_out[0].backward()
    trl_grads = _lora_grads(model)
    assert (trl_out[1] - trl_out[2]).abs().max() > 1e-2, (
        "policy == reference: the comparison would be vacuous"
    )
    for layout, batch in _our_batches(side, tokenizer.pad_token_id).items():
        _check_against_trl(side, batch, objective, kwargs, beta, trl_out, trl_grads, layout)


@pytest.mark.parametrize(
    ("loss_type", "objective", "beta"), [("sigmoid_norm", "dpo_norm", 5.0), ("apo_zero", "apo_zero", 0.1)]
)
def test_variant_logps_loss_and_grads_match_trl(make_trl, tokenizer, loss_type, objective, beta) -> None:
    """β = 5 for dpo_norm is Tulu 3's value (mean margins are ~|c| times smaller than summed ones)."""
    _full_parity(make_trl(loss_type, beta), tokenizer, objective, {}, beta)


def test_rpo_matches_trl_sigmoid_plus_sft_on_equal_chosen_lengths(make_trl, tokenizer) -> None:
    side = make_trl(RPO_TRL["loss_type"], 0.1, n_batch=EQUAL_CHOSEN, loss_weights=RPO_TRL["loss_weights"])
    chosen_lengths = side.batch["completion_mask"][:EQUAL_CHOSEN].sum(dim=1)
    assert chosen_lengths.unique().numel() == 1, "the per-pair and token-weighted NLL must coincide here"
    _full_parity(side, tokenizer, "rpo", {"alpha": ALPHA}, 0.1)


def test_rpo_nll_normalisation_differs_from_trl_as_documented(make_trl, tokenizer) -> None:
    """All 7 examples (chosen lengths 2 to 5 tokens): TRL == DPO + α·(token-weighted NLL) of our log-probs;
    ours == DPO + α·(per-pair NLL). A random tiny model gives every token nearly the same NLL (~10.8
    nats), so the forms differ by little (measured 1.6e-4 in the loss), but by over 10x the tolerance:
    each assert_close below would fail for the other form."""
    side = make_trl(RPO_TRL["loss_type"], 0.1, loss_weights=RPO_TRL["loss_weights"])
    with torch.no_grad():
        trl_loss, _, _ = _trl_loss_and_logps(side)
        policy, reference = _our_logps(side, _our_batches(side, tokenizer.pad_token_id)["packed"])
    pol, ref = PairBatch.split(policy), PairBatch.split(reference)
    dpo = get_objective("dpo").fn(pol, ref, 0.1).loss.mean()
    token_weighted = -pol.chosen.sum.sum() / pol.chosen.n_tokens.sum()
    per_pair = (-pol.chosen.sum / pol.chosen.n_tokens).mean()
    torch.testing.assert_close(trl_loss, dpo + ALPHA * token_weighted, atol=ATOL, rtol=0)
    ours = get_objective("rpo").fn(pol, ref, 0.1, alpha=ALPHA).loss.mean()
    torch.testing.assert_close(ours, dpo + ALPHA * per_pair, atol=ATOL, rtol=0)
    assert ALPHA * abs(float(per_pair - token_weighted)) > 10 * ATOL
