"""PPO pieces against hand-computed values (the arithmetic is in each module's docstring)."""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives.advantages import explained_variance, gae, masked_mean, masked_var, masked_whiten
from align.objectives.kl import KLController, kl_k1, kl_k3
from align.objectives.ppo import policy_loss, row_mean, token_mean_rows, token_rewards, value_loss
from align.objectives.reward import bradley_terry_loss

T = lambda *v: torch.tensor(v, dtype=torch.float64)


def test_gae_docstring_example():
    """γ = 1, λ = 0.5, r = [0, 1], V = [0.5, 0.2] → A = [0.1, 0.8], R = [0.6, 1.0]."""
    adv, ret = gae(T(0.0, 1.0)[None], T(0.5, 0.2)[None], torch.ones(1, 2, dtype=torch.bool), 1.0, 0.5)
    torch.testing.assert_close(adv, T(0.1, 0.8)[None])
    torch.testing.assert_close(ret, T(0.6, 1.0)[None])


def test_gae_discount_and_masked_tail():
    """γ = 0.9, λ = 1, three tokens of which the last is padding (its reward and value ignored):
    δ1 = 1 + 0 - 0.4 = 0.6 (episode ends: V_2 masked to 0), δ0 = 0 + 0.9·0.4 - 0.3 = 0.06,
    A0 = δ0 + 0.9·δ1 = 0.6; returns A + V = [0.9, 1.0, 0]."""
    rewards, values = T(0.0, 1.0, 5.0)[None], T(0.3, 0.4, 9.0)[None]
    mask = torch.tensor([[True, True, False]])
    adv, ret = gae(rewards, values, mask, 0.9, 1.0)
    torch.testing.assert_close(adv, T(0.6, 0.6, 0.0)[None])
    torch.testing.assert_close(ret, T(0.9, 1.0, 0.0)[None])


def test_masked_statistics_and_whitening():
    x = T(1.0, 2.0, 3.0, 100.0)[None]
    mask = torch.tensor([[True, True, True, False]])
    assert float(masked_mean(x, mask)) == pytest.approx(2.0)
    assert float(masked_var(x, mask)) == pytest.approx(1.0)  # Bessel: ((1)+(0)+(1)) / 2
    w = masked_whiten(x, mask)
    torch.testing.assert_close(w, T(-1.0, 0.0, 1.0, 0.0)[None], atol=1e-6, rtol=0)
    kept = masked_whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(kept, T(1.0, 2.0, 3.0, 0.0)[None], atol=1e-6, rtol=0)


