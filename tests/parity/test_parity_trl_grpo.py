"""Parity with TRL 1.16's GRPOTrainer: its `_compute_loss` (loss and gradient) and the advantages of
its `_generate_and_score_completions`, on the same per-token log-probs, masks and rewards
(tests/parity/trl_online.py feeds them in). fp32, atol 1e-5 on losses and advantages.

TRL loss_type → our normalisation: "grpo" → "sequence", "dr_grpo" → "dr_grpo", "dapo" → "token"
over the update's tokens (`tokens=`), "bnpo" → "token" over one micro-batch (our default `tokens`).
TRL scale_rewards → our `scale`: the same names ("group", "batch", "none").

Documented differences from TRL 1.16 (asserted below):

* KL gradient: TRL's default `use_bias_correction_kl=True` multiplies k3 by the ratio ρ (the
  DeepSeek-V3.2 correction). The value is unchanged on-policy, the gradient is not (β d instead of
  β (1 - e^-d) per token). Ours follows the GRPO paper by default; `kl_importance_weight=True`
  reproduces TRL's default.
* Defaults: TRL's loss_type "dapo", beta 0 and ε_high = ε; ours default to the paper's "sequence"
  normalisation (β is the caller's).
* Equal-reward groups: TRL divides the centred rewards, a rounding residue when the group mean is
  inexact, by std + 1e-4 = 1e-4; ours set such groups to exactly 0.
"""

from __future__ import annotations

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from align.objectives.grpo import grpo_advantages, grpo_loss
from tests.parity.trl_online import (
    build_trainer,
    feed_logps,
    feed_rewards,
    generation_batch,
    loss_inputs,
    random_batch,
)

ATOL = 1e-5
NORMALISATION = {"grpo": "sequence", "bnpo": "token", "dapo": "token", "dr_grpo": "dr_grpo"}
MAX_LEN = 8


def _trl_loss(trainer, b: dict, **extra) -> tuple[torch.Tensor, torch.Tensor]:
    logp = b["logp"].clone().requires_grad_()
    feed_logps(trainer, lambda call, n, t: logp)
    inputs = loss_inputs(
        b["mask"], b["adv"], old_per_token_logps=b["old"], ref_per_token_logps=b["ref"], **extra
    )
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), logp.grad


def _ours(b: dict, **kwargs) -> tuple[object, torch.Tensor]:
    logp = b["logp"].clone().requires_grad_()
    out = grpo_loss(logp, b["mask"], b["adv"], old_logp=b["old"], ref_logp=b["ref"], **kwargs)
    out.loss.mean().backward()
    return out, logp.grad


def _token_mean(row_values: torch.Tensor, mask: torch.Tensor) -> float:
    n = mask.sum(1).float()
    return float((row_values * n).sum() / n.sum())


