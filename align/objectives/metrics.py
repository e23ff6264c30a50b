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


def mean_logratios(policy: PairLogps, reference: PairLogps) -> tuple[torch.Tensor, torch.Tensor]:
    """(π_c - ref_c, π_r - ref_r) on per-token-mean log-probs, each [B]. Policy and reference score
    the same completion tokens, so the policy's counts serve for both."""
    chosen_lr, rejected_lr = summed_logratios(policy, reference)
    return chosen_lr / policy.chosen.n_tokens, rejected_lr / policy.rejected.n_tokens


def chosen_nll(policy: PairLogps) -> torch.Tensor:
    """Per-pair NLL of the chosen completion, averaged over its tokens: -log π(c) / |c|, [B].

    Per sequence, as the RPO paper writes it (and ORPO's SFT term, completion tokens only). TRL 1.16
    takes one mean over the micro-batch instead: over its chosen completion tokens (DPOTrainer's "sft"
    loss, which equals this when chosen lengths match), or over its chosen rows' prompt AND completion
    tokens (ORPOTrainer, as the ORPO authors' code); either depends on how a step is split into
    micro-batches, which the loop's per-example losses never do.
    """
    return -policy.chosen.mean


def _reward_metrics(
    chosen: torch.Tensor, rejected: torch.Tensor, policy: PairLogps
) -> dict[str, torch.Tensor]:
    return {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": (chosen > rejected).float(),
        "logps/chosen": policy.chosen.sum.detach(),
        "logps/rejected": policy.rejected.sum.detach(),
    }


def pairwise_metrics(policy: PairLogps, reference: PairLogps, beta: float) -> dict[str, torch.Tensor]:
    """Detached per-example [B] metrics, sum-based implicit rewards as TRL reports them.

    rewards/chosen = β(π_c - ref_c), rewards/rejected = β(π_r - ref_r), margins = their difference,
    accuracies = 1.0 where the chosen reward is strictly larger, logps/* = policy summed log-probs.
    """
    with torch.no_grad():
        chosen_lr, rejected_lr = summed_logratios(policy, reference)
        return _reward_metrics(beta * chosen_lr.detach(), beta * rejected_lr.detach(), policy)


def reference_free_metrics(policy: PairLogps, scale: float) -> dict[str, torch.Tensor]:
    """The same keys as `pairwise_metrics` for objectives without a reference (SimPO, ORPO): the
    implicit reward is `scale` · per-token-mean policy log-prob, as TRL's CPO/ORPO trainers log it;
    logps/* stay the summed policy log-probs, comparable with every other method."""
    with torch.no_grad():
        return _reward_metrics(
            scale * policy.chosen.mean.detach(), scale * policy.rejected.mean.detach(), policy
        )
