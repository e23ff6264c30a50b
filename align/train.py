"""Wire one run: recipe -> data -> model + adapter -> method -> loop -> run directory.

This is the only module that knows every piece; each piece knows only its inputs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from align.checkpoint import (
    TrainState,
    dumps_json,
    git_sha,
    list_checkpoints,
    load_checkpoint,
    package_versions,
    read_metrics,
    recover_dirs,
    save_adapter,
    set_aside_run,
    trim_metrics,
    write_text_atomic,
)
from align.data.batches import BatchPlan, collate_pairs
from align.data.prepare import PreparedData, prepare
from align.embedded import cache_dir
from align.errors import AlignError, RecipeError
from align.logprobs import SequenceScorer
from align.loop import EvalSet, LoopParts, evaluate, train, write_metrics
from align.methods import build_method
from align.models import TINY_NAME, add_lora, load_model, load_tokenizer
from align.recipe import ModelConfig, Recipe, dump_recipe
from align.reference import AdapterOffReference, MemoReference, fingerprint, precompute
from align.secrets import redact_obj

log = logging.getLogger("align.train")


def make_accelerator(r: Recipe):
    """`cpu=True` when CUDA is absent: otherwise a multi-process CPU launch silently trains
    unsynchronised copies (each process believes it is alone)."""
    from accelerate import Accelerator

    cpu = r.cpu if r.cpu is not None else not torch.cuda.is_available()
    trackers = []
    for t in r.log.trackers:
        if importlib.util.find_spec(t) is None:
            log.warning("log.trackers: %s asked for but not installed; skipping it", t)
            continue
        trackers.append(t)
    return Accelerator(cpu=cpu, log_with=trackers or None, project_dir=r.output_dir)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


def _scheduler(r: Recipe, optimizer, total: int):
    from transformers import get_scheduler

    warmup = (
        r.optim.warmup_steps if r.optim.warmup_steps is not None else math.ceil(r.optim.warmup_ratio * total)
    )
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[r.optim.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def _model_fingerprint(spec: ModelConfig, seed: int) -> str:
    path = Path(spec.name).expanduser()
    files = (
        sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in path.glob("*.safetensors"))
        if path.is_dir()
        else []
    )
    return fingerprint(spec.name, spec.dtype, spec.revision, files, seed if spec.name == TINY_NAME else None)


class RunDirError(AlignError):
    """A fresh run would overwrite an earlier run's outputs."""


def _occupied(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(run_dir.iterdir())


def _prepare_run_dir(run_dir: Path, accelerator, resume: bool, overwrite: bool) -> None:
    """Refuse to mix a fresh run into an earlier one; `overwrite` sets the earlier run aside whole.
    Every rank decides before the main process moves anything."""
    occupied = _occupied(run_dir)
    accelerator.wait_for_everyone()
    if occupied and not (resume or overwrite):
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(sorted(p.name for p in run_dir.iterdir())[:6])}); "
            "pass --resume to continue it, --overwrite to set it aside (renamed to "
            f"{run_dir.name}.prev-<time>) and start fresh, or choose another output_dir"
        )
    if accelerator.is_main_process:
        if occupied and overwrite and not resume:
            set_aside_run(run_dir)
        elif occupied:
            recover_dirs(run_dir / "checkpoints")
    accelerator.wait_for_everyone()


def resume_command(argv: list[str] | None = None, world: int = 1) -> str:
    """The command line that continues this run: the same arguments, plus --resume."""
    import shlex
    import sys

    argv = list(sys.argv if argv is None else argv)
    args = argv[argv.index("train") :] if "train" in argv else ["train", "RECIPE"]
    args = [a for a in args if a != "--overwrite"] + ([] if "--resume" in args else ["--resume"])
    launch = (
        ["accelerate", "launch", "--multi_gpu", "--num_processes", str(world), "-m", "align"]
        if world > 1
        else ["align"]
    )
    return shlex.join(launch + args)


def _completed(run_dir: Path, total: int) -> dict[str, Any] | None:
    """The summary of a run that already finished `total` steps (so a re-run can skip it)."""
    path = run_dir / "summary.json"
    if not path.exists() or not (run_dir / "adapter").is_dir():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("steps", 0) >= total else None


