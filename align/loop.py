"""The one training loop: accumulate, clip, step, evaluate, log, checkpoint. Method-agnostic.

It sees only a `step_fn(batch, train) -> ObjectiveOutput` and a `collate(indices) -> batch`;
what a method computes is the method's business. Gradient accumulation is explicit: each
micro-batch's loss is `sum(per-example loss) / examples per optimizer step` and DDP's all-reduce
is skipped (`no_sync`) until the last micro-batch, so per-device 1 x accumulation 8 equals 8 x 1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from align.checkpoint import TrainState, save_checkpoint
from align.data.batches import BatchPlan
from align.methods import mean_metrics
from align.objectives.types import ObjectiveOutput

log = logging.getLogger("align.loop")

StepFn = Callable[[Any, bool], ObjectiveOutput]
Collate = Callable[[Sequence[int]], Any]


@dataclass
class LoopParts:
    accelerator: Any
    model: torch.nn.Module  # the prepared (possibly DDP-wrapped) module that owns the parameters
    peft_model: torch.nn.Module  # for checkpointing the adapter
    optimizer: Any
    scheduler: Any
    plan: BatchPlan
    collate: Collate
    step_fn: StepFn
    eval_fn: Callable[[], dict[str, float]] | None
    run_dir: Path
    max_grad_norm: float | None
    eval_every: int
    save_every: int
    keep_checkpoints: int
    log_every: int
    progress: bool = True


def reduce_means(accelerator, sums: dict[str, torch.Tensor], count: torch.Tensor) -> dict[str, float]:
    """Sum per-rank sums and counts across processes; return global means."""
    keys = sorted(sums)
    stacked = torch.stack([sums[k].float() for k in keys] + [count.float()]).to(accelerator.device)
    stacked = accelerator.reduce(stacked, reduction="sum")
    total = stacked[-1].clamp(min=1)
    return {k: (stacked[i] / total).item() for i, k in enumerate(keys)}


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
    count = torch.zeros(())
    for start in range(0, per_rank, ev.batch_size):
        batch = ev.collate(mine[start : start + ev.batch_size]).to(accelerator.device)
        w = torch.tensor(weights[start : start + ev.batch_size])
        for k, v in mean_metrics([ev.step_fn(batch, False)]).items():
            sums[k] = sums.get(k, torch.zeros(())) + (v.cpu() * w).sum()
        count += w.sum()
    model.train(was_training)
    return {f"{prefix}/{k}": v for k, v in reduce_means(accelerator, sums, count).items()}


def write_metrics(parts: LoopParts, step: int, metrics: dict[str, float]) -> None:
    if not metrics:
        return
    acc = parts.accelerator
    if acc.is_main_process:
        with open(parts.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
    acc.log(metrics, step=step)


def train(parts: LoopParts, state: TrainState) -> TrainState:
    acc, plan = parts.accelerator, parts.plan
    examples_per_step = plan.per_device * plan.accumulation
    params = [p for p in parts.model.parameters() if p.requires_grad]
    parts.model.train()
    bar = tqdm(
        total=state.total_steps,
        initial=state.step,
        desc="train",
        disable=not (parts.progress and acc.is_main_process),
        dynamic_ncols=True,
    )
    t0, tokens = time.perf_counter(), 0
    while state.step < state.total_steps:
        outputs: list[ObjectiveOutput] = []
        for micro in range(plan.accumulation):
            idx = plan.micro_batch(state.epoch, state.step_in_epoch, micro, acc.process_index)
            batch = parts.collate(idx).to(acc.device)
            tokens += int(batch.attention_mask.sum())
            last = micro == plan.accumulation - 1
            sync = contextlib.nullcontext() if last or acc.num_processes == 1 else acc.no_sync(parts.model)
            with sync:
                out = parts.step_fn(batch, True)
                acc.backward(out.loss.sum() / examples_per_step)
            outputs.append(out)
        grad_norm = None
        if parts.max_grad_norm is not None:
            grad_norm = acc.clip_grad_norm_(params, parts.max_grad_norm)
        parts.optimizer.step()
        parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.step_in_epoch += 1
        if state.step_in_epoch >= plan.steps_per_epoch:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
        bar.update(1)

        if state.step % parts.log_every == 0 or state.step == state.total_steps:
            merged = mean_metrics(outputs)
            sums = {k: v.sum().cpu() for k, v in merged.items()}
            metrics = {
                f"train/{k}": v
                for k, v in reduce_means(acc, sums, torch.tensor(float(len(merged["loss"])))).items()
            }
            metrics["train/lr"] = parts.scheduler.get_last_lr()[0]
            if grad_norm is not None:
                metrics["train/grad_norm"] = float(grad_norm)
            metrics["train/epoch"] = state.epoch + state.step_in_epoch / max(plan.steps_per_epoch, 1)
            elapsed = time.perf_counter() - t0
            metrics["perf/tokens_per_s"] = tokens * acc.num_processes / max(elapsed, 1e-9)
            t0, tokens = time.perf_counter(), 0
            write_metrics(parts, state.step, metrics)
            bar.set_postfix(
                loss=f"{metrics['train/loss']:.4f}", acc=f"{metrics.get('train/rewards/accuracies', 0):.2f}"
            )
        if (
            parts.eval_fn
            and parts.eval_every
            and state.step % parts.eval_every == 0
            and state.step < state.total_steps
        ):
            write_metrics(parts, state.step, parts.eval_fn())
        if parts.save_every and state.step % parts.save_every == 0:
            save_checkpoint(
                parts.run_dir,
                state,
                acc,
                parts.peft_model,
                parts.optimizer,
                parts.scheduler,
                parts.keep_checkpoints,
            )
    bar.close()
    return state
