"""RLOO: REINFORCE with a leave-one-out baseline over k samples per prompt, the KL in the reward.

Ahmadian et al. 2024 ("Back to Basics: Revisiting REINFORCE Style Optimization for Learning from
Human Feedback in LLMs", arXiv 2402.14740), the RLOO estimator: for k completions y_i of a prompt,

    r_i = score_i - β · KL_i,    KL_i = Σ_t (log π_old(y_it) - log π_ref(y_it))    (k1, summed)
    b_i = (Σ_j r_j - r_i) / (k - 1)                 the mean reward of the *other* samples
    A_i = r_i - b_i
    ∇J  = (1/k) Σ_i A_i ∇ log π_θ(y_i | x),    log π_θ(y_i | x) = Σ_t log π_θ(y_it)

KL_i uses the log-probs at sampling time (π_old), so the reward is a constant of the update, as in
the paper and TRL. k = 1 is an error here (the baseline is undefined; a silent zero advantage
would train on nothing). A group of equal rewards gets A = 0 exactly.

The loss is written with the importance ratio so the same function serves several epochs on one
rollout (as TRL does; PPO-style clipping is *not* in the paper, which updates once, on-policy):

    ratio="sequence":  ρ_i = exp(Σ_t (log π_θ - log π_old))         one ratio per completion (TRL)
                       L_i = -min(ρ_i A_i, clip(ρ_i, 1 - ε_low, 1 + ε_high) A_i)
    ratio="token":     L_i = Σ_t -min(ρ_t A_i, clip(ρ_t, ...) A_i)   a PPO-style per-token clip

`reduce` is the normalisation over a completion's tokens ("sum" is the paper's sequence
log-likelihood; "mean" divides by the completion's length: with ratio="sequence" the ratio becomes
exp(mean log-ratio), GSPO's, Zheng et al. 2025). Sequences are averaged (`loss.mean()` is the
scalar). On-policy (ρ = 1) every variant's gradient is -A_i ∇ Σ_t log π_θ(y_it) (÷ |y_i| for
"mean"): REINFORCE. `clip=None` leaves ρ unclipped. On-policy the value of L is -A_i (-A_i |y_i|
for token ratios summed), not -A_i log π: the same gradient, a readable loss.

Worked example, k = 3, β = 0.5: scores [1, 2, 6], KL [0, 2, 0] → r = [1, 1, 6]; b = [(8-1)/2,
(8-1)/2, (8-6)/2] = [3.5, 3.5, 1]; A = [-2.5, -2.5, 5] (Σ A = 0).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from align.objectives.advantages import group_rows, zero_constant_groups
from align.objectives.ppo import policy_loss
from align.objectives.types import ObjectiveOutput

RlooRatio = Literal["sequence", "token"]
RlooReduce = Literal["sum", "mean"]

RLOO_RATIOS: dict[str, str] = {
    "sequence": "one importance ratio per completion, exp(reduced token log-ratio) (TRL RLOOTrainer)",
    "token": "per-token importance ratios and clipping, reduced per completion (PPO-style)",
}
RLOO_REDUCTIONS: dict[str, str] = {
    "sum": "sum over completion tokens, mean over completions (Ahmadian et al. 2024; TRL)",
    "mean": "mean over completion tokens, mean over completions",
}


def rloo_advantages(
    scores: torch.Tensor,
    group_size: int,
    kl: torch.Tensor | None = None,
    beta: float = 0.0,
    whiten: bool = False,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, rewards), each [N], for [N] scores in groups of `group_size` consecutive rows.

    `kl` [N]: the per-sequence KL to the reference (`align.objectives.kl.sequence_kl` of the
    sampling-time log-probs), subtracted with weight β. `whiten`: (A - mean) / (std + eps) over
    the whole batch (TRL's `normalize_advantages`; pass the global batch under data parallelism);
    equal-reward groups stay at exactly 0."""
    if group_size < 2:
        raise ValueError(f"RLOO needs k >= 2 samples per prompt (leave-one-out baseline), got k={group_size}")
    if beta and kl is None:
        raise ValueError("beta != 0 needs the per-sequence kl")
    rewards = scores if kl is None else scores - beta * kl
    grouped = group_rows(rewards, group_size)
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    adv = grouped - baseline
    if whiten:
        adv = (adv - adv.mean()) / (adv.std() + eps)
    return zero_constant_groups(adv, grouped).reshape(-1), rewards


def rloo_loss(
    logp: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    old_logp: torch.Tensor | None = None,
    clip: float | None = None,
    clip_high: float | None = None,
    ratio: RlooRatio = "sequence",
    reduce: RlooReduce = "sum",
) -> ObjectiveOutput:
    """Per-completion RLOO loss [N] from per-token log-probs [N, T] (see the module docstring).

    `old_logp` None: on-policy (ρ = 1). `clip` ε_low (None: no clipping), `clip_high` ε_high
    (None: = clip). Padding positions (mask False) contribute nothing, whatever their values."""
    if ratio not in RLOO_RATIOS:
        raise ValueError(f"ratio must be one of {sorted(RLOO_RATIOS)}, got {ratio!r}")
    if reduce not in RLOO_REDUCTIONS:
        raise ValueError(f"reduce must be one of {sorted(RLOO_REDUCTIONS)}, got {reduce!r}")
    if clip is None and clip_high is not None:
        raise ValueError("clip_high needs clip (the lower bound); clip=None disables clipping")
    low = math.inf if clip is None else clip
    high = clip_high if clip is not None else math.inf
    m = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    logp = torch.where(m, logp, zero)
    old = logp.detach() if old_logp is None else torch.where(m, old_logp, zero)
    n = m.sum(1).clamp(min=1).to(logp.dtype)
    adv = advantages.to(logp.dtype)
    if ratio == "sequence":
        log_ratio = (logp - old).sum(1)
        if reduce == "mean":
            log_ratio = log_ratio / n
        loss, clipped, _ = policy_loss(log_ratio, torch.zeros_like(log_ratio), adv, low, high)
        seq_ratio = torch.exp(log_ratio.detach())
    else:
        per_token, clipped_t, _ = policy_loss(logp, old, adv.unsqueeze(1), low, high)
        loss = torch.where(m, per_token, zero).sum(1)
        if reduce == "mean":
            loss = loss / n
        clipped = torch.where(m, clipped_t, zero).sum(1) / n
        seq_ratio = torch.where(m, torch.exp(logp - old).detach(), zero).sum(1) / n
    return ObjectiveOutput(
        loss=loss,
        metrics={
            "policy/clipfrac": clipped,
            "policy/ratio": seq_ratio,
            "advantage": adv.detach(),
            "completion_length": m.sum(1).to(logp.dtype),
        },
    )
