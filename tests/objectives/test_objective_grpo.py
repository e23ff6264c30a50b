"""GRPO advantages and loss against hand-computed values (the arithmetic is in each docstring)."""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives.grpo import GRPO_NORMALISATIONS, GRPO_SCALES, grpo_advantages, grpo_loss

T = lambda *v: torch.tensor(v, dtype=torch.float64)
A = 0.5 / (math.sqrt(0.5) + 1e-4)  # 0.707007: rewards [1, 0], Bessel std √0.5, eps 1e-4
# Two rows: 1 and 3 real tokens; row 0's padding holds garbage that must not count.
MASK = torch.tensor([[True, False, False], [True, True, True]])


def _logp(grad: bool = True) -> torch.Tensor:
    x = T(-1.0, float("nan"), 1e4, -2.0, -0.5, -1.5).view(2, 3)
    return x.requires_grad_(grad)


def test_names_exposed_for_the_manifest():
    assert set(GRPO_NORMALISATIONS) == {"sequence", "token", "dr_grpo"}
    assert set(GRPO_SCALES) == {"group", "batch", "none"}


def test_group_advantages_docstring_example():
    """Group [1, 0]: mean 0.5, std √0.5 → ±0.5 / (0.707107 + 1e-4) = ±0.707007; group [2, 3] the same."""
    adv = grpo_advantages(T(1.0, 0.0, 2.0, 3.0), group_size=2)
    torch.testing.assert_close(adv, T(A, -A, -A, A))


def test_scale_none_and_batch():
    """Groups [1, 0], [3, 3]. none (Dr. GRPO): r - mean = [0.5, -0.5, 0, 0]. batch: Bessel std of
    [1, 0, 3, 3] (mean 1.75, squares 0.5625 + 3.0625 + 1.5625 + 1.5625 = 6.75, / 3 = 2.25) = 1.5 →
    ±0.5 / 1.5001 = ±0.333311, the equal group still 0."""
    r = T(1.0, 0.0, 3.0, 3.0)
    torch.testing.assert_close(grpo_advantages(r, 2, scale="none"), T(0.5, -0.5, 0.0, 0.0))
    b = 0.5 / 1.5001
    torch.testing.assert_close(grpo_advantages(r, 2, scale="batch"), T(b, -b, 0.0, 0.0))
    with pytest.raises(ValueError, match="scale"):
        grpo_advantages(r, 2, scale="std")  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_rewards_and_groups_of_one_give_exact_zeros(scale):
    """mean([0.1, 0.1, 0.1]) = 0.10000000000000002 in float64: without the equal-group rule the
    residue -1.4e-17 / (0 + 1e-4) would be a (tiny, spurious) advantage; a group of one has no std."""
    r = T(0.1, 0.1, 0.1, 0.0, 1.0, 2.0)
    assert float(r[:3].mean()) != 0.1  # the residue is real
    equal = grpo_advantages(r, 3, scale=scale)
    assert equal[:3].tolist() == [0.0, 0.0, 0.0] and torch.isfinite(equal).all()
    assert equal[3] < 0 < equal[5]  # the other group keeps its signal
    single = grpo_advantages(T(5.0, -1.0, 0.3), 1, scale=scale)
    assert single.tolist() == [0.0, 0.0, 0.0]
    one = grpo_advantages(T(7.0), 1, scale=scale)
    assert one.tolist() == [0.0]


def test_bad_group_layout_is_an_error():
    with pytest.raises(ValueError, match="multiple of group_size"):
        grpo_advantages(T(1.0, 2.0, 3.0), 2)
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(T(1.0, 2.0), 0)


def test_normalisations_docstring_example_and_padding():
    """On-policy, β = 0, advantages [A, -A] (rewards [1, 0]), A = 0.707007: per-token L = -A_i ρ =
    [-A], [A, A, A].
    sequence: (-A + A)/2 = 0; token: (-A + 3A)/4 = 0.353503; dr_grpo (L_max 4): 2A/8 = 0.176752.
    Row 0's padding (NaN, 1e4) changes nothing."""
    adv = T(A, -A)
    seq = grpo_loss(_logp(grad=False), MASK, adv, normalisation="sequence")
    torch.testing.assert_close(seq.loss, T(-A, A))
    assert float(seq.loss.mean()) == pytest.approx(0.0, abs=1e-12)
    tok = grpo_loss(_logp(grad=False), MASK, adv, normalisation="token")
    torch.testing.assert_close(tok.loss, T(-A * 2 / 4, 3 * A * 2 / 4))  # per row: Σ_t L · rows/tokens
    assert float(tok.loss.mean()) == pytest.approx(2 * A / 4, abs=1e-12)
    dr = grpo_loss(_logp(grad=False), MASK, adv, normalisation="dr_grpo", max_completion_length=4)
    assert float(dr.loss.mean()) == pytest.approx(2 * A / 8, abs=1e-12)
    for out in (seq, tok, dr):
        assert torch.isfinite(out.loss).all()
        assert out.metrics["completion_length"].tolist() == [1.0, 3.0]


