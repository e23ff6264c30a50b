"""RLHF-PPO: per-token rewards with a KL penalty, the clipped surrogate and the clipped value loss.

Following Ziegler et al. 2019, Ouyang et al. 2022 and Huang et al. 2024 ("The N+ Implementation
Details of RLHF with PPO"):

    r_t = -β · kl_t                        every response token (kl_t: k1 or k3, align/objectives/kl.py)
    r_T += score                           at the last real token T (the reward model's score, or a
                                           programmatic reward), minus `missing_eos_penalty` when the
                                           response ended without EOS
    ρ_t = exp(log π_θ(y_t) - log π_old(y_t))
    L_pg = -min(ρ_t A_t, clip(ρ_t, 1-ε, 1+ε) A_t)                   (Schulman et al. 2017, Eq. 7)
    L_vf = ½ max((V_t - R_t)², (clip(V_t, V_old-ε_v, V_old+ε_v) - R_t)²)
    L    = L_pg + c_vf · L_vf - c_ent · H_t

Normalisation: every loss is a mean over the real response tokens of the minibatch on each
process (`token_mean_rows` turns it into per-row terms whose sum is that mean, for the loop's
per-example accounting); processes are then averaged by DDP, as the N+ reference does.

Worked example (ε = 0.2): A = 1, ρ = 1.5 → min(1.5, 1.2) = 1.2, loss -1.2 (clipped); A = -1,
ρ = 0.5 → min(-0.5, -0.8) = -0.8, loss 0.8 (clipped); A = -1, ρ = 1.5 → min(-1.5, -1.2) = -1.5,
loss 1.5 (not clipped: pessimistic bound).
"""

from __future__ import annotations

import torch

from align.objectives.advantages import masked_mean


def token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """[N, T] rewards: -β·kl on every real token, `score` [N] added at each row's last real token."""
    m = mask.to(kl.dtype)
    rewards = -beta * kl * m
    last = (m.sum(1).long() - 1).clamp(min=0)
    rows = torch.arange(kl.shape[0], device=kl.device)
    rewards[rows, last] += score.to(rewards.dtype)
    return rewards


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token (clipped surrogate loss, clipped?, approx-KL old→new = ½ (log ρ)²), each [N, T].

    ρ is clipped to [1 - clip, 1 + clip_high] (clip_high None: symmetric; DAPO's "clip-higher"
    sets it above `clip`); `math.inf` for both disables clipping."""
    high = clip if clip_high is None else clip_high
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + high)
    loss = torch.maximum(unclipped, clipped)
    return loss, (clipped > unclipped).float().detach(), 0.5 * log_ratio.detach() ** 2


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (clipped value loss, clipped?), each [N, T]; `clip` None: the plain squared error."""
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped)
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    clipped = (v_clipped - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).float().detach()


def token_mean_rows(x: torch.Tensor, mask: torch.Tensor, tokens: float, rows: float) -> torch.Tensor:
    """Per-row terms [N] whose sum, divided by `rows`, is the token mean of `x` over `tokens` real
    tokens (the whole minibatch, possibly spread over several micro-batches)."""
    return (x * mask.to(x.dtype)).sum(1) * (rows / max(tokens, 1.0))


def row_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row token mean [N] (metrics)."""
    return masked_mean(x, mask, dim=1)
