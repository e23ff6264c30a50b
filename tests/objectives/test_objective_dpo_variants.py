"""Length-normalised DPO (Tulu 3), RPO (DPO + NLL) and APO-zero: hand-computed values and gradients.

Shared worked example (as in test_objective_dpo.py): π_c=-10, ref_c=-12, π_r=-15, ref_r=-14, so the
summed log-ratios are +2 (chosen) and -1 (rejected); here with |c| = 4 and |r| = 2 tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives import apo_zero_loss, dpo_loss, dpo_norm_loss, rpo_loss

EXAMPLE = dict(pi_c=[-10.0], ref_c=[-12.0], pi_r=[-15.0], ref_r=[-14.0], n_c=[4.0], n_r=[2.0])
F64 = torch.float64


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# -- dpo_norm ------------------------------------------------------------------------------------


def test_dpo_norm_hand_computed(pairs):
    """Mean log-ratios 2/4 = 0.5 and -1/2 = -0.5, h̄ = 1, β = 0.5 → -log σ(0.5) = log(1 + e^-0.5)
    = 0.4740770. Summed DPO at the same β sees h = 3: log(1 + e^-1.5) = 0.2014133, so the two differ."""
    out = dpo_norm_loss(*pairs(**EXAMPLE), beta=0.5)
    torch.testing.assert_close(out.loss, _t(0.4740769841801067))
    assert not torch.allclose(out.loss, dpo_loss(*pairs(**EXAMPLE), beta=0.5).loss)


def test_dpo_norm_equals_dpo_with_beta_over_length_when_lengths_match(pairs):
    """|c| = |r| = n → h̄ = h / n, so dpo_norm(β) = dpo(β / n): here n = 3, β = 0.3 vs 0.1."""
    kw = dict(pi_c=[-10.0, -3.0], ref_c=[-12.0, -2.0], pi_r=[-15.0, -1.0], ref_r=[-14.0, -2.0])
    lengths = dict(n_c=[3.0, 3.0], n_r=[3.0, 3.0])
    normed = dpo_norm_loss(*pairs(**kw, **lengths), beta=0.3).loss
    torch.testing.assert_close(normed, dpo_loss(*pairs(**kw, **lengths), beta=0.1).loss)


def test_dpo_norm_gradients(pairs):
    """∂loss/∂π_c = -β σ(-βh̄) / |c| = -0.5·σ(-0.5)/4 = -0.5·0.3775407/4 = -0.0471926;
    ∂loss/∂π_r = +0.5·0.3775407/2 = +0.0943852 (the shorter completion's tokens weigh more)."""
    policy, reference = pairs(**EXAMPLE, grad=True)
    dpo_norm_loss(policy, reference, beta=0.5).loss.sum().backward()
    torch.testing.assert_close(policy.chosen.sum.grad, _t(-0.047192583599768176))
    torch.testing.assert_close(policy.rejected.sum.grad, _t(0.09438516719953635))


def test_dpo_norm_metrics_stay_sum_based(pairs):
    """Metrics as for DPO (sum-based): rewards/margins = β·h = 0.5·3 = 1.5."""
    out = dpo_norm_loss(*pairs(**EXAMPLE), beta=0.5)
    torch.testing.assert_close(out.metrics["rewards/margins"], _t(1.5))


# -- rpo -----------------------------------------------------------------------------------------


def test_rpo_hand_computed(pairs):
    """DPO at β = 0.1 (h = 3): 0.5543552; NLL(c) = 10 / 4 = 2.5; α = 0.5 → 0.5543552 + 1.25 = 1.8043552."""
    out = rpo_loss(*pairs(**EXAMPLE), beta=0.1, alpha=0.5)
    torch.testing.assert_close(out.loss, _t(1.8043552444685271))
    torch.testing.assert_close(out.metrics["nll"], _t(2.5))
    torch.testing.assert_close(out.metrics["rewards/margins"], _t(0.3))  # the DPO metrics, unchanged


def test_rpo_nll_is_per_pair_mean(pairs):
    """Two pairs, chosen sums -10 over 4 tokens and -2 over 1 token: NLL = [2.5, 2.0] per pair (the
    token-weighted batch mean would be 12 / 5 = 2.4 for both). Loss - DPO loss = α·NLL exactly."""
    kw = dict(pi_c=[-10.0, -2.0], ref_c=[-12.0, -3.0], pi_r=[-15.0, -4.0], ref_r=[-14.0, -4.0])
    policy, reference = pairs(**kw, n_c=[4.0, 1.0], n_r=[2.0, 2.0])
    out = rpo_loss(policy, reference, beta=0.1, alpha=2.0)
    torch.testing.assert_close(out.metrics["nll"], _t(2.5, 2.0))
    torch.testing.assert_close(out.loss - dpo_loss(policy, reference, beta=0.1).loss, _t(5.0, 4.0))


def test_rpo_gradients(pairs):
    """∂loss/∂π_c = DPO's -0.1·σ(-0.3) - α/|c| = -0.0425557 - 0.5/4 = -0.1675557; ∂loss/∂π_r = DPO's
    +0.0425557 (the NLL term reads the chosen completion only)."""
    policy, reference = pairs(**EXAMPLE, grad=True)
    rpo_loss(policy, reference, beta=0.1, alpha=0.5).loss.sum().backward()
    torch.testing.assert_close(policy.chosen.sum.grad, _t(-0.1675557483188341))
    torch.testing.assert_close(policy.rejected.sum.grad, _t(0.0425557483188341))


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_rpo_needs_positive_alpha(pairs, alpha):
    with pytest.raises(ValueError, match="alpha must be > 0"):
        rpo_loss(*pairs(**EXAMPLE), beta=0.1, alpha=alpha)


# -- apo_zero ------------------------------------------------------------------------------------


def test_apo_zero_hand_computed(pairs):
    """β = 0.1: chosen term 1 - σ(0.1·2) = 1 - 0.5498340 = 0.4501660; rejected term σ(0.1·(-1)) =
    0.4750208; loss = 0.9251868."""
    out = apo_zero_loss(*pairs(**EXAMPLE), beta=0.1)
    torch.testing.assert_close(out.loss, _t(0.925186815208582))


@pytest.mark.parametrize("beta", [0.01, 0.1, 5.0])
def test_apo_zero_is_one_at_the_reference(pairs, beta):
    """Both log-ratios 0 → (1 - σ(0)) + σ(0) = 1/2 + 1/2 = 1, for any β."""
    out = apo_zero_loss(*pairs(pi_c=[-5.0], ref_c=[-5.0], pi_r=[-9.0], ref_r=[-9.0]), beta=beta)
    torch.testing.assert_close(out.loss, _t(1.0))


def test_apo_zero_gradients(pairs):
    """∂loss/∂π_c = -β σ(0.2)(1 - σ(0.2)) = -0.1·0.5498340·0.4501660 = -0.0247517 (raise chosen);
    ∂loss/∂π_r = +β σ(-0.1)(1 - σ(-0.1)) = 0.1·0.4750208·0.5249792 = +0.0249376 (lower rejected)."""
    policy, reference = pairs(**EXAMPLE, grad=True)
    apo_zero_loss(policy, reference, beta=0.1).loss.sum().backward()
    torch.testing.assert_close(policy.chosen.sum.grad, _t(-0.024751657271185997))
    torch.testing.assert_close(policy.rejected.sum.grad, _t(0.0249376040192892))


def test_apo_zero_is_anchored_where_dpo_is_not(pairs):
    """Lowering both log-ratios by 3 keeps DPO's margin (and loss) but raises APO-zero's loss: with
    log-ratios -1 and -4, (1 - σ(-0.1)) + σ(-0.4) = 0.5249792 + 0.4013123 = 0.9262915 > 0.9251868."""
    shifted = dict(EXAMPLE, pi_c=[-13.0], pi_r=[-18.0])
    torch.testing.assert_close(
        dpo_loss(*pairs(**shifted), beta=0.1).loss, dpo_loss(*pairs(**EXAMPLE), beta=0.1).loss
    )
    out = apo_zero_loss(*pairs(**shifted), beta=0.1)
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    torch.testing.assert_close(out.loss, _t(1.0 - sig(-0.1) + sig(-0.4)))
    assert out.loss.item() > 0.925186815208582