def run(r: Recipe, resume: bool | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train per the recipe; returns the final summary (also written to run_dir/summary.json).

    A fresh run refuses a non-empty output_dir unless `overwrite` (the earlier run is set aside
    whole); `resume` continues from the last checkpoint, and returns at once (`complete: True`)
    when the run already finished."""
    from accelerate.utils import set_seed

    run_dir = Path(r.output_dir)
    accelerator = make_accelerator(r)
    set_seed(r.seed)
    main = accelerator.is_main_process
    do_resume = bool(r.resume if resume is None else resume)
    _prepare_run_dir(run_dir, accelerator, do_resume, overwrite)

    tokenizer = load_tokenizer(r.model)
    data = prepare(r.data, tokenizer, accelerator)
    method = build_method(r)
    plan = BatchPlan(
        len(data.train),
        r.train.per_device_batch_size,
        accelerator.num_processes,
        r.train.gradient_accumulation_steps,
        r.seed,
    )
    if plan.steps_per_epoch == 0:
        raise RecipeError(
            f"{len(data.train)} training examples do not fill one optimizer step of "
            f"{plan.global_micro * plan.accumulation} examples; lower the batch size or accumulation"
        )
    total = r.train.max_steps or math.ceil(r.train.epochs * plan.steps_per_epoch)
    if do_resume and (done := _completed(run_dir, total)) is not None:
        log.info("%s already finished %d steps; nothing to resume", run_dir, done["steps"])
        return {**done, "complete": True, "accelerator": accelerator}

    base = load_model(r.model, seed=r.seed)
    peft_model = add_lora(base, r.lora)
    if r.model.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    scorer = SequenceScorer(peft_model, chunk_tokens=r.train.chunk_tokens, share_prompt=r.train.share_prompt)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=r.optim.lr,
        betas=tuple(r.optim.adam_betas),
        eps=r.optim.adam_eps,
        weight_decay=r.optim.weight_decay,
    )
    scheduler = _scheduler(r, optimizer, total)
    scorer, optimizer = accelerator.prepare(scorer, optimizer)

    pad = tokenizer.pad_token_id
    train_collate = lambda idx: collate_pairs([data.train[i] for i in idx], pad)
    eval_collate = lambda idx: collate_pairs([data.eval[i] for i in idx], pad)
    live_ref = AdapterOffReference(scorer, peft_model)
    ref_train = ref_eval = live_ref
    if r.reference == "precompute":
        key = f"{data.fingerprint}-{_model_fingerprint(r.model, r.seed)}"
        bs = r.train.eval_batch_size
        root = cache_dir() / "reference"
        ref_train = precompute(
            root / f"{key}-train.safetensors", len(data.train), train_collate, live_ref, accelerator, bs
        )
        ref_eval = precompute(
            root / f"{key}-eval.safetensors", len(data.eval), eval_collate, live_ref, accelerator, bs
        )

    def step_fn_for(reference, policy_is_reference: bool = False):
        def step_fn(batch, training: bool):
            ref = reference(batch)
            policy = ref if policy_is_reference else scorer(**batch.model_inputs())
            return method.loss(policy, ref, batch)

        return step_fn

    ref_eval = MemoReference(ref_eval)  # the held-out set is fixed: score it adapter-off once
    eval_set = EvalSet(len(data.eval), eval_collate, step_fn_for(ref_eval), r.train.eval_batch_size)
    eval_fn = lambda: evaluate(accelerator, scorer, eval_set)
    parts = LoopParts(
        accelerator=accelerator,
        model=scorer,
        peft_model=peft_model,
        optimizer=optimizer,
        scheduler=scheduler,
        plan=plan,
        collate=train_collate,
        step_fn=step_fn_for(ref_train),
        eval_fn=eval_fn,
        run_dir=run_dir,
        max_grad_norm=r.optim.max_grad_norm,
        eval_every=r.train.eval_every,
        save_every=r.train.save_every,
        keep_checkpoints=r.train.keep_checkpoints,
        log_every=r.train.log_every,
        progress=r.train.progress,
        max_bad_steps=r.train.max_bad_steps,
        describe=lambda idx: [str(data.train[i].get("origin", i)) for i in idx],
        resume_command=resume_command(world=accelerator.num_processes),
    )
    state = _start_state(run_dir, r, accelerator, parts, total, do_resume)
    manifest = _manifest(r, data, method, accelerator, total)
    if main:
        write_text_atomic(run_dir / "recipe.yaml", dump_recipe(r))
        write_text_atomic(run_dir / "manifest.json", dumps_json(manifest, indent=1))
    accelerator.init_trackers(r.log.project, config=redact_obj(_flat(r.to_dict())))

    try:
        before = _before_metrics(run_dir) if state.step > 0 else {}
        if state.step == 0 and r.report.eval_before:
            # A fresh LoRA adapter (B = 0) leaves the base unchanged: the policy *is* the reference.
            fresh = replace(eval_set, step_fn=step_fn_for(ref_eval, policy_is_reference=True))
            before = evaluate(accelerator, scorer, fresh)
            write_metrics(parts, 0, before)
        train(parts, state)
        after = eval_fn()
        write_metrics(parts, state.step, after)
        summary = {
            "steps": state.step,
            "skipped_steps": state.skipped_steps,
            "before": before,
            "after": after,
            "examples": {"train": len(data.train), "eval": len(data.eval)},
        }
        save_adapter(run_dir, accelerator.unwrap_model(scorer).model, accelerator)
        if main:
            write_text_atomic(run_dir / "summary.json", dumps_json(summary, indent=1))
        accelerator.wait_for_everyone()
    finally:
        accelerator.end_training()  # flush tracker events, also after an error or a clean stop
    summary["peft_model"] = peft_model
    summary["tokenizer"] = tokenizer
    summary["accelerator"] = accelerator
    return summary


def _start_state(
    run_dir: Path, r: Recipe, accelerator, parts: LoopParts, total: int, resume: bool
) -> TrainState:
    """Load the last checkpoint when resuming (trimming metrics logged after it), else a fresh state.
    Resuming a directory without a checkpoint sets its earlier outputs aside first."""
    main = accelerator.is_main_process
    ckpts = list_checkpoints(run_dir)
    if resume and ckpts:
        state = load_checkpoint(ckpts[-1], accelerator, parts.peft_model, parts.optimizer, parts.scheduler)
        state.total_steps = total
        log.info("resumed from %s (step %d of %d)", ckpts[-1], state.step, total)
        _warn_recipe_changes(run_dir / "recipe.yaml", r)
        if main:
            trim_metrics(run_dir / "metrics.jsonl", state.step, final_step=total)
        accelerator.wait_for_everyone()
        return state
    if resume and _occupied(run_dir):
        log.warning("resume asked for but %s has no checkpoint; starting fresh", run_dir)
        if main:
            set_aside_run(run_dir)
    if main:  # only now: a recipe, data or model error leaves no empty run directory behind
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return TrainState(total_steps=total)


def _before_metrics(run_dir: Path) -> dict[str, float]:
    """The held-out metrics logged before step 1, for the summary of a resumed run."""
    rows = [row for row in read_metrics(run_dir / "metrics.jsonl") if row["step"] == 0]
    return {k: v for row in rows for k, v in row.items() if k.startswith("eval/")}


def _warn_recipe_changes(saved: Path, r: Recipe) -> None:
    """Resuming under a different recipe is allowed (e.g. more steps) but never silent."""
    if not saved.exists():
        return
    before, now = _flat(yaml.safe_load(saved.read_text()) or {}), _flat(r.to_dict())
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k) and k != "resume")
    if changed:
        log.warning(
            "resuming with a recipe that differs from the run's recipe.yaml in: %s",
            ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})" for k in changed),
        )


def _manifest(r: Recipe, data: PreparedData, method, accelerator, total: int) -> dict[str, Any]:
    return {
        "align_run": 1,
        "method": r.method,
        "objective": method.manifest(),
        "reference": r.reference,
        "model": asdict(r.model),
        "lora": asdict(r.lora),
        "data": {
            "source": data.source,
            "fingerprint": data.fingerprint,
            "train_examples": len(data.train),
            "eval_examples": len(data.eval),
            "load": data.load_stats,
            "tokenize": data.token_stats,
        },
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "total_steps": total,
        "versions": package_versions(),
        "git_sha": git_sha(),
    }
