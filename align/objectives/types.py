"""Typed inputs and outputs shared by every objective (torch only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SeqLogps:
    """Per-sequence completion log-probabilities.

    `sum` is the sum of log p(token) over completion tokens; `n_tokens` the number of those tokens
    (float, > 0), so objectives can choose sum or per-token-mean normalisation.
    """

    sum: torch.Tensor  # [N]
    n_tokens: torch.Tensor  # [N]

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.n_tokens


@dataclass
class PairLogps:
    """Chosen and rejected log-probabilities for a batch of B pairs."""

    chosen: SeqLogps
    rejected: SeqLogps


@dataclass
class ObjectiveOutput:
    """Per-example loss [B] and per-example metrics (each [B]); the loop averages them."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


def mean_metrics(outputs: list[ObjectiveOutput]) -> dict[str, torch.Tensor]:
    """Concatenate per-example metrics (and loss) across micro-batches (the loop averages them)."""
    keys = outputs[0].metrics.keys()  # per example; NaN where a metric does not apply
    merged = {k: torch.cat([o.metrics[k].float() for o in outputs]) for k in keys}
    merged["loss"] = torch.cat([o.loss.detach().float() for o in outputs])
    return merged