def test_kl_estimators():
    """d = log π - log π_ref = 0.5: k1 = 0.5, k3 = e^-0.5 - 1 + 0.5 = 0.106531; k3 >= 0 always."""
    logp, ref = T(-1.0, -3.0), T(-1.5, -1.0)
    torch.testing.assert_close(kl_k1(logp, ref), T(0.5, -2.0))
    k3 = kl_k3(logp, ref)
    assert float(k3[0]) == pytest.approx(math.exp(-0.5) - 1 + 0.5, abs=1e-12)
    assert float(k3[1]) == pytest.approx(math.exp(2.0) - 1 - 2.0, abs=1e-12)
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def test_kl_estimators_are_unbiased_on_samples():
    """E_{y~π}[k1] = E[k3] = KL(π||π_ref) for two categorical distributions (Monte Carlo)."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    q = torch.softmax(torch.randn(6, generator=g, dtype=torch.float64), 0)
    exact = float((p * (p / q).log()).sum())
    y = torch.multinomial(p, 200_000, replacement=True, generator=g)
    for fn in (kl_k1, kl_k3):
        assert float(fn(p.log()[y], q.log()[y]).mean()) == pytest.approx(exact, abs=0.01)


def test_adaptive_controller_docstring_example_and_direction():
    c = KLController(0.1, target=6.0, horizon=10000)
    assert c.update(9.0, 64) == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000), abs=1e-15)
    up = KLController(0.1, target=6.0, horizon=100)
    down = KLController(0.1, target=6.0, horizon=100)
    assert up.update(12.0, 10) > 0.1  # KL above target: a stronger penalty
    assert down.update(1.0, 10) < 0.1  # below: a weaker one
    assert KLController(0.1).update(100.0, 10) == 0.1  # fixed


def test_clipped_surrogate_docstring_cases():
    """ε = 0.2: (A=1, ρ=1.5) → -1.2 clipped; (A=-1, ρ=0.5) → 0.8 clipped; (A=-1, ρ=1.5) → 1.5."""
    old = T(0.0, 0.0, 0.0)
    logp = T(math.log(1.5), math.log(0.5), math.log(1.5))
    loss, clipped, approx = policy_loss(logp, old, T(1.0, -1.0, -1.0), 0.2)
    torch.testing.assert_close(loss, T(-1.2, 0.8, 1.5))
    assert clipped.tolist() == [1.0, 1.0, 0.0]
    torch.testing.assert_close(approx, 0.5 * logp**2)


def test_surrogate_gradient_raises_the_log_prob_of_a_good_token():
    logp = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    loss, _, _ = policy_loss(logp, torch.zeros(1, dtype=torch.float64), T(2.0), 0.2)
    loss.sum().backward()
    assert float(logp.grad) == pytest.approx(-2.0)  # descent raises logp


def test_value_loss_clipping():
    """V_old = 0, V = 1, R = 2, ε = 0.2: unclipped (1-2)² = 1, clipped (0.2-2)² = 3.24 → ½·3.24."""
    loss, clipped = value_loss(T(1.0), T(0.0), T(2.0), 0.2)
    torch.testing.assert_close(loss, T(1.62))
    assert clipped.tolist() == [1.0]
    plain, _ = value_loss(T(1.0), T(0.0), T(2.0), None)
    torch.testing.assert_close(plain, T(0.5))


def test_token_rewards_put_the_score_on_the_last_real_token():
    kl = T(0.1, 0.2, 0.3, 0.4).view(1, 4).repeat(2, 1)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    r = token_rewards(T(1.0, 2.0), kl, mask, 0.5)
    torch.testing.assert_close(r[0], T(-0.05, 1.0 - 0.1, 0.0, 0.0))
    torch.testing.assert_close(r[1], T(-0.05, -0.1, -0.15, 2.0 - 0.2))


def test_token_mean_rows_sum_to_the_minibatch_token_mean():
    """Two micro-batches of one minibatch (3 rows, 6 real tokens): Σ rows / 3 = mean over tokens."""
    x = T(1.0, 2.0, 3.0, 4.0).view(2, 2)
    a = token_mean_rows(x, torch.tensor([[True, True], [True, False]]), tokens=6, rows=3)
    b = token_mean_rows(T(5.0, 6.0)[None], torch.tensor([[True, True]]), tokens=6, rows=3)
    assert float((a.sum() + b.sum()) / 3) == pytest.approx((1 + 2 + 3 + 5 + 6) / 6 + 0 * 4)
    torch.testing.assert_close(row_mean(x, torch.tensor([[True, True], [True, False]])), T(1.5, 3.0))


def test_explained_variance():
    mask = torch.ones(1, 4, dtype=torch.bool)
    ret = T(1.0, 2.0, 3.0, 4.0)[None]
    assert float(explained_variance(ret, ret, mask)) == pytest.approx(1.0)
    assert float(explained_variance(torch.zeros_like(ret) + 2.5, ret, mask)) == pytest.approx(0.0)


def test_bradley_terry_docstring_example():
    """r_c = 1.5, r_r = 0.5: -log σ(1) = 0.313262; m = 0.5: 0.474077; c = 0.01 adds 0.04."""
    c, r = T(1.5), T(0.5)
    assert float(bradley_terry_loss(c, r).loss) == pytest.approx(0.313262, abs=1e-6)
    assert float(bradley_terry_loss(c, r, margin=0.5).loss) == pytest.approx(0.474077, abs=1e-6)
    assert float(bradley_terry_loss(c, r, center_coef=0.01).loss) == pytest.approx(0.353262, abs=1e-6)


def test_bradley_terry_accuracy_counts_ties_as_wrong_and_per_pair_margins():
    out = bradley_terry_loss(T(1.0, 0.0, -1.0), T(0.0, 0.0, 1.0), margin=T(0.0, 0.0, 1.0))
    assert out.metrics["accuracy"].tolist() == [1.0, 0.0, 0.0]
    torch.testing.assert_close(out.metrics["margin"], T(1.0, 0.0, -2.0))
    assert float(out.loss[2]) == pytest.approx(-math.log(1 / (1 + math.exp(3.0))), abs=1e-9)
