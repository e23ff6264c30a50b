"""RLOO advantages and loss against hand-computed values (the arithmetic is in each docstring)."""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives.kl import sequence_kl
from align.objectives.rloo import RLOO_RATIOS, RLOO_REDUCTIONS, rloo_advantages, rloo_loss

T = lambda *v: torch.tensor(v, dtype=torch.float64)
# Two completions: 1 and 3 real tokens; row 0's padding holds garbage that must not count.
MASK = torch.tensor([[True, False, False], [True, True, True]])


def _logp(grad: bool = True) -> torch.Tensor:
    return T(-1.0, float("nan"), 1e4, -2.0, -0.5, -1.5).view(2, 3).requires_grad_(grad)


def test_names_exposed_for_the_manifest():
    assert set(RLOO_RATIOS) == {"sequence", "token"} and set(RLOO_REDUCTIONS) == {"sum", "mean"}


def test_sequence_kl_sums_real_tokens_only():
    """logp [-1, -2], ref [-1.5, -1] (+ NaN padding): k1 = 0.5 - 1 = -0.5;
    k3 = (e^-0.5 - 1 + 0.5) + (e^1 - 1 - 1) = 0.106531 + 0.718282 = 0.824812."""
    logp = T(-1.0, -2.0, float("nan")).view(1, 3)
    ref = T(-1.5, -1.0, float("nan")).view(1, 3)
    mask = torch.tensor([[True, True, False]])
    assert float(sequence_kl(logp, ref, mask)) == pytest.approx(-0.5, abs=1e-12)
    k3 = math.exp(-0.5) - 0.5 + math.e - 2
    assert float(sequence_kl(logp, ref, mask, "k3")) == pytest.approx(k3, abs=1e-12)


def test_leave_one_out_docstring_example():
    """k = 3, β = 0.5: scores [1, 2, 6], KL [0, 2, 0] → r = [1, 1, 6]; b = [3.5, 3.5, 1];
    A = [-2.5, -2.5, 5]. A second group [0, 4, 2] (β KL 0): b = [3, 1, 2], A = [-3, 3, 0]."""
    adv, rewards = rloo_advantages(T(1.0, 2.0, 6.0, 0.0, 4.0, 2.0), 3, kl=T(0.0, 2.0, 0.0, 0, 0, 0), beta=0.5)
    torch.testing.assert_close(rewards, T(1.0, 1.0, 6.0, 0.0, 4.0, 2.0))
    torch.testing.assert_close(adv, T(-2.5, -2.5, 5.0, -3.0, 3.0, 0.0))
    no_kl, _ = rloo_advantages(T(1.0, 2.0, 6.0), 3)
    torch.testing.assert_close(no_kl, T(-3.0, -1.5, 4.5))  # b = [4, 3.5, 1.5]


def test_whitening():
    """A = [-2.5, -2.5, 5] alone: mean 0, Bessel std √((6.25 + 6.25 + 25) / 2) = √18.75 = 4.330127 →
    A / (4.330127 + 1e-4) = [-0.577337, -0.577337, 1.154674]. Beside an equal-reward group (A = 0,
    which stays 0): std over 6 rows √(37.5 / 5) = √7.5."""
    adv, _ = rloo_advantages(T(1.0, 1.0, 6.0, 2.0, 2.0, 2.0), 3, whiten=True)
    s = math.sqrt(37.5 / 5) + 1e-4
    torch.testing.assert_close(adv, T(-2.5 / s, -2.5 / s, 5 / s, 0.0, 0.0, 0.0))
    alone, _ = rloo_advantages(T(1.0, 1.0, 6.0), 3, whiten=True)
    s = math.sqrt(18.75) + 1e-4
    torch.testing.assert_close(alone, T(-2.5 / s, -2.5 / s, 5 / s))


def test_k_equals_one_is_an_error_and_equal_groups_are_zero():
    """k = 1 has no leave-one-out baseline: a clear error, not a silent zero. Equal rewards, even
    where fp leaves a residue ((Σ [0.1] * 3 - 0.1) / 2 ≠ 0.1 in float64), give exact 0."""
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(T(1.0, 2.0), 1)
    r = T(0.1, 0.1, 0.1, 0.0, 1.0, 2.0)
    assert float((r[:3].sum() - r[0]) / 2) != 0.1  # the residue is real
    adv, _ = rloo_advantages(r, 3)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0] and torch.isfinite(adv).all()
    torch.testing.assert_close(adv[3:], T(-1.5, 0.0, 1.5))
    with pytest.raises(ValueError, match="kl"):
        rloo_advantages(r, 3, beta=0.1)


