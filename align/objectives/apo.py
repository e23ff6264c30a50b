"""APO-zero, D'Oosterlinck et al. 2024 ("Anchored Preference Optimization and Contrastive Revisions",
arXiv:2408.06266), Eq. 7; TRL 1.16's `loss_type="apo_zero"`, the preference stage of SmolLM3.

loss = (1 - σ(β (π_c - ref_c))) + σ(β (π_r - ref_r)), on log-ratios SUMMED over completion tokens.

Unlike DPO, which only moves the margin, each term is anchored to the reference on its own: the loss
falls only by raising the chosen likelihood and lowering the rejected one, for data whose chosen
answers are better than what the model produces now.
"""

from __future__ import annotations

import torch

from align.objectives.metrics import check_beta, pairwise_metrics, summed_logratios
from align.objectives.types import ObjectiveOutput, PairLogps


def apo_zero_loss(policy: PairLogps, reference: PairLogps, beta: float) -> ObjectiveOutput:
    """Per-pair APO-zero loss [B], in [0, 2]; 1 when policy == reference."""
    check_beta(beta)
    chosen_lr, rejected_lr = summed_logratios(policy, reference)
    loss = (1.0 - torch.sigmoid(beta * chosen_lr)) + torch.sigmoid(beta * rejected_lr)
    return ObjectiveOutput(loss=loss, metrics=pairwise_metrics(policy, reference, beta))
