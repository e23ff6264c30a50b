"""Sigmoid DPO (with conservative label smoothing), its length-normalised and NLL-augmented
variants, and the hinge variant.

All act on the implicit-reward margin h = (π_c - ref_c) - (π_r - ref_r), where every term is the
log-probability SUMMED over completion tokens (no length normalisation), as in the DPO paper,
except length-normalised DPO, which uses per-token MEANS.

* DPO, Rafailov et al. 2023, Eq. 7: loss = -log σ(β h).
* cDPO, Mitchell 2023 ("A note on DPO with noisy preferences"): with label-flip rate ε,
  loss = -(1-ε) log σ(β h) - ε log σ(-β h). ε = 0 recovers DPO.
  Note: TRL 1.16's `loss_type="sigmoid"` silently ignores `label_smoothing` (only "robust"/"exo_pair"/
  "aot" read it); we apply it, so a recipe with label_smoothing > 0 really trains cDPO here.
* Hinge, SLiC (Zhao et al. 2023, Eq. 3) / RSO (Liu et al. 2023): loss = relu(1 - β h), TRL's "hinge";
  1/β acts as the margin.
* Length-normalised DPO, Tulu 3 (Lambert et al. 2024, arXiv:2411.15124, §5): loss = -log σ(β h̄) with
  h̄ = (π_c - ref_c)/|c| - (π_r - ref_r)/|r|; TRL 1.16's `loss_type="sigmoid_norm"`. The mean margin is
  ~|c| times smaller than the summed one, hence Tulu 3's β = 5 where DPO uses ~0.1.
* RPO, Pang et al. 2024 ("Iterative Reasoning Preference Optimization", arXiv:2404.19733): DPO + α·NLL(c),
  the NLL of the chosen completion normalised by its length, -π_c/|c|, per pair (α = 1 in the paper).
  TRL 1.16 spells it `loss_type=["sigmoid", "sft"]`, `loss_weights=[1, α]`, with one NLL mean over the
  micro-batch's chosen tokens instead (see metrics.chosen_nll).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from align.objectives.metrics import (
    check_beta,
    chosen_nll,
    mean_logratios,
    pairwise_metrics,
    summed_logratios,
)
from align.objectives.types import ObjectiveOutput, PairLogps


def _margin(policy: PairLogps, reference: PairLogps) -> torch.Tensor:
    chosen_lr, rejected_lr = summed_logratios(policy, reference)
    return chosen_lr - rejected_lr


def dpo_loss(
    policy: PairLogps, reference: PairLogps, beta: float, label_smoothing: float = 0.0
) -> ObjectiveOutput:
    """Per-pair sigmoid DPO / cDPO loss [B]; label_smoothing = assumed preference-flip rate ε ∈ [0, 0.5)."""
    check_beta(beta)
    if not 0.0 <= label_smoothing < 0.5:
        # ε = 0.5 makes the loss constant in h (no signal); ε > 0.5 would reverse the preferences.
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    logits = beta * _margin(policy, reference)
    loss = -(1.0 - label_smoothing) * F.logsigmoid(logits)
    if label_smoothing > 0.0:
        loss = loss - label_smoothing * F.logsigmoid(-logits)
    return ObjectiveOutput(loss=loss, metrics=pairwise_metrics(policy, reference, beta))


def dpo_norm_loss(policy: PairLogps, reference: PairLogps, beta: float) -> ObjectiveOutput:
    """Per-pair length-normalised DPO loss -log σ(β h̄) [B], h̄ on per-token-mean log-ratios (Tulu 3).
    Reported metrics stay sum-based, as for every DPO-family objective."""
    check_beta(beta)
    chosen_lr, rejected_lr = mean_logratios(policy, reference)
    loss = -F.logsigmoid(beta * (chosen_lr - rejected_lr))
    return ObjectiveOutput(loss=loss, metrics=pairwise_metrics(policy, reference, beta))


def rpo_loss(policy: PairLogps, reference: PairLogps, beta: float, alpha: float = 1.0) -> ObjectiveOutput:
    """Per-pair RPO loss [B]: sigmoid DPO (summed log-ratios) + α · per-token NLL of the chosen reply.
    The NLL term is also logged alone as `nll`."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 (0 is plain DPO), got {alpha}")
    out = dpo_loss(policy, reference, beta)
    nll = chosen_nll(policy)
    out.loss = out.loss + alpha * nll
    out.metrics["nll"] = nll.detach()
    return out


def hinge_loss(policy: PairLogps, reference: PairLogps, beta: float) -> ObjectiveOutput:
    """Per-pair SLiC/RSO hinge loss relu(1 - β h) [B]; zero once the margin exceeds 1/β."""
    check_beta(beta)
    loss = torch.relu(1.0 - beta * _margin(policy, reference))
    return ObjectiveOutput(loss=loss, metrics=pairwise_metrics(policy, reference, beta))
