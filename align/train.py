"""Wire one run: recipe -> data -> model + adapter -> method -> loop -> run directory.

This is the only module that knows every piece; each piece knows only its inputs.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from align.data.batches import BatchPlan
from align.data.prepare import PreparedData, label_counts, prepare
from align.engine import precision, zero
from align.engine.checkpoint import git_sha, package_versions
from align.engine.loop import LoopParts, train, write_metrics
from align.engine.precision import Precision
from align.engine.run_dir import (
    before_metrics,
    completed_summary,
    flat,
    prepare_run_dir,
    resume_command,
    start_state,
)
from align.engine.sharding import fsdp_on_cpu, fsdp_units
from align.methods import build_method, check_recipe
from align.models.earlier_run import check_continue, continue_from, resolve_chain
from align.models.load import add_lora, compile_layers, disable_dropout, load_model, load_tokenizer
from align.recipe import Recipe, dump_recipe
from align.util.errors import RecipeError
from align.util.files import dumps_json, write_text_atomic
from align.util.secrets import redact_obj

log = logging.getLogger("align.train")


def make_accelerator(r: Recipe, prec: Precision):
    """`cpu=True` when CUDA is absent: otherwise a multi-process CPU launch silently trains
    unsynchronised copies (each process believes it is alone). The precision is passed explicitly
    (already reconciled with the launcher's, see align/engine/precision.py)."""
    from accelerate import Accelerator

    cpu = r.cpu if r.cpu is not None else not torch.cuda.is_available()
    extra = zero.accelerator_kwargs(torch.cuda.is_available()) if zero.deepspeed_launch() else {"cpu": cpu}
    trackers = []
    for t in r.log.trackers:
        if importlib.util.find_spec(t) is None:
            log.warning("log.trackers: %s asked for but not installed; skipping it", t)
            continue
        trackers.append(t)
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != prec.mixed_precision:
        # An earlier run in this process fixed another precision; Accelerate would refuse. Reset
        # its per-run state only (the process group, PartialState, stays).
        AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision=prec.mixed_precision, log_with=trackers or None, project_dir=r.output_dir, **extra
    )


