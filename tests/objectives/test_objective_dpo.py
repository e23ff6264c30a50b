"""Sigmoid DPO / cDPO: hand-computed values, the TRL label-smoothing regression, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives import dpo_loss

# Shared worked example: β=0.1, π_c=-10, ref_c=-12, π_r=-15, ref_r=-14
# → chosen log-ratio 2, rejected log-ratio -1, h = 2 - (-1) = 3, βh = 0.3.
EXAMPLE = dict(pi_c=[-10.0], ref_c=[-12.0], pi_r=[-15.0], ref_r=[-14.0])
BETA = 0.1


def test_dpo_hand_computed(pairs):
    """h = 3, β = 0.1 → loss = -logσ(0.3) = log(1 + e^-0.3) = log(1.7408182) = 0.5543552."""
    out = dpo_loss(*pairs(**EXAMPLE), beta=BETA)
    torch.testing.assert_close(out.loss, torch.tensor([0.554355244468527], dtype=torch.float64))


@pytest.mark.parametrize("beta", [0.01, 0.1, 0.5, 5.0])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_dpo_zero_margin_is_log2(pairs, beta, eps):
    """h = 0 → -(1-ε)logσ(0) - ε logσ(0) = -log(1/2) = log 2 ≈ 0.693147, for any β and ε."""
    out = dpo_loss(
        *pairs(pi_c=[-5.0], ref_c=[-7.0], pi_r=[-9.0], ref_r=[-11.0]), beta=beta, label_smoothing=eps
    )
    torch.testing.assert_close(out.loss, torch.tensor([math.log(2)], dtype=torch.float64))


def test_cdpo_hand_computed(pairs):
    """ε = 0.1, βh = 0.3: -logσ(-x) = -logσ(x) + x, so
    loss = 0.9·0.5543552 + 0.1·0.8543552 = 0.5543552 + 0.1·0.3 = 0.5843552."""
    out = dpo_loss(*pairs(**EXAMPLE), beta=BETA, label_smoothing=0.1)
    torch.testing.assert_close(out.loss, torch.tensor([0.584355244468527], dtype=torch.float64))


def test_label_smoothing_changes_loss(pairs):
    """Regression vs TRL 1.16, whose sigmoid loss ignores label_smoothing: here ε > 0 must matter."""
    plain = dpo_loss(*pairs(**EXAMPLE), beta=BETA).loss
    smoothed = dpo_loss(*pairs(**EXAMPLE), beta=BETA, label_smoothing=0.1).loss
    assert not torch.allclose(plain, smoothed)


@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7])
def test_invalid_label_smoothing_raises(pairs, eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(*pairs(**EXAMPLE), beta=BETA, label_smoothing=eps)


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_nonpositive_beta_raises(pairs, beta):
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(*pairs(**EXAMPLE), beta=beta)


def test_dpo_gradient_signs_and_value(pairs):
    """∂loss/∂π_c = -β σ(-βh) = -0.1·σ(-0.3) = -0.1·0.4255575 = -0.0425557 < 0 (raise chosen logp);
    ∂loss/∂π_r = +0.0425557 > 0 (lower rejected logp)."""
    policy, reference = pairs(**EXAMPLE, grad=True)
    dpo_loss(policy, reference, beta=BETA).loss.sum().backward()
    expected = 0.1 * 0.425557483188341
    torch.testing.assert_close(policy.chosen.sum.grad, torch.tensor([-expected], dtype=torch.float64))
    torch.testing.assert_close(policy.rejected.sum.grad, torch.tensor([expected], dtype=torch.float64))


def test_cdpo_gradient_reverses_at_large_margin(pairs):
    """cDPO's point: ∂loss/∂(βh) = -(1-ε)σ(-βh) + εσ(βh). With ε=0.1, βh=5:
    -0.9·0.0066929 + 0.1·0.9933071 = +0.0933 > 0, so an over-confident margin is pulled back,
    whereas plain DPO keeps pushing (gradient -σ(-5) < 0)."""
    kw = dict(pi_c=[0.0], ref_c=[-50.0], pi_r=[0.0], ref_r=[0.0], grad=True)  # h = 50, β = 0.1
    policy, reference = pairs(**kw)
    dpo_loss(policy, reference, beta=BETA, label_smoothing=0.1).loss.sum().backward()
    assert policy.chosen.sum.grad.item() > 0
    policy, reference = pairs(**kw)
    dpo_loss(policy, reference, beta=BETA).loss.sum().backward()
    assert policy.chosen.sum.grad.item() < 0


def test_dpo_metrics_hand_computed(pairs):
    """β = 0.1, three pairs (π_c, ref_c, π_r, ref_r):
    (-10, -12, -15, -14): rewards/chosen 0.1·2 = 0.2,   rewards/rejected 0.1·(-1) = -0.1, margin 0.3,  acc 1
    ( -3,  -2,  -1,  -2): rewards/chosen 0.1·(-1) = -0.1, rewards/rejected 0.1·1 = 0.1,  margin -0.2, acc 0
    ( -4,  -5,  -6,  -7): both rewards 0.1·1 = 0.1, margin 0, acc 0 (a tie is not a win: strict >)
    logps/* are the policy sums: [-10, -3, -4] and [-15, -1, -6]."""
    policy, reference = pairs(
        pi_c=[-10.0, -3.0, -4.0],
        ref_c=[-12.0, -2.0, -5.0],
        pi_r=[-15.0, -1.0, -6.0],
        ref_r=[-14.0, -2.0, -7.0],
    )
    m = dpo_loss(policy, reference, beta=BETA).metrics
    f64 = torch.float64
    torch.testing.assert_close(m["rewards/chosen"], torch.tensor([0.2, -0.1, 0.1], dtype=f64))
    torch.testing.assert_close(m["rewards/rejected"], torch.tensor([-0.1, 0.1, 0.1], dtype=f64))
    torch.testing.assert_close(m["rewards/margins"], torch.tensor([0.3, -0.2, 0.0], dtype=f64))
    torch.testing.assert_close(m["rewards/accuracies"], torch.tensor([1.0, 0.0, 0.0]))  # float32: .float()
    torch.testing.assert_close(m["logps/chosen"], torch.tensor([-10.0, -3.0, -4.0], dtype=f64))
    torch.testing.assert_close(m["logps/rejected"], torch.tensor([-15.0, -1.0, -6.0], dtype=f64))


def test_loss_and_metrics_shapes_and_detached(pairs):
    out = dpo_loss(
        *pairs(pi_c=[-1.0] * 3, ref_c=[-2.0] * 3, pi_r=[-3.0] * 3, ref_r=[-3.0] * 3, grad=True), beta=BETA
    )
    assert out.loss.shape == (3,) and out.loss.requires_grad
    for name, value in out.metrics.items():
        assert value.shape == (3,), name
        assert not value.requires_grad, name
