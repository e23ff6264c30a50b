"""Reward model: the Bradley-Terry pairwise loss on scalar scores.

Ouyang et al. 2022 (InstructGPT), Eq. 1; with a margin as in Touvron et al. 2023 (Llama 2), Eq. 2:

    loss = -log σ(r(x, y_c) - r(x, y_r) - m)

plus, optionally, TRL's `center_rewards_coefficient` term c · (r_c + r_r)² (Eisenstein et al.
2023), which keeps scores near zero so the PPO value head starts from a sensible scale.

Worked example: r_c = 1.5, r_r = 0.5, m = 0 → -log σ(1) = 0.313262; with m = 0.5 → -log σ(0.5) =
0.474077; with c = 0.01 add 0.01 · 2² = 0.04.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from align.objectives.types import ObjectiveOutput


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | float = 0.0,
    center_coef: float = 0.0,
) -> ObjectiveOutput:
    """Per-pair loss [B] from chosen / rejected scores [B]; `margin` scalar or [B].

    Metrics: `accuracy` (chosen strictly above rejected: a tie is not a correct ranking), the
    score `margin`, and the mean `chosen` / `rejected` scores."""
    diff = chosen - rejected
    loss = -F.logsigmoid(diff - margin)
    if center_coef:
        loss = loss + center_coef * (chosen + rejected) ** 2
    d = diff.detach()
    return ObjectiveOutput(
        loss=loss,
        metrics={
            "accuracy": (d > 0).float(),
            "margin": d,
            "scores/chosen": chosen.detach(),
            "scores/rejected": rejected.detach(),
        },
    )
