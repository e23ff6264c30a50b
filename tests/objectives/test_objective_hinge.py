"""Hinge (SLiC/RSO): relu(1 - βh) on summed log-ratios, hand-computed."""

from __future__ import annotations

import torch

from align.objectives import hinge_loss

F64 = torch.float64


def test_hinge_hand_computed(pairs):
    """β = 0.1, three pairs (π_c, ref_c, π_r, ref_r) → h:
    (-10, -12, -15, -14) → h = 2 + 1 = 3   → relu(1 - 0.3) = 0.7
    (  0, -20,   0,   0) → h = 20          → relu(1 - 2.0) = 0   (margin beyond 1/β: no loss)
    ( -6,  -4,  -5,  -8) → h = -2 - 3 = -5 → relu(1 + 0.5) = 1.5"""
    policy, reference = pairs(
        pi_c=[-10.0, 0.0, -6.0], ref_c=[-12.0, -20.0, -4.0], pi_r=[-15.0, 0.0, -5.0], ref_r=[-14.0, 0.0, -8.0]
    )
    out = hinge_loss(policy, reference, beta=0.1)
    torch.testing.assert_close(out.loss, torch.tensor([0.7, 0.0, 1.5], dtype=F64))


def test_hinge_gradient(pairs):
    """Inside the margin ∂loss/∂π_c = -β = -0.1; beyond it the gradient is exactly 0."""
    policy, reference = pairs(
        pi_c=[-10.0, 0.0], ref_c=[-12.0, -20.0], pi_r=[-15.0, 0.0], ref_r=[-14.0, 0.0], grad=True
    )
    hinge_loss(policy, reference, beta=0.1).loss.sum().backward()
    torch.testing.assert_close(policy.chosen.sum.grad, torch.tensor([-0.1, 0.0], dtype=F64))


def test_hinge_metrics(pairs):
    """Same shared metrics as DPO: rewards/chosen = 0.1·2 = 0.2, rewards/rejected = 0.1·(-1) = -0.1."""
    m = hinge_loss(*pairs(pi_c=[-10.0], ref_c=[-12.0], pi_r=[-15.0], ref_r=[-14.0]), beta=0.1).metrics
    torch.testing.assert_close(m["rewards/chosen"], torch.tensor([0.2], dtype=F64))
    torch.testing.assert_close(m["rewards/rejected"], torch.tensor([-0.1], dtype=F64))
    torch.testing.assert_close(m["rewards/margins"], torch.tensor([0.3], dtype=F64))
