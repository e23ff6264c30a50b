"""Wire one run: recipe -> data -> model + adapter -> method -> loop -> run directory.

This is the only module that knows every piece; each piece knows only its inputs.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from align import precision
from align.checkpoint import dumps_json, git_sha, package_versions, save_adapter, write_text_atomic
from align.data.batches import BatchPlan, collate_pairs, collate_unpaired, kl_partners
from align.data.prepare import PreparedData, label_counts, prepare
from align.embedded import cache_dir
from align.errors import RecipeError
from align.logprobs import SequenceScorer
from align.loop import EvalSet, LoopParts, evaluate, train, write_metrics
from align.methods import build_method
from align.models import add_lora, compile_layers, disable_dropout, load_model, load_tokenizer
from align.precision import Precision
from align.recipe import Recipe, dump_recipe
from align.reference import AdapterOffReference, MemoReference, precompute, reference_cache_key
from align.run_dir import (
    before_metrics,
    completed_summary,
    flat,
    prepare_run_dir,
    resume_command,
    start_state,
)
from align.secrets import redact_obj
from align.sharding import fsdp_on_cpu, fsdp_units

log = logging.getLogger("align.train")


def make_accelerator(r: Recipe, prec: Precision):
    """`cpu=True` when CUDA is absent: otherwise a multi-process CPU launch silently trains
    unsynchronised copies (each process believes it is alone). The precision is passed explicitly
    (already reconciled with the launcher's, see align/precision.py)."""
    from accelerate import Accelerator

    cpu = r.cpu if r.cpu is not None else not torch.cuda.is_available()
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
        cpu=cpu, mixed_precision=prec.mixed_precision, log_with=trackers or None, project_dir=r.output_dir
    )


