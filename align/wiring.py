"""How each kind of method is wired to the loop: its module, optimizer, batches, step, evaluation
and final save. `align.train.run` does what every run shares and picks one of these.

Preference methods (DPO family, KTO, the reward model) run one update per step over the plan's
micro-batches; PPO adds a rollout phase (align/ppo.py) whose experience becomes several updates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from align.checkpoint import save_adapter
from align.data.batches import collate_pairs, collate_unpaired, kl_partners
from align.data.prepare import PreparedData, label_counts
from align.embedded import cache_dir
from align.logprobs import SequenceScorer
from align.loop import EvalSet, evaluate
from align.recipe import Recipe
from align.reference import AdapterOffReference, MemoReference, precompute, reference_cache_key

log = logging.getLogger("align.train")


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


def lr_schedule(r: Recipe, optimizer, total: int):
    from transformers import get_scheduler

    warmup = (
        r.optim.warmup_steps if r.optim.warmup_steps is not None else math.ceil(r.optim.warmup_ratio * total)
    )
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[r.optim.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def optimizer_for(r: Recipe, module: torch.nn.Module, updates: int):
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=r.optim.lr,
        betas=tuple(r.optim.adam_betas),
        eps=r.optim.adam_eps,
        weight_decay=r.optim.weight_decay,
    )
    return optimizer, lr_schedule(r, optimizer, updates)


def wire_preference(r, method, data, tokenizer, accelerator, peft_model, total, plan, model_spec) -> Wired:
    """DPO-family, KTO and reward models: one update per step over the plan's micro-batches."""
    if hasattr(method, "scorer"):  # e.g. the reward model: scores, not log-probs
        scorer = method.scorer(peft_model, r.seed, r.model.gradient_checkpointing)
    else:
        scorer = SequenceScorer(
            peft_model,
            chunk_tokens=r.train.chunk_tokens,
            layout=r.train.layout,
            gradient_checkpointing=r.model.gradient_checkpointing,
        )
    optimizer, scheduler = optimizer_for(r, scorer, total)
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


def wire_ppo(r, method, data, tokenizer, accelerator, peft_model, total, plan, model_spec) -> Wired:
    """PPO: a rollout phase per step, then its minibatch updates (align/ppo.py)."""
    from align.ppo import POLICY, VALUE, PPOModule, PPOPhase, PromptIndices, RewardSource, build_roles

    head, value_adapter, (reward_head, _) = build_roles(r, method, peft_model, r.output_dir)
    module = PPOModule(
        peft_model, head, value_adapter, r.ppo.temperature, r.train.chunk_tokens, r.ppo.entropy_coef > 0
    )
    optimizer, scheduler = optimizer_for(r, module, total * method.updates_per_step)
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
