"""SFT: hand-computed per-token NLL, token-level (not per-sequence) normalisation, the step group."""

from __future__ import annotations

import math

import torch

from align.objectives import SFT_OBJECTIVE, SeqLogps, get_objective, sft_loss


def seq(sums: list[float], n: list[float], grad: bool = False) -> SeqLogps:
    s = torch.tensor(sums, dtype=torch.float64, requires_grad=grad)
    return SeqLogps(sum=s, n_tokens=torch.tensor(n, dtype=torch.float64))


def test_docstring_example():
    """Sums -6 (3 tokens) and -2 (1 token): T = 4, L = 8 / 4 = 2; loss_i = nll_i · 2 / 4 = [3, 1]."""
    out = sft_loss(seq([-6.0, -2.0], [3, 1]))
    torch.testing.assert_close(out.loss, torch.tensor([3.0, 1.0], dtype=torch.float64))
    assert float(out.loss.mean()) == 2.0
    assert out.metrics["count/loss_tokens"].tolist() == [3.0, 1.0]
    assert out.metrics["count/nll"].tolist() == [6.0, 2.0]
    assert out.metrics["logp/mean"].tolist() == [-2.0, -2.0]


def test_token_level_not_mean_of_sequence_means():
    """-6 over 2 tokens and -2 over 1: per token 8 / 3 = 2.6667; the mean of the per-sequence
    means, (3 + 2) / 2 = 2.5, is what this objective must NOT compute."""
    out = sft_loss(seq([-6.0, -2.0], [2, 1]))
    assert math.isclose(float(out.loss.mean()), 8 / 3, abs_tol=1e-12)
    assert not math.isclose(float(out.loss.mean()), 2.5, abs_tol=1e-3)


def test_step_group_normalises_over_all_micro_batches():
    """Two micro-batches of one step, E = 3 examples, T = 3 + 1 + 4 = 8 tokens, NLL 6 + 2 + 4 = 12:
    Σ_i loss_i / E over both must be 12 / 8 = 1.5 (the loop's backward divides by E)."""
    a = sft_loss(seq([-6.0, -2.0], [3, 1]), examples=3, tokens=8)
    b = sft_loss(seq([-4.0], [4]), examples=3, tokens=8)
    total = (a.loss.sum() + b.loss.sum()) / 3
    assert math.isclose(float(total), 1.5, abs_tol=1e-12)
    # each micro-batch alone would be 8 / 4 = 2 and 4 / 4 = 1: averaging those gives 1.5 only by luck here
    torch.testing.assert_close(a.loss, torch.tensor([6 * 3 / 8, 2 * 3 / 8], dtype=torch.float64))


def test_gradient_is_minus_one_over_T_per_summed_logprob():
    """dL/d sum_i = -1/T for every sequence (every token counts the same): T = 5 → -0.2."""
    policy = seq([-3.0, -1.5], [4, 1], grad=True)
    out = sft_loss(policy)
    out.loss.mean().backward()
    torch.testing.assert_close(policy.sum.grad, torch.tensor([-0.2, -0.2], dtype=torch.float64))


def test_no_loss_tokens_gives_zero_not_nan():
    out = sft_loss(seq([0.0], [0]))
    assert out.loss.tolist() == [0.0] and out.metrics["logp/mean"].tolist() == [0.0]


def test_registered():
    spec = get_objective("sft")
    assert spec is SFT_OBJECTIVE and spec.kind == "sft" and spec.fn is sft_loss
    assert "per-token mean" in spec.normalisation and spec.reference