@pytest.mark.parametrize(
    ("normalisation", "scale"),
    [
        ("sequence", [[1 / 2, 0, 0], [1 / 6] * 3]),
        ("token", [[1 / 4, 0, 0], [1 / 4] * 3]),
        ("dr_grpo", [[1 / 8, 0, 0], [1 / 8] * 3]),
    ],
)
def test_on_policy_gradient_per_normalisation(normalisation, scale):
    """On-policy ∂L/∂logp_it = -A_i · w_it with w = 1/(N |o_i|) (sequence), 1/Σ|o| (token),
    1/(N L_max) (dr_grpo, L_max 4); padding gets exactly 0, NaN there notwithstanding."""
    logp = _logp()
    adv = T(2.0, -1.0)
    out = grpo_loss(logp, MASK, adv, normalisation=normalisation, max_completion_length=4)
    out.loss.mean().backward()
    expected = -adv[:, None] * T(*scale[0], *scale[1]).view(2, 3) * MASK
    torch.testing.assert_close(logp.grad, expected)


def test_token_normalisation_over_micro_batches_is_the_update_token_mean():
    """An update of 3 rows / 5 real tokens in two micro-batches: Σ rows / 3 = Σ_t L_t / 5 (DAPO),
    the same as one batch holding all rows (bnpo would instead average two micro-batch means)."""
    logp = T(-1.0, -2.0, -0.5, -1.0, -3.0, -0.2).view(3, 2)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    adv = T(1.0, -2.0, 0.5)
    old = logp - 0.1  # off-policy: ρ = e^0.1 = 1.105171, inside [0.8, 1.2]
    whole = grpo_loss(logp, mask, adv, old_logp=old, normalisation="token")
    a = grpo_loss(logp[:2], mask[:2], adv[:2], old_logp=old[:2], normalisation="token", tokens=5, rows=3)
    b = grpo_loss(logp[2:], mask[2:], adv[2:], old_logp=old[2:], normalisation="token", tokens=5, rows=3)
    per_token = -adv[:, None] * math.exp(0.1) * mask
    assert float(whole.loss.mean()) == pytest.approx(float(per_token.sum() / 5), abs=1e-12)
    assert float((a.loss.sum() + b.loss.sum()) / 3) == pytest.approx(float(whole.loss.mean()), abs=1e-12)


def test_asymmetric_clipping():
    """ε_low 0.2, ε_high 0.28 (DAPO): (A=1, ρ=1.5) → -1.28 clipped high; (A=-1, ρ=0.5) → 0.8
    clipped low; (A=-1, ρ=1.5) → 1.5 (not clipped: the pessimistic bound); (A=1, ρ=0.5) → -0.5."""
    old = torch.zeros(4, 1, dtype=torch.float64)
    logp = T(math.log(1.5), math.log(0.5), math.log(1.5), math.log(0.5)).view(4, 1)
    mask = torch.ones(4, 1, dtype=torch.bool)
    out = grpo_loss(logp, mask, T(1.0, -1.0, -1.0, 1.0), old_logp=old, epsilon_low=0.2, epsilon_high=0.28)
    torch.testing.assert_close(out.loss, T(-1.28, 0.8, 1.5, -0.5))
    assert out.metrics["policy/clipfrac"].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_k3_kl_term_and_its_gradient():
    """A = 0, d = logp - ref = -1 - (-1.5) = 0.5: k3 = e^-0.5 - 1 + 0.5 = 0.106531, β = 0.1 → loss
    0.0106531; ∂/∂logp = β (1 - e^-d) = 0.1 · 0.393469. With the importance weight ρ = π_θ/π_old
    (TRL's use_bias_correction_kl) the on-policy value is the same but the gradient is
    β (k3' + k3) = β (1 - e^-d + e^-d - 1 + d) = β d = 0.05."""
    mask = torch.ones(1, 1, dtype=torch.bool)
    ref = T(-1.5).view(1, 1)
    logp = T(-1.0).view(1, 1).requires_grad_()
    out = grpo_loss(logp, mask, T(0.0), ref_logp=ref, beta=0.1)
    assert float(out.loss.detach()) == pytest.approx(0.1 * (math.exp(-0.5) - 0.5), abs=1e-12)
    assert float(out.metrics["kl"]) == pytest.approx(math.exp(-0.5) - 0.5, abs=1e-12)
    out.loss.sum().backward()
    assert float(logp.grad) == pytest.approx(0.1 * (1 - math.exp(-0.5)), abs=1e-12)
    logp2 = T(-1.0).view(1, 1).requires_grad_()
    weighted = grpo_loss(logp2, mask, T(0.0), ref_logp=ref, beta=0.1, kl_importance_weight=True)
    assert float(weighted.loss.detach()) == pytest.approx(float(out.loss.detach()), abs=1e-12)
    weighted.loss.sum().backward()
    assert float(logp2.grad) == pytest.approx(0.05, abs=1e-12)


def test_kl_is_reported_but_not_trained_when_beta_is_zero():
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = grpo_loss(T(-1.0, -1.0).view(1, 2), mask, T(0.0), ref_logp=T(-1.5, -1.0).view(1, 2))
    assert float(out.loss.detach()) == 0.0
    assert float(out.metrics["kl"]) == pytest.approx((math.exp(-0.5) - 0.5) / 2, abs=1e-12)


def test_argument_errors():
    logp, mask, adv = T(-1.0).view(1, 1), torch.ones(1, 1, dtype=torch.bool), T(1.0)
    with pytest.raises(ValueError, match="normalisation"):
        grpo_loss(logp, mask, adv, normalisation="bnpo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(logp, mask, adv, normalisation="dr_grpo")
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, mask, adv, beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        grpo_loss(logp, mask, adv, beta=-0.1, ref_logp=logp)