def _scheduler(r: Recipe, optimizer, total: int):
    from transformers import get_scheduler

    warmup = (
        r.optim.warmup_steps if r.optim.warmup_steps is not None else math.ceil(r.optim.warmup_ratio * total)
    )
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[r.optim.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def run(r: Recipe, resume: bool | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train per the recipe; returns the final summary (also written to run_dir/summary.json).

    A fresh run refuses a non-empty output_dir unless `overwrite` (the earlier run is set aside
    whole); `resume` continues from the last checkpoint, and returns at once (`complete: True`)
    when the run already finished."""
    from accelerate.utils import set_seed

    from align import preflight

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
    _check_launch(r, method, accelerator)
    want = {"pair": "pairwise", "unpaired": "unpaired"}.get(method.batch_kind)  # prompts: any source
    data = prepare(r.data, tokenizer, accelerator, want=want)
    if method.batch_kind == "prompts":  # PPO samples its own completions: the distinct prompts
        from align.ppo import unique_prompts

        data = replace(
            data, train=unique_prompts(data.train), eval=unique_prompts(data.eval)[: r.ppo.eval_prompts]
        )
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
    if do_resume and (done := completed_summary(run_dir, total)) is not None:
        log.info("%s already finished %d steps; nothing to resume", run_dir, done["steps"])
        return {**done, "complete": True, "accelerator": accelerator}

    base = load_model(model_spec, seed=r.seed)
    if r.model.disable_dropout:  # the base's dropout only (LoRA's stays): a deterministic reference
        disable_dropout(base)
    peft_model = add_lora(base, r.lora)
    if r.model.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    if r.train.compile and not compile_layers(base):
        raise RecipeError(f"train.compile: no decoder layer list found in {r.model.name}")
    wire = _wire_ppo if method.batch_kind == "prompts" else _wire_preference
    w = wire(r, method, data, tokenizer, accelerator, peft_model, total, plan, model_spec)
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
    manifest["fsdp_units"] = fsdp_units(w.model)  # one per decoder layer + the root, or []
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


@dataclass
class Wired:
    """What a method's wiring hands the loop and the end of the run."""

    model: torch.nn.Module  # Accelerate-prepared: owns the trainable parameters
    optimizer: Any
    scheduler: Any
    collate: Any
    step_fn: Any
    eval_fn: Callable[[], dict[str, float]]
    before_fn: Callable[[], dict[str, float]]  # held-out metrics before step 1
    save_final: Callable[[Path], Any]
    phase: Any = None
    extra_state: Any = None
    load_extra_state: Any = None


def rank_checksums(accelerator, model: torch.nn.Module) -> list[list[float]] | None:
    """[sum, sum of squares] of the trainable parameters on every rank: under DDP every rank must
    hold the same weights (a mismatch is logged). None when the parameters are sharded (FSDP)."""
    from torch.distributed.tensor import DTensor

    params = [p.detach() for p in model.parameters() if p.requires_grad]
    if any(isinstance(p, DTensor) for p in params):
        return None
    local = torch.stack(
        [sum(p.double().sum() for p in params), sum((p.double() ** 2).sum() for p in params)]
    ).to(accelerator.device)
    sums = accelerator.gather(local[None]).cpu().tolist()
    if any(row != sums[0] for row in sums):
        log.error("the ranks hold different weights after training: %s", sums)
    return sums


def _check_launch(r: Recipe, method, accelerator) -> None:
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP and (
        method.batch_kind == "prompts" or not method.needs_reference
    ):
        raise RecipeError(
            f"method '{r.method}' runs on one process or under DDP (several adapters and heads on one "
            "base are not FSDP-sharded yet); launch it without an FSDP config"
        )


def _optimizer(r: Recipe, module: torch.nn.Module, updates: int):
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=r.optim.lr,
        betas=tuple(r.optim.adam_betas),
        eps=r.optim.adam_eps,
        weight_decay=r.optim.weight_decay,
    )
    return optimizer, _scheduler(r, optimizer, updates)


def _wire_preference(r, method, data, tokenizer, accelerator, peft_model, total, plan, model_spec) -> Wired:
    """DPO-family, KTO and reward models: one update per step over the plan's micro-batches."""
    if hasattr(method, "scorer"):  # e.g. the reward model: scores, not log-probs
        scorer = method.scorer(peft_model, r.seed)
    else:
        scorer = SequenceScorer(
            peft_model,
            chunk_tokens=r.train.chunk_tokens,
            layout=r.train.layout,
            gradient_checkpointing=r.model.gradient_checkpointing,
        )
    optimizer, scheduler = _optimizer(r, scorer, total)
    scorer, optimizer = accelerator.prepare(scorer, optimizer)
    inner = accelerator.unwrap_model(scorer)
    pack = r.train.pack_tokens if getattr(inner, "layout", None) == "packed" else None
    train_collate, eval_collate = collators(r, method, data, tokenizer.pad_token_id, pack)
    if hasattr(inner, "verify"):
        # The fast log-prob paths must agree with the model's own logits (models that post-process
        # logits fall back); checked once, through the same wrapper and autocast as training.
        first = train_collate(plan.micro_batch(0, 0, 0, accelerator.process_index)).to(accelerator.device)
        inner.verify(first.model_inputs(), via=scorer)
    ref_train = ref_eval = None
    if method.needs_reference:
        live_ref = AdapterOffReference(scorer, peft_model)
        ref_train = ref_eval = live_ref
        if r.reference == "precompute":
            tokenize = {k: getattr(r.data, k) for k in ("max_length", "max_prompt_length", "chat_template")}
            key = reference_cache_key(
                model_spec, r.seed, data.fingerprint, accelerator.mixed_precision, tokenize
            )
            bs = r.train.eval_batch_size
            root = cache_dir() / "reference"
            ref_train = precompute(
                root / f"{key}-train.safetensors", len(data.train), train_collate, live_ref, accelerator, bs
            )
            ref_eval = precompute(
                root / f"{key}-eval.safetensors", len(data.eval), eval_collate, live_ref, accelerator, bs
            )
        ref_eval = MemoReference(ref_eval)  # the held-out set is fixed: score it adapter-off once

    def step_fn_for(reference, policy_is_reference: bool = False):
        def step_fn(batch, training: bool):
            ref = reference(batch) if reference is not None else None
            policy = ref if policy_is_reference else scorer(**batch.model_inputs())
            return method.loss(policy, ref, batch)

        return step_fn

    eval_set = EvalSet(len(data.eval), eval_collate, step_fn_for(ref_eval), r.train.eval_batch_size)
    derived = getattr(method, "derived", lambda m: {})

    def held_out(ev: EvalSet) -> dict[str, float]:
        metrics = evaluate(accelerator, scorer, ev)
        return {**metrics, **derived(metrics)}

    def before() -> dict[str, float]:
        if not method.needs_reference:
            return held_out(eval_set)
        # A fresh LoRA adapter (B = 0) leaves the base unchanged: the policy *is* the reference.
        return held_out(replace(eval_set, step_fn=step_fn_for(ref_eval, policy_is_reference=True)))

    extra = getattr(inner, "extra_state", None)
    return Wired(
        model=scorer,
        optimizer=optimizer,
        scheduler=scheduler,
        collate=train_collate,
        step_fn=step_fn_for(ref_train),
        eval_fn=lambda: held_out(eval_set),
        before_fn=before,
        save_final=lambda run_dir: save_adapter(
            run_dir, peft_model, accelerator, extra_files=getattr(inner, "save_files", dict)()
        ),
        extra_state=extra,
        load_extra_state=getattr(inner, "load_extra_state", None),
    )


def _wire_ppo(r, method, data, tokenizer, accelerator, peft_model, total, plan, model_spec) -> Wired:
    """PPO: a rollout phase per step, then its minibatch updates (align/ppo.py)."""
    from align.ppo import POLICY, VALUE, PPOModule, PPOPhase, PromptIndices, RewardSource, build_roles

    head, value_adapter, (reward_head, _) = build_roles(r, method, peft_model, r.output_dir)
    module = PPOModule(peft_model, head, value_adapter, r.ppo.temperature, r.train.chunk_tokens)
    optimizer, scheduler = _optimizer(r, module, total * method.updates_per_step)
    model, optimizer = accelerator.prepare(module, optimizer)
    reward = RewardSource(peft_model, reward_head, r.ppo, tokenizer, accelerator.device)
    phase = PPOPhase(
        r=r,
        method=method,
        accelerator=accelerator,
        model=model,
        module=accelerator.unwrap_model(model),
        reward=reward,
        tokenizer=tokenizer,
        prompts=data.train,
        eval_prompts=data.eval,
    )
    eval_set = EvalSet(
        len(data.eval), lambda idx: PromptIndices(list(idx)), phase.eval_step, r.train.eval_batch_size
    )
    held_out = lambda: evaluate(accelerator, model, eval_set)
    adapters = [POLICY] if value_adapter == POLICY else [POLICY, VALUE]
    return Wired(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        collate=None,
        step_fn=phase.step_fn,
        eval_fn=held_out,
        before_fn=held_out,
        save_final=lambda run_dir: save_adapter(
            run_dir, peft_model, accelerator, extra_files=phase.save_files(), adapters=adapters
        ),
        phase=phase,
        extra_state=phase.extra_state,
        load_extra_state=phase.load_extra_state,
    )


def collators(r: Recipe, method, data: PreparedData, pad: int, pack: int | None):
    """(train, eval) `collate(indices) -> batch` for the method's batch kind."""
    if method.batch_kind == "pair":
        return (
            lambda idx: collate_pairs([data.train[i] for i in idx], pad, pack_tokens=pack),
            lambda idx: collate_pairs([data.eval[i] for i in idx], pad, pack_tokens=pack),
        )
    report_classes(data.train, r, data.unpaired_from_pairs)

    def make(split: list[dict]):
        # a held-out set of one record borrows its KL completion from the training set
        pool = split if len(split) >= 2 else data.train
        partner = kl_partners(len(pool), r.seed)
        return lambda idx: collate_unpaired(
            [split[i] for i in idx],
            [pool[partner[i % len(pool)]]["completion_ids"] for i in idx],
            pad,
            r.data.max_length,
            pack_tokens=pack,
        )

    return make(data.train), make(data.eval)


def report_classes(examples: list[dict], r: Recipe, from_pairs: bool) -> None:
    """Class counts, and the paper's advice on the weights (Ethayarajh et al. 2024, Eq. 8)."""
    n_up, n_down = label_counts(examples)
    ratio = (r.desirable_weight * n_up) / max(r.undesirable_weight * n_down, 1e-12)
    log.info(
        "kto data: %d desirable, %d undesirable%s; lambda_D*n_D / (lambda_U*n_U) = %.3f",
        n_up,
        n_down,
        " (unpaired from pairs)" if from_pairs else "",
        ratio,
    )
    if not 1.0 <= ratio <= 4 / 3:
        log.warning(
            "kto: desirable_weight*n_desirable / (undesirable_weight*n_undesirable) = %.3f is outside the "
            "paper's [1, 4/3]; e.g. desirable_weight=%.3g or undesirable_weight=%.3g brings it to 1.15",
            ratio,
            1.15 * r.undesirable_weight * n_down / max(n_up, 1),
            r.desirable_weight * n_up / (1.15 * max(n_down, 1)),
        )


def _manifest(
    r: Recipe, data: PreparedData, method, accelerator, total: int, prec: Precision
) -> dict[str, Any]:
    return {
        "align_run": 1,
        "method": r.method,
        "objective": method.manifest(),
        "reference": r.reference,
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
