"""Masked statistics, whitening, generalised advantage estimation (GAE) for PPO, and the grouped
layout of RLOO / GRPO (k samples per prompt).

Tensors are [N, T] over response tokens; `mask` [N, T] marks real tokens (a response's length,
never `token != pad`). Values past a response's end must be zero so its last real token
bootstraps from 0 (the episode ends there).

GAE (Schulman et al. 2016, Eq. 16): δ_t = r_t + γ V_{t+1} - V_t, A_t = Σ_l (γλ)^l δ_{t+l};
returns R_t = A_t + V_t are the value targets. Worked example, one sequence of two tokens,
γ = 1, λ = 0.5, r = [0, 1], V = [0.5, 0.2]: δ = [0 + 0.2 - 0.5, 1 + 0 - 0.2] = [-0.3, 0.8],
A = [-0.3 + 0.5 · 0.8, 0.8] = [0.1, 0.8], R = [0.6, 1.0].

Grouped rewards [N] hold `group_size` = k consecutive samples per prompt (rows g·k … g·k + k - 1
belong to prompt g, TRL's `repeat_interleave` layout).
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased (Bessel-corrected) variance of the masked entries, as the PPO references use."""
    m = mask.to(x.dtype)
    n = m.sum()
    mean = (x * m).sum() / n.clamp(min=1)
    return ((x - mean) ** 2 * m).sum() / (n - 1).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / std over the masked entries (the mean added back when `shift_mean` is False:
    reward whitening keeps the sign of the rewards); masked-out entries are zero."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), each [N, T], zero past each response's end."""
    m = mask.to(values.dtype)
    rewards, values = rewards * m, values * m
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    steps = values.shape[1]
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        adv[:, t] = last
    adv = adv * m
    return adv, (adv + values) * m


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R) over real tokens: 1 is a perfect value function, <= 0 useless."""
    return 1 - masked_var(returns - values, mask) / masked_var(returns, mask).clamp(min=1e-8)


def group_rows(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """[N] → [N / k, k] view of k consecutive samples per prompt; a clear error on a bad layout."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if x.dim() != 1 or x.numel() % group_size:
        raise ValueError(
            f"expected [N] rewards with N a multiple of group_size={group_size}, got {tuple(x.shape)}"
        )
    return x.view(-1, group_size)


def zero_constant_groups(adv: torch.Tensor, grouped: torch.Tensor) -> torch.Tensor:
    """[G, k] advantages set to exactly 0 in groups whose k rewards are all equal (incl. k = 1):
    such a group ranks nothing, and its centred reward can otherwise be a rounding residue
    (mean([0.1] * 3) != 0.1 in floating point) that a 1/(std + eps) scale blows up."""
    constant = grouped.amax(1, keepdim=True) == grouped.amin(1, keepdim=True)
    return adv.masked_fill(constant, 0.0)
