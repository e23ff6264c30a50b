"""Parity with TRL 1.16's RLOOTrainer: its `_compute_loss` (loss and gradient) and the KL-in-reward
leave-one-out advantages of its `_generate_and_score_completions`, on the same per-token log-probs,
masks and rewards (tests/parity/trl_online.py feeds them in). fp32, atol 1e-5.

TRL's RLOO is our `rloo_loss(ratio="sequence", reduce="sum", clip=ε, clip_high=ε_high)` and
`rloo_advantages(kl=sequence_kl(old, ref, mask, "k1"), beta=β, whiten=normalize_advantages)`.

Documented differences from TRL 1.16 (asserted below):

* Clipping: TRL always clips the sequence ratio (ε = 0.2 by default); the paper does not clip
  (one on-policy update, where clipping is inert). Ours clips only when `clip` is given.
* Padding: TRL sums `per_token_logps * completion_mask`, so a non-finite value at a padded position
  (NaN · 0 = NaN) poisons the loss; ours selects real tokens (`torch.where`) and ignores it.
* k = 1: TRL returns zero advantages (it can only happen in evaluation); ours raise ValueError.
"""

from __future__ import annotations

import pytest
import torch
from trl import RLOOConfig, RLOOTrainer

from align.objectives.kl import sequence_kl
from align.objectives.rloo import rloo_advantages, rloo_loss
from tests.parity.trl_online import (
    EARLY_EOS,
    build_trainer,
    feed_logps,
    feed_rewards,
    generation_batch,
    loss_inputs,
    random_batch,
)

ATOL = 1e-5


def _trainer(tmp_path, **config):
    return build_trainer(
        RLOOTrainer,
        RLOOConfig,
        tmp_path,
        **{"num_generations": 3, "per_device_train_batch_size": 6, **config},
    )


def _trl_loss(trainer, b: dict) -> tuple[torch.Tensor, torch.Tensor]:
    logp = b["logp"].clone().requires_grad_()
    feed_logps(trainer, lambda call, n, t: logp)
    old_logps = (b["old"] * b["mask"]).sum(1)  # TRL keeps only the summed old log-probs
    loss = trainer._compute_loss(trainer.model, loss_inputs(b["mask"], b["adv"], old_logps=old_logps))
    loss.backward()
    return loss.detach(), logp.grad


@pytest.mark.parametrize(("epsilon", "epsilon_high"), [(0.2, None), (0.2, 0.28), (0.5, 1.0)])
@pytest.mark.parametrize("seed", [1, 2])
def test_loss_and_gradient_match_trl(tmp_path, epsilon, epsilon_high, seed):
    b = random_batch(seed)
    b["old"] = b["logp"] + (b["old"] - b["logp"]) / 4  # sequence ratios around [0.7, 1.5]
    trainer = _trainer(tmp_path, epsilon=epsilon, epsilon_high=epsilon_high)
    trl_loss, trl_grad = _trl_loss(trainer, b)
    logp = b["logp"].clone().requires_grad_()
    out = rloo_loss(logp, b["mask"], b["adv"], old_logp=b["old"], clip=epsilon, clip_high=epsilon_high)
    out.loss.mean().backward()
    torch.testing.assert_close(out.loss.detach().mean(), trl_loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(logp.grad, trl_grad, atol=1e-6, rtol=0)
    trl_clip = trainer._metrics["train"]["clip_ratio/region_mean"][-1]
    assert float(out.metrics["policy/clipfrac"].mean()) == pytest.approx(trl_clip, abs=1e-6)
    assert float(trl_grad.abs().max()) > 1e-3  # a comparison that could fail


def test_on_policy_matches_trl_and_is_reinforce(tmp_path):
    """old = current log-probs (TRL's first iteration): ρ = 1, TRL's loss is -mean(A) and its
    gradient -A_i / N on every real token: REINFORCE on the summed log-likelihood, as the paper."""
    b = random_batch(seed=3)
    b["old"] = b["logp"].clone()
    trl_loss, trl_grad = _trl_loss(_trainer(tmp_path), b)
    torch.testing.assert_close(trl_loss, -b["adv"].mean(), atol=ATOL, rtol=0)
    torch.testing.assert_close(trl_grad, (-b["adv"] / 6)[:, None] * b["mask"], atol=1e-7, rtol=0)
    logp = b["logp"].clone().requires_grad_()
    rloo_loss(logp, b["mask"], b["adv"]).loss.mean().backward()  # unclipped, old = logp.detach()
    torch.testing.assert_close(logp.grad, trl_grad, atol=1e-7, rtol=0)


def _trl_advantages(trainer, rewards: torch.Tensor, group_size: int, seed: int = 0):
    """TRL's advantages for fixed rewards, and the (old, ref) per-token log-probs it was handed."""
    g = torch.Generator().manual_seed(seed)
    handed = feed_logps(trainer, lambda call, n, t: -3 * torch.rand(n, t, generator=g))
    feed_rewards(trainer, rewards)
    out = trainer._generate_and_score_completions(generation_batch(group_size, len(rewards) // group_size))
    return out, handed


# Two groups of three: a spread group, then an equal-reward group (equal only while β = 0).
REWARDS = torch.tensor([1.0, 0.0, 0.5, 0.9, 0.9, 0.9])


@pytest.mark.parametrize("beta", [0.0, 0.05])
@pytest.mark.parametrize("whiten", [False, True])
def test_advantages_match_trl(tmp_path, beta, whiten):
    trainer = _trainer(tmp_path, beta=beta, normalize_advantages=whiten, generation_kwargs=EARLY_EOS)
    out, handed = _trl_advantages(trainer, REWARDS, 3)
    assert len(handed) == (2 if beta else 1)  # the sampling-time policy, then the reference
    mask = out["completion_mask"]
    assert 0 < int(mask.sum()) < mask.numel()  # padding after early EOS: the KL sums real tokens only
    kl = sequence_kl(handed[0], handed[1], mask) if beta else None
    ours, rewards = rloo_advantages(REWARDS, 3, kl=kl, beta=beta, whiten=whiten)
    torch.testing.assert_close(ours, out["advantages"], atol=ATOL, rtol=0)
    if beta:
        assert float(kl.abs().min()) > 1e-2  # the KL term really moved the rewards
    else:
        assert ours[3:].tolist() == [0.0] * 3
    assert float(ours.abs().max()) > 0.1
    torch.testing.assert_close(out["old_logps"], (handed[0] * mask).sum(1))


def test_nan_in_padding_poisons_trl_but_not_ours(tmp_path):
    b = random_batch(seed=4)
    assert not b["mask"][1, 1]
    b["logp"][1, 1] = float("nan")  # a padded position of row 1
    trl_loss, _ = _trl_loss(_trainer(tmp_path), b)
    assert torch.isnan(trl_loss)
    ours = rloo_loss(b["logp"], b["mask"], b["adv"], old_logp=b["old"], clip=0.2).loss
    assert torch.isfinite(ours).all()


def test_one_sample_per_prompt_trl_zero_ours_error(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.model.eval()
    trainer.num_generations_eval = 1
    out, _ = _trl_advantages(trainer, torch.tensor([1.0, -2.0, 0.5]), 1)
    assert out["advantages"].tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="k >= 2"):
        rloo_advantages(torch.tensor([1.0, -2.0, 0.5]), 1)