@pytest.mark.parametrize("loss_type", sorted(NORMALISATION))
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_loss_gradient_and_metrics_match_trl(tmp_path, loss_type, beta, bias_correction):
    b = random_batch(seed=1)
    trainer = build_trainer(
        GRPOTrainer,
        GRPOConfig,
        tmp_path,
        loss_type=loss_type,
        beta=beta,
        epsilon=0.2,
        epsilon_high=0.28,
        use_bias_correction_kl=bias_correction,
        num_generations=2,
        per_device_train_batch_size=6,
        max_completion_length=MAX_LEN,
    )
    trl_loss, trl_grad = _trl_loss(trainer, b, num_items_in_batch=b["mask"].sum())
    out, grad = _ours(
        b,
        beta=beta,
        epsilon_low=0.2,
        epsilon_high=0.28,
        normalisation=NORMALISATION[loss_type],
        max_completion_length=MAX_LEN,
        kl_importance_weight=bias_correction,
    )
    torch.testing.assert_close(out.loss.detach().mean(), trl_loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(grad, trl_grad, atol=1e-6, rtol=0)
    assert float(trl_grad.abs().max()) > 1e-3  # a comparison that could fail
    metrics = trainer._metrics["train"]
    clip = _token_mean(out.metrics["policy/clipfrac"], b["mask"])
    assert 0 < clip < 1 and clip == pytest.approx(metrics["clip_ratio/region_mean"][-1], abs=1e-6)
    if beta:
        assert _token_mean(out.metrics["kl"], b["mask"]) == pytest.approx(metrics["kl"][-1], abs=ATOL)


def test_dapo_and_bnpo_over_two_micro_batches(tmp_path):
    """One accumulation window of two micro-batches of 3 rows (lengths [5, 1, 3] and [5, 2, 4]: 9 and
    11 real tokens): TRL "dapo" divides both by the window's 20 tokens = our "token" with tokens=20,
    rows=6; TRL "bnpo" divides each by its own count and by the 2 accumulation steps = our "token"
    with per-micro-batch defaults (micro-batches of equal size). The two differ."""
    b = random_batch(seed=2)
    halves = [{k: v[s] for k, v in b.items()} for s in (slice(0, 3), slice(3, 6))]
    total = int(b["mask"].sum())
    found = {}
    for loss_type in ("dapo", "bnpo"):
        trainer = build_trainer(
            GRPOTrainer,
            GRPOConfig,
            tmp_path,
            loss_type=loss_type,
            num_generations=3,
            per_device_train_batch_size=3,
        )
        trainer.current_gradient_accumulation_steps = 2
        trainer.args.steps_per_generation = 2  # the generation batch is this one window
        trl = sum(float(_trl_loss(trainer, h, num_items_in_batch=torch.tensor(total))[0]) for h in halves)
        per_micro = {"tokens": total, "rows": 6} if loss_type == "dapo" else {}
        ours = sum(
            float(
                grpo_loss(
                    h["logp"], h["mask"], h["adv"], old_logp=h["old"], normalisation="token", **per_micro
                ).loss.sum()
            )
            for h in halves
        )
        assert ours / 6 == pytest.approx(trl, abs=ATOL)
        found[loss_type] = trl
    assert abs(found["dapo"] - found["bnpo"]) > 1e-3


def test_trl_default_kl_gradient_is_not_the_papers(tmp_path):
    """TRL's defaults differ from the paper's: the KL gradient with use_bias_correction_kl (same value
    on-policy), loss_type "dapo", β 0."""
    defaults = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert defaults.use_bias_correction_kl is True and defaults.loss_type == "dapo" and defaults.beta == 0.0
    b = random_batch(seed=3)
    b["old"] = b["logp"].clone()  # on-policy
    paper, paper_grad = _ours(b, beta=0.04)
    trl_style, trl_grad = _ours(b, beta=0.04, kl_importance_weight=True)
    torch.testing.assert_close(paper.loss.detach(), trl_style.loss.detach())
    assert float((paper_grad - trl_grad).abs().max()) > 1e-4


def _trl_advantages(trainer, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    feed_rewards(trainer, rewards)
    out = trainer._generate_and_score_completions(generation_batch(group_size, len(rewards) // group_size))
    return out["advantages"]


# Four groups of three: equal rewards whose fp32 mean is inexact (mean([0.9] * 3) = 0.9 - 6e-8), a
# spread group, equal rewards with an exact mean, another spread group.
REWARDS = torch.tensor([0.9, 0.9, 0.9, 1.0, 0.0, 0.5, 2.0, 2.0, 2.0, -1.0, 3.0, 0.25])
EQUAL, SPREAD = [0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(tmp_path, scale):
    """Same advantages on the groups with a spread; on equal-reward groups ours are exactly 0 and
    TRL's at most a rounding residue (next test)."""
    trainer = build_trainer(
        GRPOTrainer,
        GRPOConfig,
        tmp_path,
        scale_rewards=scale,
        num_generations=3,
        per_device_train_batch_size=12,
    )
    trl = _trl_advantages(trainer, REWARDS, 3)
    ours = grpo_advantages(REWARDS, 3, scale=scale)
    torch.testing.assert_close(ours[SPREAD], trl[SPREAD], atol=ATOL, rtol=0)
    assert float(ours.abs().max()) > 0.1
    assert ours[EQUAL].tolist() == [0.0] * 6
    assert float(trl[EQUAL].abs().max()) < 1e-3


def test_equal_reward_group_residue_in_trl(tmp_path):
    """TRL, scale "group": the group [0.9, 0.9, 0.9] has std 0 and centred rewards of 6e-8 (the fp32
    mean's rounding), divided by 0 + 1e-4: every sample gets A = +6e-4, a push with no ranking behind
    it (harmless in size, but not the documented 0). The exactly-representable group is 0 in both."""
    assert float(REWARDS[:3].mean() - REWARDS[0]) != 0.0  # the residue is real in fp32
    trainer = build_trainer(
        GRPOTrainer, GRPOConfig, tmp_path, num_generations=3, per_device_train_batch_size=12
    )
    trl = _trl_advantages(trainer, REWARDS, 3)
    residue = float(REWARDS[0] - REWARDS[:3].mean()) / 1e-4
    torch.testing.assert_close(trl[:3], torch.full((3,), residue), atol=1e-6, rtol=0)
    assert abs(residue) > 1e-4
    assert trl[6:9].tolist() == [0.0] * 3
    assert grpo_advantages(REWARDS, 3)[:3].tolist() == [0.0, 0.0, 0.0]


def test_group_of_one_is_zero_in_both(tmp_path):
    """TRL handles one generation per prompt (evaluation only) with std 0 → advantage 0; so do we."""
    trainer = build_trainer(
        GRPOTrainer, GRPOConfig, tmp_path, num_generations=3, per_device_train_batch_size=12
    )
    trainer.model.eval()
    trainer.num_generations_eval = 1
    rewards = torch.tensor([1.0, -2.0, 0.5, 3.0])
    trl = _trl_advantages(trainer, rewards, 1)
    assert trl.tolist() == [0.0] * 4
    assert grpo_advantages(rewards, 1).tolist() == [0.0] * 4
