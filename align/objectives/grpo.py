"""GRPO: group-normalised advantages, the clipped surrogate and a k3 KL term, with named normalisations.

Shao et al. 2024 (DeepSeekMath, arXiv 2402.03300). For a prompt with G sampled completions o_i:

    A_i     = (r_i - mean_g(r)) / (std_g(r) + eps)         outcome supervision, Sec. 4.1.2; the same
                                                           A_i on every token of o_i
    ρ_t     = π_θ(o_t) / π_old(o_t)
    L_t     = -min(ρ_t A_i, clip(ρ_t, 1 - ε_low, 1 + ε_high) A_i) + β D_t        Eq. 3
    D_t     = π_ref/π_θ - log(π_ref/π_θ) - 1 = k3 (align/objectives/kl.py)     Eq. 4

`scale` picks the advantage's denominator: "group" (the paper; std with Bessel's correction, as
TRL), "batch" (one std over the whole batch, TRL's "batch"), "none" (Dr. GRPO, Liu et al. 2025,
arXiv 2503.20783: no std, since dividing by it up-weights prompts whose rewards barely vary, the
too-easy and too-hard ones). A group whose
rewards are all equal, or a group of one, gets A = 0 exactly, never NaN. eps = 1e-4 as in TRL
(the paper does not state one).

The paper uses ε_low = ε_high; DAPO (Yu et al. 2025, arXiv 2503.14476, Sec. 3.1 "clip-higher")
raises ε_high (0.28). How L_t is reduced to the scalar loss is `normalisation`
(`GRPO_NORMALISATIONS`, the names a recipe and the manifest use):

    "sequence"  mean_i (1/|o_i|) Σ_t L_it      the paper's Eq. 3; TRL loss_type="grpo"
    "token"     Σ_i Σ_t L_it / Σ_i |o_i|       DAPO's token-level loss (Sec. 3.3); TRL "dapo" (over the
                                               whole update) and "bnpo" (over one micro-batch)
    "dr_grpo"   Σ_i Σ_t L_it / (N · L_max)     Dr. GRPO: a constant L_max = max_completion_length

The returned loss is per sequence [N], built so that `loss.sum() / rows` is the named scalar
(the loop divides the summed per-example loss by the examples per optimizer step); "token" needs
the update's token count `tokens` (and `rows`) when the update spans several micro-batches.

Worked example (ε = 0.2, β = 0, on-policy so ρ = 1): rewards [1, 0] in one group → mean 0.5, std
√0.5 = 0.707107 → A = ±0.5 / 0.707207 = ±0.707007. Rows of 1 and 3 real tokens: L = [-A], [A, A, A].
"sequence": (-A + A) / 2 = 0; "token": (-A + 3A) / 4 = 0.353503; "dr_grpo" with L_max = 4:
(-A + 3A) / (2 · 4) = 0.176752.
"""

from __future__ import annotations

from typing import Literal

import torch

from align.objectives.advantages import group_rows, masked_mean, zero_constant_groups
from align.objectives.kl import kl_k3
from align.objectives.ppo import policy_loss, row_mean, token_mean_rows
from align.objectives.types import ObjectiveOutput

GrpoNormalisation = Literal["sequence", "token", "dr_grpo"]
GrpoScale = Literal["group", "batch", "none"]

GRPO_NORMALISATIONS: dict[str, str] = {
    "sequence": "per-sequence token mean, then mean over sequences (Shao et al. 2024, Eq. 3; TRL 'grpo')",
    "token": "sum over all tokens of the update / its token count (DAPO, Yu et al. 2025; TRL 'dapo'/'bnpo')",
    "dr_grpo": "sum over tokens / (sequences * max_completion_length) (Dr. GRPO, Liu et al. 2025; TRL 'dr_grpo')",
}
GRPO_SCALES: dict[str, str] = {
    "group": "(r - group mean) / (group std + eps) (Shao et al. 2024, Sec. 4.1.2)",
    "batch": "(r - group mean) / (batch std + eps) (TRL scale_rewards='batch')",
    "none": "r - group mean (Dr. GRPO, Liu et al. 2025)",
}