@pytest.mark.parametrize("ratio", ["sequence", "token"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_on_policy_gradient_is_reinforce(ratio, reduce):
    """On-policy (ρ = 1) every variant has gradient -A_i ∂ Σ_t logp (÷ |y_i| for "mean"): per real
    token -A_i / N (sum) or -A_i / (N |y_i|) (mean) for loss.mean(); padding (NaN, 1e4) gets exactly
    0. The value is -A_i, except token ratios summed: Σ_t -A_i = -A_i |y_i| (here [-2, 3])."""
    logp = _logp()
    adv = T(2.0, -1.0)
    out = rloo_loss(logp, MASK, adv, ratio=ratio, reduce=reduce, clip=0.2)
    value = -adv * (T(1.0, 3.0) if (ratio, reduce) == ("token", "sum") else 1.0)
    torch.testing.assert_close(out.loss.detach(), value)
    out.loss.mean().backward()
    per_row = T(1.0, 1.0) if reduce == "sum" else T(1.0, 1 / 3)
    expected = (-adv * per_row / 2)[:, None] * MASK
    torch.testing.assert_close(logp.grad, expected)
    # the same gradient as the literal REINFORCE loss -A · Σ_t logp
    ref = T(-1.0, 0.0, 0.0, -2.0, -0.5, -1.5).view(2, 3).requires_grad_()
    reduced = (ref * MASK).sum(1) * per_row
    (-(adv * reduced)).mean().backward()
    torch.testing.assert_close(logp.grad, ref.grad)


def test_sequence_ratio_clipping():
    """Sequence ratio: Σ_t (logp - old) = ln 1.5 over two tokens → ρ = 1.5, ε = 0.2.
    A = 1: min(1.5, 1.2) = 1.2 → loss -1.2, clipped, no gradient.
    A = -1: min(-1.5, -1.2) = -1.5 → loss 1.5, not clipped; ∂(-A ρ)/∂logp_t = ρ = 1.5 per token."""
    old = T(-1.0, -1.0).view(1, 2).repeat(2, 1)
    logp = (old + math.log(1.5) / 2).requires_grad_()
    mask = torch.ones(2, 2, dtype=torch.bool)
    out = rloo_loss(logp, mask, T(1.0, -1.0), old_logp=old, clip=0.2)
    torch.testing.assert_close(out.loss.detach(), T(-1.2, 1.5))
    assert out.metrics["policy/clipfrac"].tolist() == [1.0, 0.0]
    torch.testing.assert_close(out.metrics["policy/ratio"], T(1.5, 1.5))
    out.loss.sum().backward()
    torch.testing.assert_close(logp.grad, T(0.0, 0.0, 1.5, 1.5).view(2, 2))
    unclipped = rloo_loss(logp, mask, T(1.0, -1.0), old_logp=old)  # clip=None: the paper, -A ρ
    torch.testing.assert_close(unclipped.loss.detach(), T(-1.5, 1.5))
    high = rloo_loss(logp, mask, T(1.0, -1.0), old_logp=old, clip=0.2, clip_high=0.6)
    torch.testing.assert_close(high.loss.detach(), T(-1.5, 1.5))  # 1.5 < 1 + 0.6: inside


def test_sequence_ratio_with_mean_is_the_geometric_mean():
    """reduce="mean": log ρ = mean log-ratio = (ln 1.5) / 2 → ρ = √1.5 = 1.224745 > 1.2: clipped for
    A = 1 (loss -1.2)."""
    old = T(-1.0, -1.0).view(1, 2)
    logp = old + T(math.log(1.5), 0.0).view(1, 2)
    out = rloo_loss(logp, torch.ones(1, 2, dtype=torch.bool), T(1.0), old_logp=old, clip=0.2, reduce="mean")
    torch.testing.assert_close(out.metrics["policy/ratio"], T(math.sqrt(1.5)))
    torch.testing.assert_close(out.loss, T(-1.2))


def test_token_ratio_clipping():
    """Token ratios [1.5, 1.0] (third token padding), A = 1, ε = 0.2: per token [-1.2, -1.0];
    sum -2.2, mean -1.1; half the real tokens clipped; mean ratio 1.25."""
    old = T(-1.0, -1.0, 0.0).view(1, 3)
    logp = old + T(math.log(1.5), 0.0, 50.0).view(1, 3)
    mask = torch.tensor([[True, True, False]])
    s = rloo_loss(logp, mask, T(1.0), old_logp=old, clip=0.2, ratio="token")
    m = rloo_loss(logp, mask, T(1.0), old_logp=old, clip=0.2, ratio="token", reduce="mean")
    torch.testing.assert_close(s.loss, T(-2.2))
    torch.testing.assert_close(m.loss, T(-1.1))
    assert s.metrics["policy/clipfrac"].tolist() == [0.5]
    torch.testing.assert_close(s.metrics["policy/ratio"], T(1.25))


def test_argument_errors():
    logp, mask, adv = T(-1.0).view(1, 1), torch.ones(1, 1, dtype=torch.bool), T(1.0)
    with pytest.raises(ValueError, match="ratio"):
        rloo_loss(logp, mask, adv, ratio="seq")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduce"):
        rloo_loss(logp, mask, adv, reduce="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip_high"):
        rloo_loss(logp, mask, adv, clip_high=0.3)
