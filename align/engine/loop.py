"""The one training loop: accumulate, clip, step, evaluate, log, checkpoint. Method-agnostic.

It sees only a `step_fn(batch, train) -> ObjectiveOutput` and a `collate(indices) -> batch`;
what a method computes is the method's business. Gradient accumulation is explicit: each
micro-batch's loss is `sum(per-example loss) / examples per optimizer step` and DDP's all-reduce
is skipped (`no_sync`) until the last micro-batch, so per-device 1 x accumulation 8 equals 8 x 1.

Per optimizer step, one small all-reduce tells every rank whether any rank saw a non-finite loss
or gradient (the update is then skipped, counted and logged with the batch's record locations;
`max_bad_steps` in a row stop the run) and whether a stop signal arrived (see align/engine/interrupt.py).
Train metrics are averaged over the whole logging window, not just its last step.

A method with a rollout phase (PPO) supplies `phase(micro_indices) -> Phase`: the experience it
collected becomes several optimizer updates per loop step (its minibatch epochs), each with its
own divisor, plus per-example metrics of the phase itself. Without one, a step is one update over
the plan's micro-batches.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from align.data.batches import BatchPlan
from align.engine import zero
from align.engine.checkpoint import CheckpointError, TrainState, save_checkpoint
from align.engine.interrupt import StopRequest
from align.engine.metrics import Collate, StepFn, accumulate, metric_values, reduce_sums
from align.engine.sharding import full_tensor
from align.objectives.types import ObjectiveOutput, mean_metrics
from align.util.errors import Interrupted, TrainingError
from align.util.files import dumps_json
from align.util.memory import release_freed
from align.util.ranks import any_rank

log = logging.getLogger("align.loop")


@dataclass
class Update:
    """One optimizer update: micro-batches whose summed per-example losses are divided by `divisor`."""

    batches: Sequence[Any]
    divisor: float


@dataclass
class Phase:
    """What a rollout phase hands the loop for one step: its updates and its own metrics."""

    updates: list[Update]
    outputs: list[ObjectiveOutput] = field(default_factory=list)


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
    max_bad_steps: int = 3
    describe: Callable[[Sequence[int]], list[str]] | None = None  # example indices -> record locations
    resume_command: str = "align train RECIPE --resume"
    phase: Callable[[list[list[int]]], Phase] | None = None  # a rollout phase (PPO); None: plain steps
    extra_state: Callable[[], dict[str, torch.Tensor]] | None = None  # more state for checkpoints
    load_extra_state: Callable[[dict[str, torch.Tensor]], None] | None = None


def write_metrics(parts: LoopParts, step: int, metrics: dict[str, float]) -> None:
    """Append one strict-JSON line (non-finite values as null) and log to the trackers."""
    if not metrics:
        return
    acc = parts.accelerator
    if acc.is_main_process:
        try:
            with open(parts.run_dir / "metrics.jsonl", "a") as f:
                f.write(dumps_json({"step": step, **metrics}) + "\n")
        except OSError as e:
            raise CheckpointError(
                f"could not append to {parts.run_dir / 'metrics.jsonl'}: {e.strerror or e}"
            ) from None
    acc.log(metrics, step=step)


@dataclass
class Window:
    """Train metrics summed (on device, no host sync) over the steps since the last log line."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    counts: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: int = 0
    grad_norm: list[torch.Tensor] = field(default_factory=list)
    tokens: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def add(self, outputs: list[ObjectiveOutput], grad_norm: torch.Tensor | None = None) -> None:
        """Per-example metrics of one group of outputs (all with the same metric keys)."""
        if outputs:
            accumulate(self.sums, self.counts, mean_metrics(outputs))
        if grad_norm is not None:
            self.grad_norm.append(grad_norm.detach().float())

    def metrics(self, parts: LoopParts, state: TrainState) -> dict[str, float]:
        acc, plan = parts.accelerator, parts.plan
        out = {}
        if self.sums:
            values = metric_values(*reduce_sums(acc, self.sums, self.counts), per=max(self.steps, 1))
            out = {f"train/{k}": v for k, v in values.items()}
        out["train/lr"] = parts.scheduler.get_last_lr()[0]
        if self.grad_norm:
            out["train/grad_norm"] = float(torch.stack(self.grad_norm).mean())
        out["train/epoch"] = state.epoch + state.step_in_epoch / max(plan.steps_per_epoch, 1)
        out["train/skipped_steps"] = state.skipped_steps
        elapsed = time.perf_counter() - self.t0
        out["perf/tokens_per_s"] = self.tokens * acc.num_processes / max(elapsed, 1e-9)
        return out


