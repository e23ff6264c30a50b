"""KTO: hand-computed values (the module docstring's arithmetic), the reference point, one-class rows."""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives import SeqLogps
from align.objectives.kto import kl_sums, kto_loss, reference_point


def seq(*sums: float, grad: bool = False) -> SeqLogps:
    s = torch.tensor(sums, dtype=torch.float64, requires_grad=grad)
    return SeqLogps(sum=s, n_tokens=torch.ones_like(s.detach()))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_docstring_example():
    """β = 0.1, z0 = 0.5, λ_D = 1, λ_U = 1.5; desirable r = 2.5, undesirable r = -1.5."""
    policy, reference = seq(-10.0, -20.0), seq(-12.5, -18.5)  # r = 2.5, -1.5
    out = kto_loss(
        policy, reference, torch.tensor([True, False]), torch.tensor(0.5, dtype=torch.float64), 0.1, 1.0, 1.5
    )
    want = torch.tensor([0.450166, 0.675249], dtype=torch.float64)
    torch.testing.assert_close(out.loss, want, atol=1e-6, rtol=0)
    assert out.loss[0] == pytest.approx(1 - sigmoid(0.2), abs=1e-12)
    assert out.loss[1] == pytest.approx(1.5 * (1 - sigmoid(0.2)), abs=1e-12)
    torch.testing.assert_close(out.metrics["rewards/desirable"][0], torch.tensor(0.25, dtype=torch.float64))
    torch.testing.assert_close(
        out.metrics["rewards/undesirable"][1], torch.tensor(-0.15, dtype=torch.float64)
    )
    assert math.isnan(out.metrics["rewards/desirable"][1]) and math.isnan(
        out.metrics["rewards/undesirable"][0]
    )
    assert out.metrics["count/desirable"].tolist() == [1.0, 0.0]


def test_at_the_reference_point_the_loss_is_half_the_weight():
    """r = z0 → 1 - σ(0) = 0.5 for either class, times its weight."""
    out = kto_loss(
        seq(-3.0, -3.0), seq(-4.0, -4.0), torch.tensor([True, False]), torch.tensor(1.0), 2.0, 0.7, 1.3
    )
    torch.testing.assert_close(out.loss.float(), torch.tensor([0.35, 0.65]))


def test_gradients_push_desirable_up_and_undesirable_down():
    policy = seq(-5.0, -5.0, grad=True)
    out = kto_loss(policy, seq(-5.0, -5.0), torch.tensor([True, False]), torch.tensor(0.0), 0.5)
    out.loss.sum().backward()
    # d/dr [1 - σ(β r)] = -β σ(1-σ) at r = 0: -0.5·0.25 = -0.125; undesirable: +0.125
    torch.testing.assert_close(policy.sum.grad, torch.tensor([-0.125, 0.125], dtype=torch.float64))


def test_z0_is_detached():
    z0 = torch.tensor(0.3, requires_grad=True)
    out = kto_loss(seq(-1.0, grad=True), seq(-1.5), torch.tensor([True]), z0, 0.1)
    out.loss.sum().backward()
    assert z0.grad is None


def test_one_class_batches_are_finite():
    for labels in ([True, True, True], [False, False, False]):
        out = kto_loss(
            seq(-1.0, -2.0, -3.0), seq(-1.5, -1.0, -3.5), torch.tensor(labels), torch.tensor(0.2), 0.1
        )
        assert torch.isfinite(out.loss).all()


def test_reference_point_is_a_global_mean_clamped_at_zero():
    """Two ranks: rank A has 3 mismatched pairs with Δ = 1, 1, 1; rank B has 1 with Δ = -5.
    Global mean = (3 - 5) / 4 = -0.5 → clamped to 0; the mean of means would be (1 - 5)/2 = -2."""
    a = kl_sums(seq(0.0, 0.0, 0.0), seq(-1.0, -1.0, -1.0))
    b = kl_sums(seq(0.0), seq(5.0))
    assert reference_point(a + b).item() == 0.0
    c = kl_sums(seq(0.0), seq(-9.0))  # with Δ = 9 instead: (3 + 9) / 4 = 3, mean of means would be 5
    assert reference_point(a + c).item() == pytest.approx(3.0)
    assert reference_point(torch.zeros(2)).item() == 0.0  # no pairs at all: no NaN
