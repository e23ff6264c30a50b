"""Shared pieces of every pairwise objective: the log-ratio margin and the logged metrics.

One helper computes the metrics so DPO, IPO, hinge (and later variants) report identical, comparable
numbers regardless of how each loss normalises internally.
"""

from __future__ import annotations

import torch

from align.objectives.types import PairLogps


def check_beta(beta: float) -> None:
    """β is a KL-strength (DPO) or a target margin 1/(2β) (IPO); both need β > 0."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def summed_logratios(policy: PairLogps, reference: PairLogps) -> tuple[torch.Tensor, torch.Tensor]:
    """(π_c - ref_c, π_r - ref_r) on summed completion log-probs, each [B]."""
    return policy.chosen.sum - reference.chosen.sum, policy.rejected.sum - reference.rejected.sum


def pairwise_metrics(policy: PairLogps, reference: PairLogps, beta: float) -> dict[str, torch.Tensor]:
    """Detached per-example [B] metrics, sum-based implicit rewards as TRL reports them.

    rewards/chosen = β(π_c - ref_c), rewards/rejected = β(π_r - ref_r), margins = their difference,
    accuracies = 1.0 where the chosen reward is strictly larger, logps/* = policy summed log-probs.
    """
    with torch.no_grad():
        chosen_lr, rejected_lr = summed_logratios(policy, reference)
        chosen = beta * chosen_lr.detach()
        rejected = beta * rejected_lr.detach()
        return {
            "rewards/chosen": chosen,
            "rewards/rejected": rejected,
            "rewards/margins": chosen - rejected,
            "rewards/accuracies": (chosen > rejected).float(),
            "logps/chosen": policy.chosen.sum.detach(),
            "logps/rejected": policy.rejected.sum.detach(),
        }
