"""Metrics of the loop: per-example values summed on device, reduced across ranks once per log
line, and held-out evaluation that keeps every rank in step (sharded wrappers never hang).

NaN marks a metric that does not apply to an example; it is left out of that metric's mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from align.objectives.types import ObjectiveOutput, mean_metrics

Collate = Callable[[Sequence[int]], Any]
StepFn = Callable[[Any, bool], ObjectiveOutput]


def reduce_sums(
    accelerator, sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]
) -> tuple[dict[str, float], dict[str, float]]:
    """Sum per-rank sums and counts (per metric) across processes, in one all-reduce."""
    keys = sorted(sums)
    stacked = torch.stack([sums[k].float() for k in keys] + [counts[k].float() for k in keys])
    stacked = accelerator.reduce(stacked.to(accelerator.device), reduction="sum").tolist()
    return dict(zip(keys, stacked[: len(keys)])), dict(zip(keys, stacked[len(keys) :]))


def metric_values(sums: dict[str, float], counts: dict[str, float], per: float = 1.0) -> dict[str, float]:
    """Means over the examples where each metric is defined (NaN when none was); `count/*` metrics
    are totals, divided by `per` (the number of optimizer steps in a training window)."""
    out = {}
    for k, total in sums.items():
        if k.startswith("count/"):
            out[k] = total / per
        else:
            out[k] = total / counts[k] if counts[k] > 0 else float("nan")
    return out


def accumulate(
    sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor], merged: dict[str, torch.Tensor], w=None
) -> None:
    """Add per-example metrics (NaN = not applicable to that example), weighted by `w`."""
    for k, v in merged.items():
        defined = ~torch.isnan(v)
        weight = defined.float() if w is None else defined.float() * w.to(v.device)
        sums[k] = sums.get(k, 0) + (torch.where(defined, v, 0.0) * weight).sum()
        counts[k] = counts.get(k, 0) + weight.sum()


@dataclass
class EvalSet:
    """A held-out set: `collate(indices)` batches, scored by `step_fn(batch, False)`."""

    n: int
    collate: Collate
    step_fn: StepFn
    batch_size: int


@torch.no_grad()
def evaluate(accelerator, model: torch.nn.Module, ev: EvalSet, prefix: str = "eval") -> dict[str, float]:
    """Mean metrics over the whole held-out set; every rank runs the same number of batches
    (the last ones padded with weight-0 repeats) so sharded wrappers never hang."""
    if ev.n == 0:
        return {}
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, ev.n, world))
    per_rank = math.ceil(ev.n / world)
    weights = [1.0] * len(mine) + [0.0] * (per_rank - len(mine))
    mine = mine + [mine[0] if mine else 0] * (per_rank - len(mine))
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for start in range(0, per_rank, ev.batch_size):
        batch = ev.collate(mine[start : start + ev.batch_size]).to(accelerator.device)
        w = torch.tensor(weights[start : start + ev.batch_size])
        merged = {k: v.cpu() for k, v in mean_metrics([ev.step_fn(batch, False)]).items()}
        accumulate(sums, counts, merged, w)
    model.train(was_training)
    values = metric_values(*reduce_sums(accelerator, sums, counts))
    return {f"{prefix}/{k}": v for k, v in values.items()}