def grpo_advantages(
    rewards: torch.Tensor, group_size: int, scale: GrpoScale = "group", eps: float = 1e-4
) -> torch.Tensor:
    """[N] advantages from [N] rewards in groups of `group_size` consecutive rows (see module doc)."""
    if scale not in GRPO_SCALES:
        raise ValueError(f"scale must be one of {sorted(GRPO_SCALES)}, got {scale!r}")
    grouped = group_rows(rewards, group_size)
    adv = grouped - grouped.mean(1, keepdim=True)
    if scale != "none":
        # Bessel's std (TRL's nanstd); for one sample it is undefined, and that group's A is 0 below.
        spread = grouped if scale == "group" else rewards.view(1, -1)
        std = spread.std(1, keepdim=True) if spread.shape[1] > 1 else torch.zeros_like(spread[:, :1])
        adv = adv / (std + eps)
    return zero_constant_groups(adv, grouped).reshape(-1)


def grpo_loss(
    logp: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    normalisation: GrpoNormalisation = "sequence",
    max_completion_length: int | None = None,
    tokens: float | None = None,
    rows: float | None = None,
    kl_importance_weight: bool = False,
) -> ObjectiveOutput:
    """Per-sequence GRPO loss [N] from per-token log-probs [N, T] of the completions.

    `old_logp` None: on-policy (ρ = 1, the value is detached from `logp`). `ref_logp` is needed
    when β > 0. `tokens` / `rows`: the real tokens and sequences of the whole update ("token" only;
    default this batch's). `kl_importance_weight`: multiply D_t by ρ_t (the DeepSeek-V3.2
    correction; TRL's default `use_bias_correction_kl=True`; not in the GRPO paper).
    Padding positions (mask False) contribute nothing, whatever their values (NaN included)."""
    if normalisation not in GRPO_NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {sorted(GRPO_NORMALISATIONS)}, got {normalisation!r}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the KL term is to the reference policy)")
    if normalisation == "dr_grpo" and not (max_completion_length and max_completion_length > 0):
        raise ValueError("normalisation 'dr_grpo' needs max_completion_length > 0 (its constant)")
    m = mask.bool()
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    logp = torch.where(m, logp, zero)  # padding garbage cannot reach the value or the gradient
    old = logp.detach() if old_logp is None else torch.where(m, old_logp, zero)
    adv = advantages.to(logp.dtype).unsqueeze(1)
    pg, clipped, approx_kl = policy_loss(logp, old, adv, epsilon_low, epsilon_high)
    per_token = pg
    kl = None
    if ref_logp is not None:
        kl = kl_k3(logp, torch.where(m, ref_logp, zero))
        if kl_importance_weight:
            kl = kl * torch.exp(logp - old)
        if beta > 0:
            per_token = per_token + beta * kl
    per_token = torch.where(m, per_token, zero)
    if normalisation == "sequence":
        loss = masked_mean(per_token, m, dim=1)
    elif normalisation == "token":
        n_tokens = float(m.sum()) if tokens is None else tokens
        n_rows = float(m.shape[0]) if rows is None else rows
        loss = token_mean_rows(per_token, m, n_tokens, n_rows)
    else:
        loss = per_token.sum(1) / max_completion_length
    metrics = {
        "policy/loss": row_mean(pg.detach(), m),
        "policy/clipfrac": row_mean(clipped, m),
        "policy/approx_kl": row_mean(approx_kl, m),
        "advantage": advantages.detach().to(logp.dtype),
        "completion_length": m.sum(1).to(logp.dtype),
    }
    if kl is not None:
        metrics["kl"] = row_mean(kl.detach(), m)
    return ObjectiveOutput(loss=loss, metrics=metrics)
