"""SimPO and ORPO (reference-free): hand-computed values, gradients, and the numerics ORPO needs.

Worked example: π_c = -10 over |c| = 4 tokens (mean -2.5), π_r = -15 over |r| = 5 (mean -3). The
reference values the `pairs` builder makes are not passed: these objectives take reference=None.
"""

from __future__ import annotations

import mpmath
import pytest
import torch

from align.objectives import orpo_loss, simpo_loss
from align.objectives.reference_free import log1mexp

EXAMPLE = dict(pi_c=[-10.0], ref_c=[0.0], pi_r=[-15.0], ref_r=[0.0], n_c=[4.0], n_r=[5.0])
F64 = torch.float64


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _policy(pairs, **kw):
    return pairs(**{**EXAMPLE, **kw})[0]


# -- simpo ---------------------------------------------------------------------------------------


def test_simpo_hand_computed(pairs):
    """β = 2, γ = 0.5: β(π̄_c - π̄_r) - γ = 2·(-2.5 + 3) - 0.5 = 0.5 → -log σ(0.5) = 0.4740770;
    γ = 0: -log σ(1) = log(1 + e^-1) = 0.3132617."""
    policy = _policy(pairs)
    torch.testing.assert_close(simpo_loss(policy, None, beta=2.0, gamma=0.5).loss, _t(0.4740769841801067))
    torch.testing.assert_close(simpo_loss(policy, None, beta=2.0, gamma=0.0).loss, _t(0.31326168751822286))


def test_simpo_gradients(pairs):
    """∂loss/∂π_c = -β σ(-0.5) / |c| = -2·0.3775407/4 = -0.1887703; ∂loss/∂π_r = +2·0.3775407/5 = +0.1510163."""
    policy = _policy(pairs, grad=True)
    simpo_loss(policy, None, beta=2.0, gamma=0.5).loss.sum().backward()
    torch.testing.assert_close(policy.chosen.sum.grad, _t(-0.1887703343990727))
    torch.testing.assert_close(policy.rejected.sum.grad, _t(0.15101626751925817))


def test_simpo_metrics_are_scaled_mean_logps(pairs):
    """rewards/* = β·π̄ (TRL's CPO logging): 2·(-2.5) = -5, 2·(-3) = -6, margin 1, accuracy 1;
    logps/* stay summed: -10, -15."""
    m = simpo_loss(_policy(pairs), None, beta=2.0).metrics
    torch.testing.assert_close(m["rewards/chosen"], _t(-5.0))
    torch.testing.assert_close(m["rewards/rejected"], _t(-6.0))
    torch.testing.assert_close(m["rewards/margins"], _t(1.0))
    torch.testing.assert_close(m["rewards/accuracies"], torch.tensor([1.0]))
    torch.testing.assert_close(m["logps/rejected"], _t(-15.0))


def test_simpo_rejects_negative_gamma(pairs):
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        simpo_loss(_policy(pairs), None, beta=2.0, gamma=-0.1)


# -- orpo ----------------------------------------------------------------------------------------


def test_orpo_hand_computed(pairs):
    """log odds(y) = π̄ - log(1 - e^π̄):
    chosen  -2.5 - log(1 - e^-2.5) = -2.5 - log(0.9179150) = -2.5 + 0.0856505 = -2.4143495
    rejected -3 - log(1 - e^-3)    = -3 - log(0.9502129)   = -3 + 0.0510692   = -2.9489308
    log odds ratio = 0.5345813; -log σ(0.5345813) = 0.4611613; NLL(c) = 10/4 = 2.5;
    λ = β = 0.1 → loss = 2.5 + 0.1·0.4611613 = 2.5461161."""
    out = orpo_loss(_policy(pairs), None, beta=0.1)
    torch.testing.assert_close(out.loss, _t(2.5461161250122384))
    torch.testing.assert_close(out.metrics["orpo/log_odds"], _t(0.5345813027993365))
    torch.testing.assert_close(out.metrics["nll"], _t(2.5))
    torch.testing.assert_close(out.metrics["rewards/margins"], _t(0.1 * 0.5))  # λ·(π̄_c - π̄_r)


def test_orpo_gradients(pairs):
    """∂(log odds)/∂π̄ = 1/(1 - e^π̄). ∂loss/∂π_c = -1/|c| - λ σ(-0.5345813)/(1 - e^-2.5)/|c|
    = -0.25 - 0.1·0.3694490·1.0894255/4 = -0.2600622; ∂loss/∂π_r = +λ σ(-0.5345813)/(1 - e^-3)/|r|
    = 0.1·0.3694490·1.0523957/5 = +0.0077761."""
    policy = _policy(pairs, grad=True)
    orpo_loss(policy, None, beta=0.1).loss.sum().backward()
    torch.testing.assert_close(policy.chosen.sum.grad, _t(-0.260062179141613))
    torch.testing.assert_close(policy.rejected.sum.grad, _t(0.007776130905527143))


def test_orpo_stays_finite_when_a_model_is_certain(pairs):
    """A mean log-prob of exactly 0 (P = 1) makes log(1 - P) = -inf and, unclamped, a NaN gradient;
    the cap at -1e-6 keeps loss and gradients finite (and an odds ratio that is large and positive)."""
    policy = _policy(pairs, pi_c=[0.0], grad=True)
    out = orpo_loss(policy, None, beta=0.1)
    out.loss.sum().backward()
    assert torch.isfinite(out.loss).all() and out.metrics["orpo/log_odds"].item() > 10
    assert torch.isfinite(policy.chosen.sum.grad).all() and torch.isfinite(policy.rejected.sum.grad).all()


@pytest.mark.parametrize("x", [-1e-10, -1e-3, -0.5, -0.7, -2.0, -30.0])
def test_log1mexp_is_accurate(x):
    """log(1 - e^x) in float64 against 50-digit arithmetic, on both sides of the -log 2 branch (far
    below it, log(-expm1(x)) alone is off by ~2e-4 relative at x = -30)."""
    with mpmath.workdps(50):
        exact = float(mpmath.log(1 - mpmath.exp(mpmath.mpf(x))))
    got = log1mexp(torch.tensor([x], dtype=F64))
    torch.testing.assert_close(got, _t(exact), rtol=1e-14, atol=0)