def train(parts: LoopParts, state: TrainState) -> TrainState:
    """Run optimizer steps until `state.total_steps`; raises `Interrupted` after a clean stop and
    `TrainingError` after `max_bad_steps` consecutive non-finite steps."""
    acc, plan = parts.accelerator, parts.plan
    examples_per_step = plan.per_device * plan.accumulation
    clip = parts.max_grad_norm if parts.max_grad_norm is not None else float("inf")
    parts.model.train()
    bar = tqdm(
        total=state.total_steps,
        initial=state.step,
        desc="train",
        disable=not (parts.progress and acc.is_main_process),
        dynamic_ncols=True,
    )
    window, bad_run = Window(), 0
    with StopRequest() as stop:
        while state.step < state.total_steps:
            micro_idx = [
                plan.micro_batch(state.epoch, state.step_in_epoch, micro, acc.process_index)
                for micro in range(plan.accumulation)
            ]
            indices = [i for idx in micro_idx for i in idx]
            if parts.phase is None:
                phase = Phase([Update([parts.collate(idx) for idx in micro_idx], examples_per_step)])
            else:
                phase = parts.phase(micro_idx)
            t_update = time.perf_counter()
            stop_now = False
            for update in phase.updates:
                bad_run, stopping = _update(parts, state, window, update, indices, bad_run, stop, clip)
                stop_now = stop_now or stopping
                if bad_run >= parts.max_bad_steps:
                    break
            window.add(phase.outputs)
            if parts.phase is not None:
                window.add([_timing("time/update_s", time.perf_counter() - t_update)])
                release_freed()  # the update's activations, before the next rollout allocates
            window.steps += 1
            state.step += 1
            state.step_in_epoch += 1
            if state.step_in_epoch >= plan.steps_per_epoch:
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            bar.update(1)
            if bad_run >= parts.max_bad_steps:
                bar.close()
                raise TrainingError(_diverged_message(parts, state, bad_run))

            if state.step % parts.log_every == 0 or state.step == state.total_steps or stop_now:
                metrics = window.metrics(parts, state)
                window = Window()
                write_metrics(parts, state.step, metrics)
                if "train/loss" in metrics:
                    shown = {"loss": metrics["train/loss"]}
                    for key, name in (
                        ("rewards/accuracies", "acc"),
                        ("accuracy", "acc"),
                        ("reward_gap", "gap"),
                        ("score", "score"),
                        ("kl", "kl"),
                        ("kl_ref", "kl"),
                    ):
                        if f"train/{key}" in metrics:
                            shown[name] = metrics[f"train/{key}"]
                    bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()})
            if (
                parts.eval_fn
                and parts.eval_every
                and state.step % parts.eval_every == 0
                and state.step < state.total_steps
            ):
                write_metrics(parts, state.step, parts.eval_fn())
            saved = parts.save_every and state.step % parts.save_every == 0
            if saved or stop_now:
                with zero.gathered(zero.trainable(parts.optimizer)):  # ZeRO-3: heads and adapters whole
                    path = save_checkpoint(
                        parts.run_dir,
                        state,
                        acc,
                        parts.peft_model,
                        parts.optimizer,
                        parts.scheduler,
                        parts.keep_checkpoints,
                        extra=parts.extra_state() if parts.extra_state else None,
                    )
            if stop_now and state.step < state.total_steps:
                bar.close()
                raise Interrupted(
                    f"stopped by {signal.Signals(stop.signum).name if stop.signum else 'a signal on another rank'} "
                    f"after step {state.step} of {state.total_steps}; checkpoint {path}. "
                    f"Resume with: {parts.resume_command}"
                )
    bar.close()
    return state


def _timing(name: str, seconds: float) -> ObjectiveOutput:
    return ObjectiveOutput(loss=torch.tensor([float("nan")]), metrics={name: torch.tensor([seconds])})


