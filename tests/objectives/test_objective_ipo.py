"""IPO: the zero of the loss and the mean-vs-sum normalisation difference, hand-computed."""

from __future__ import annotations

import pytest
import torch

from align.objectives import ipo_loss

F64 = torch.float64


@pytest.mark.parametrize("normalize", ["mean", "sum"])
def test_ipo_zero_at_target(pairs, normalize):
    """β = 0.5 → target 1/(2β) = 1.
    π_c=-8, ref_c=-12, n_c=4 → chosen log-ratio 4 (per token 1); π_r=ref_r=-5 → rejected log-ratio 0.
    That gives h = 1 under "mean" (4/4 - 0/2). For "sum" use π_c=-11 so the summed ratio is 1."""
    pi_c = -8.0 if normalize == "mean" else -11.0
    policy, reference = pairs(pi_c=[pi_c], ref_c=[-12.0], pi_r=[-5.0], ref_r=[-5.0], n_c=[4.0], n_r=[2.0])
    out = ipo_loss(policy, reference, beta=0.5, normalize=normalize)
    torch.testing.assert_close(out.loss, torch.zeros(1, dtype=F64))


def test_ipo_mean_vs_sum_hand_computed(pairs):
    """β = 0.5 (target 1). π_c=-8, ref_c=-12, n_c=4 → log-ratio 4; π_r=-9, ref_r=-7, n_r=2 → log-ratio -2.
    sum:  h = 4 - (-2) = 6,          loss = (6 - 1)² = 25.
    mean: h = 4/4 - (-2/2) = 1 + 1 = 2, loss = (2 - 1)² = 1.
    Same β, different token counts → a 25× different loss."""
    policy, reference = pairs(pi_c=[-8.0], ref_c=[-12.0], pi_r=[-9.0], ref_r=[-7.0], n_c=[4.0], n_r=[2.0])
    torch.testing.assert_close(ipo_loss(policy, reference, 0.5, "sum").loss, torch.tensor([25.0], dtype=F64))
    torch.testing.assert_close(ipo_loss(policy, reference, 0.5, "mean").loss, torch.tensor([1.0], dtype=F64))


def test_ipo_default_is_mean(pairs):
    policy, reference = pairs(pi_c=[-8.0], ref_c=[-12.0], pi_r=[-9.0], ref_r=[-7.0], n_c=[4.0], n_r=[2.0])
    torch.testing.assert_close(
        ipo_loss(policy, reference, 0.5).loss, ipo_loss(policy, reference, 0.5, "mean").loss
    )


def test_ipo_penalises_overshoot(pairs):
    """Unlike DPO, IPO pulls an over-large margin back: β=0.5, h_sum = 3 > 1 → ∂loss/∂π_c = 2(3-1) = 4 > 0."""
    policy, reference = pairs(pi_c=[0.0], ref_c=[-3.0], pi_r=[0.0], ref_r=[0.0], grad=True)
    ipo_loss(policy, reference, 0.5, "sum").loss.sum().backward()
    torch.testing.assert_close(policy.chosen.sum.grad, torch.tensor([4.0], dtype=F64))


def test_ipo_metrics_are_sum_based(pairs):
    """Metrics ignore `normalize`: rewards/chosen = 0.5·4 = 2, rewards/rejected = 0.5·(-2) = -1, margin 3."""
    policy, reference = pairs(pi_c=[-8.0], ref_c=[-12.0], pi_r=[-9.0], ref_r=[-7.0], n_c=[4.0], n_r=[2.0])
    for normalize in ("mean", "sum"):
        m = ipo_loss(policy, reference, 0.5, normalize).metrics
        torch.testing.assert_close(m["rewards/chosen"], torch.tensor([2.0], dtype=F64))
        torch.testing.assert_close(m["rewards/rejected"], torch.tensor([-1.0], dtype=F64))
        torch.testing.assert_close(m["rewards/margins"], torch.tensor([3.0], dtype=F64))
        torch.testing.assert_close(m["rewards/accuracies"], torch.tensor([1.0]))


def test_ipo_invalid_normalize_raises(pairs):
    with pytest.raises(ValueError, match="normalize"):
        ipo_loss(*pairs(pi_c=[-1.0], ref_c=[-1.0], pi_r=[-1.0], ref_r=[-1.0]), 0.5, "token")  # type: ignore[arg-type]


def test_ipo_nonpositive_beta_raises(pairs):
    with pytest.raises(ValueError, match="beta"):
        ipo_loss(*pairs(pi_c=[-1.0], ref_c=[-1.0], pi_r=[-1.0], ref_r=[-1.0]), 0.0)