def run(r: Recipe, resume: bool | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train per the recipe; returns the final summary (also written to run_dir/summary.json).

    A fresh run refuses a non-empty output_dir unless `overwrite` (the earlier run is set aside
    whole); `resume` continues from the last checkpoint, and returns at once (`complete: True`)
    when the run already finished."""
    from accelerate.utils import set_seed

    from align.engine import preflight

    check_recipe(r, "recipe")  # the method's own keys (load_recipe checked them too)
    if r.model.adapter is not None:  # recorded absolute: evals and later runs find it from anywhere
        r = replace(r, model=replace(r.model, adapter=str(Path(r.model.adapter).expanduser().resolve())))
        if Path(r.model.adapter) == Path(r.output_dir).expanduser().resolve():
            raise RecipeError(
                "model.adapter: is this run's own output_dir; start from another run's directory"
            )
    chain = resolve_chain(r.model.name, r.model.revision, r.seed, r.model.adapter)  # checks, no load
    if r.model.adapter_mode == "continue":
        check_continue(chain, r.lora)
    preflight.check(r)  # before anything loads: output_dir, LoRA target modules, attention (cached)
    run_dir = Path(r.output_dir)
    prec = precision.from_recipe(r)
    model_spec = replace(r.model, dtype=prec.base_dtype)  # "auto" resolved: loading and cache keys
    accelerator = make_accelerator(r, prec)
    fsdp_on_cpu(accelerator)  # Accelerate ignores an FSDP launch when cpu=True
    set_seed(r.seed)
    main = accelerator.is_main_process
    do_resume = bool(r.resume if resume is None else resume)
    prepare_run_dir(run_dir, accelerator, do_resume, overwrite)

    tokenizer = load_tokenizer(r.model)
    method = build_method(r)
    want = {"pair": "pairwise", "unpaired": "unpaired", "prompts": "prompts", "sft": "sft"}[method.batch_kind]
    data = prepare(r.data, tokenizer, accelerator, want=want)  # prompts: those of a source of any format
    if hasattr(method, "data_view"):  # e.g. PPO samples its own completions: the distinct prompts
        data = method.data_view(data)
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
    zero.configure(accelerator, plan.per_device, plan.accumulation, r.optim.max_grad_norm)  # DeepSpeed only
    if do_resume and (done := completed_summary(run_dir, total)) is not None:
        log.info("%s already finished %d steps; nothing to resume", run_dir, done["steps"])
        return {**done, "complete": True, "accelerator": accelerator}

    base = load_model(model_spec, seed=r.seed)
    if r.model.disable_dropout:  # the base's dropout only (LoRA's stays): a deterministic reference
        disable_dropout(base)
    peft_model = add_lora(base, r.lora)
    if r.model.adapter_mode == "continue":  # the earlier adapter trains on; a frozen copy is the reference
        continue_from(peft_model, chain[-1])
    if r.model.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    if r.train.compile and not compile_layers(base):
        raise RecipeError(f"train.compile: no decoder layer list found in {r.model.name}")
    w = method.wire(r, data, tokenizer, accelerator, peft_model, total, plan, model_spec)
    parts = LoopParts(
        accelerator=accelerator,
        model=w.model,
        peft_model=peft_model,
        optimizer=w.optimizer,
        scheduler=w.scheduler,
        plan=plan,
        collate=w.collate,
        step_fn=w.step_fn,
        eval_fn=w.eval_fn,
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
        phase=w.phase,
        extra_state=w.extra_state,
        load_extra_state=w.load_extra_state,
    )
    state = start_state(run_dir, r, accelerator, parts, total, do_resume)
    manifest = _manifest(r, data, method, accelerator, total, prec)
    manifest["start_from"] = [link.manifest() for link in chain]  # oldest first
    manifest["start_mode"] = r.model.adapter_mode if chain else None  # continue: the last one trains on
    manifest["fsdp_units"] = fsdp_units(w.model)  # one per decoder layer + the root, or []
    manifest["zero_stage"] = zero.zero_stage(accelerator)  # DeepSpeed, else None
    manifest["zero_partitioned"] = zero.partitioned(w.model)  # ZeRO-3 holds slices of the weights
    if main:
        write_text_atomic(run_dir / "recipe.yaml", dump_recipe(r))
        write_text_atomic(run_dir / "manifest.json", dumps_json(manifest, indent=1))
    accelerator.init_trackers(r.log.project, config=redact_obj(flat(r.to_dict())))

    try:
        before = before_metrics(run_dir) if state.step > 0 else {}
        if state.step == 0 and r.report.eval_before:
            before = w.before_fn()
            write_metrics(parts, 0, before)
        train(parts, state)
        after = w.eval_fn()
        write_metrics(parts, state.step, after)
        summary = {
            "steps": state.step,
            "skipped_steps": state.skipped_steps,
            "before": before,
            "after": after,
            "examples": {"train": len(data.train), "eval": len(data.eval)},
            "rank_checksums": rank_checksums(accelerator, w.model),
        }
        with zero.gathered(zero.trainable(w.optimizer)):  # ZeRO-3: what is saved, whole
            w.save_final(run_dir)
        if main:
            write_text_atomic(run_dir / "summary.json", dumps_json(summary, indent=1))
        accelerator.wait_for_everyone()
    finally:
        accelerator.end_training()  # flush tracker events, also after an error or a clean stop
    summary["peft_model"] = peft_model
    summary["tokenizer"] = tokenizer
    summary["accelerator"] = accelerator
    return summary


def rank_checksums(accelerator, model: torch.nn.Module) -> list[list[float]] | None:
    """[sum, sum of squares] of the trainable parameters on every rank: under DDP every rank must
    hold the same weights (a mismatch is logged). None when the parameters are sharded (FSDP, ZeRO-3)."""
    from torch.distributed.tensor import DTensor

    params = [p.detach() for p in model.parameters() if p.requires_grad]
    if any(isinstance(p, DTensor) for p in params) or zero.partitioned(model):
        return None
    local = torch.stack(
        [sum(p.double().sum() for p in params), sum((p.double() ** 2).sum() for p in params)]
    ).to(accelerator.device)
    sums = accelerator.gather(local[None]).cpu().tolist()
    if any(row != sums[0] for row in sums):
        log.error("the ranks hold different weights after training: %s", sums)
    return sums


def _manifest(
    r: Recipe, data: PreparedData, method, accelerator, total: int, prec: Precision
) -> dict[str, Any]:
    return {
        "align_run": 1,
        "method": r.method,
        "objective": method.manifest(),
        "reference": r.reference if method.needs_reference else "none",
        "model": asdict(r.model),
        "precision": prec.manifest(),
        "lora": asdict(r.lora),
        "data": {
            "source": data.source,
            "fingerprint": data.fingerprint,
            "train_examples": len(data.train),
            "eval_examples": len(data.eval),
            "load": data.load_stats,
            "tokenize": data.token_stats,
            **(
                {
                    "labels": dict(
                        zip(("desirable", "undesirable"), label_counts(data.train)),
                        from_pairs=data.unpaired_from_pairs,
                    )
                }
                if method.batch_kind == "unpaired"
                else {}
            ),
        },
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "total_steps": total,
        "versions": package_versions(),
        "git_sha": git_sha(),
    }