def _update(
    parts: LoopParts,
    state: TrainState,
    window: Window,
    update: Update,
    indices: list[int],
    bad_run: int,
    stop,
    clip: float,
) -> tuple[int, bool]:
    """Accumulate `update`'s micro-batches, then step the optimizer (or skip a non-finite update).
    Returns (consecutive bad updates, whether any rank asked to stop)."""
    acc = parts.accelerator
    ds = zero.engine(acc)
    if ds is not None:
        return _update_deepspeed(parts, ds, state, window, update, indices, bad_run, stop)
    outputs: list[ObjectiveOutput] = []
    for k, cpu_batch in enumerate(update.batches):
        window.tokens += int(cpu_batch.attention_mask.sum())  # on the host: no device sync
        batch = cpu_batch.to(acc.device)
        last = k == len(update.batches) - 1
        sync = contextlib.nullcontext() if last or acc.num_processes == 1 else acc.no_sync(parts.model)
        with sync:
            out = parts.step_fn(batch, True)
            acc.backward(out.loss.sum() / update.divisor)
        outputs.append(out)
    # read after backward: FSDP2 leaves its root unit's parameters unsharded between a forward and
    # the next backward, so a list taken before the step can hold stand-ins that never get a grad
    # (a reward head sits in the root unit: its norm went missing and clipping differed)
    params = [p for p in parts.model.parameters() if p.requires_grad]
    grad_norm = full_tensor(acc.clip_grad_norm_(params, clip))  # FSDP: a replicated DTensor
    loss_sum = torch.stack([o.loss.detach().float().sum() for o in outputs]).sum()
    grad_ok = torch.isfinite(torch.as_tensor(grad_norm, device=loss_sum.device))
    # one all-reduce per update: every rank skips, and stops, at the same step
    bad_loss, bad_grad, stop_now = any_rank(
        torch.stack(
            [~torch.isfinite(loss_sum), ~grad_ok, torch.tensor(stop.requested, device=grad_ok.device)]
        )
    )
    bad = bad_loss or bad_grad
    if bad and not bad_loss and acc.scaler is not None:
        # fp16 loss-scale overflow: routine while the scale settles. The scaler's step skips
        # the update and lowers the scale; not a bad step.
        parts.optimizer.step()
        log.info("step %d: fp16 gradient overflow; update skipped, loss scale lowered", state.step + 1)
    elif bad:
        bad_run += 1
        state.skipped_steps += 1
        _report_bad_step(parts, state, indices, bad_run)
        if acc.scaler is not None:
            acc.scaler.update()  # clears its per-step unscale state (the next step would refuse)
    else:
        bad_run = 0
        parts.optimizer.step()
        window.add(outputs, grad_norm if parts.max_grad_norm is not None else None)
    with warnings.catch_warnings():  # torch warns when the very first update was skipped
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*optimizer.step")
        parts.scheduler.step()  # a skipped update still advances the schedule
    parts.optimizer.zero_grad(set_to_none=True)
    return bad_run, stop_now


def _update_deepspeed(
    parts: LoopParts, ds, state: TrainState, window: Window, update: Update, indices, bad_run: int, stop
) -> tuple[int, bool]:
    """`_update` when DeepSpeed's engine owns the step (align/engine/zero.py): the same divisor and
    boundaries, the engine's clipping and its skip of a non-finite step."""
    acc = parts.accelerator
    outputs: list[ObjectiveOutput] = []
    for k, cpu_batch in enumerate(update.batches):
        window.tokens += int(cpu_batch.attention_mask.sum())
        ds.set_gradient_accumulation_boundary(k == len(update.batches) - 1)
        out = parts.step_fn(cpu_batch.to(acc.device), True)
        ds.backward(out.loss.sum() / update.divisor, scale_wrt_gas=False)
        outputs.append(out)
    loss_sum = torch.stack([o.loss.detach().float().sum() for o in outputs]).sum()
    bad_loss, stop_now = any_rank(
        torch.stack([~torch.isfinite(loss_sum), torch.tensor(stop.requested, device=loss_sum.device)])
    )
    ds.step()  # reduce, clip, skip when the gradient norm is not finite, step
    skipped = bool(getattr(ds.optimizer, "overflow", False))
    fp16 = ds.fp16_enabled()
    if bad_loss and not skipped:
        raise TrainingError(
            f"step {state.step + 1}: non-finite loss, and DeepSpeed applied the update (it skips only "
            f"a non-finite gradient norm); {_last_checkpoint(parts)}. Resume from it with a lower optim.lr"
        )
    if skipped and fp16 and not bad_loss:
        log.info(
            "step %d: fp16 gradient overflow; DeepSpeed skipped the update, loss scale lowered",
            state.step + 1,
        )
    elif skipped:
        bad_run += 1
        state.skipped_steps += 1
        _report_bad_step(parts, state, indices, bad_run)
    else:
        bad_run = 0
        norm = ds.get_global_grad_norm()
        norm = torch.as_tensor(norm if norm is not None else float("nan"), dtype=torch.float32)
        window.add(outputs, norm if parts.max_grad_norm is not None else None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*optimizer.step")
        parts.scheduler.step()  # align's schedule, as without DeepSpeed (the engine has none)
    return bad_run, stop_now


def _report_bad_step(parts: LoopParts, state: TrainState, indices: list[int], bad_run: int) -> None:
    where = ", ".join(parts.describe(indices)) if parts.describe else f"examples {indices}"
    log.warning(
        "step %d: non-finite loss or gradient; update skipped (%d in a row, %d in all). Batch: %s",
        state.step + 1,
        bad_run,
        state.skipped_steps,
        where,
    )


def _last_checkpoint(parts: LoopParts) -> str:
    from align.engine.checkpoint import list_checkpoints

    ckpts = list_checkpoints(parts.run_dir)
    return f"the last good checkpoint is {ckpts[-1]}" if ckpts else "no checkpoint was written"


def _diverged_message(parts: LoopParts, state: TrainState, bad_run: int) -> str:
    last = _last_checkpoint(parts)
    return (
        f"stopped at step {state.step}: {bad_run} consecutive steps had a non-finite loss or gradient "
        f"(updates skipped; train.max_bad_steps={parts.max_bad_steps}); {last}. "
        "Lower optim.lr or beta, or look at the batches named in the log above."
    )
