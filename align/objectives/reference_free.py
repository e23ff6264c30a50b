"""Reference-free pairwise objectives: SimPO and ORPO. Both score the policy alone on per-token-MEAN
log-probs, so training runs no reference forward at all (their method declares needs_reference=False).
`reference` is accepted for the registry's uniform signature and must be None.

* SimPO, Meng et al. 2024 (arXiv:2405.14734), Eq. 6: loss = -log σ(β π̄_c - β π̄_r - γ), π̄ = log π / |y|,
  γ the target reward margin. TRL 1.16: `trl.experimental.cpo.CPOTrainer`, `loss_type="simpo"`,
  `cpo_alpha=0` (CPO's default cpo_alpha=1 adds an NLL term SimPO does not have).
* ORPO, Hong et al. 2024 (arXiv:2403.07691), Eqs. 6-7: loss = NLL(c) + λ · -log σ(log odds_c - log odds_r),
  odds = P / (1 - P) with P = exp(π̄). Here β is ORPO's λ, as in TRL 1.16's
  `trl.experimental.orpo.ORPOConfig.beta`. The NLL is per pair, completion tokens only (metrics.chosen_nll;
  TRL: one mean over the micro-batch's chosen prompt + completion tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from align.objectives.metrics import check_beta, chosen_nll, reference_free_metrics
from align.objectives.types import ObjectiveOutput, PairLogps

# ORPO's log(1 - P) is -inf at P = 1 (a mean log-prob that rounds to 0), which makes the gradient NaN;
# mean log-probs are capped just below 0, far above any value a model that is not certain produces.
_MAX_MEAN_LOGP = -1e-6


def _no_reference(reference: PairLogps | None, name: str) -> None:
    if reference is not None:
        raise ValueError(
            f"{name} is reference-free: pass reference=None (a reference forward is wasted work)"
        )


def simpo_loss(policy: PairLogps, reference: None, beta: float, gamma: float = 0.5) -> ObjectiveOutput:
    """Per-pair SimPO loss [B]; γ ≥ 0 is the margin β π̄_c must exceed β π̄_r by (0 when policy-tied)."""
    check_beta(beta)
    _no_reference(reference, "simpo")
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    loss = -F.logsigmoid(beta * (policy.chosen.mean - policy.rejected.mean) - gamma)
    return ObjectiveOutput(loss=loss, metrics=reference_free_metrics(policy, beta))


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0 without cancellation (Mächler 2012: branch at -log 2)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(policy: PairLogps, reference: None, beta: float) -> ObjectiveOutput:
    """Per-pair ORPO loss [B]: NLL(c) + β · -log σ(log odds ratio), β = ORPO's λ.
    Also logs `nll` and `orpo/log_odds` (TRL's log_odds_chosen, per pair)."""
    check_beta(beta)
    _no_reference(reference, "orpo")
    c = policy.chosen.mean.clamp(max=_MAX_MEAN_LOGP)
    r = policy.rejected.mean.clamp(max=_MAX_MEAN_LOGP)
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    nll = chosen_nll(policy)
    loss = nll - beta * F.logsigmoid(log_odds)
    metrics = reference_free_metrics(policy, beta)
    metrics["nll"] = nll.detach()
    metrics["orpo/log_odds"] = log_odds.detach()
    return ObjectiveOutput(loss=loss, metrics=metrics)
