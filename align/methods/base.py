"""What the methods that score fixed batches share: DPO family, KTO and the reward model.

`wire_scored` runs one update per step over the plan's micro-batches: a scorer (sequence
log-probs, or the method's own, e.g. reward scores), the reference if the method needs one
(the adapter switched off, or precomputed), the held-out set and the final save. A method says
how its batches are collated (`collators`) and how outputs become a loss (`loss`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from align.data.batches import collate_pairs
from align.engine.checkpoint import save_adapter
from align.engine.metrics import EvalSet, evaluate
from align.engine.wired import Wired, optimizer_for
from align.models.logprobs import SequenceScorer
from align.models.reference import AdapterOffReference, MemoReference, precompute, reference_cache_key
from align.util.errors import RecipeError
from align.util.files import cache_dir

if TYPE_CHECKING:
    from align.data.prepare import PreparedData
    from align.recipe import Recipe


# Top-level keys that configure one method only (None: unset).
METHOD_KEYS = (("rpo_alpha", "rpo"), ("simpo_gamma", "simpo"))


def check_sections(r: Recipe, where: str) -> None:
    """The `reward:`, `ppo:` and `online:` sections (and METHOD_KEYS, ipo_normalization) configure
    their methods only: set elsewhere they are a mistake (e.g. a PPO recipe whose method line was
    changed), not something to ignore. Every method's check_recipe ends here."""
    from align.recipe import OnlineConfig, PPOConfig, RewardConfig

    for key, owner in METHOD_KEYS:
        if r.method != owner and getattr(r, key) is not None:
            raise RecipeError(f"{where}: {key}: applies to method '{owner}' only, not '{r.method}'")
    if r.ipo_normalization != "mean" and r.method != "ipo":  # "mean": the recipe's default
        raise RecipeError(f"{where}: ipo_normalization applies to ipo only, not '{r.method}'")

    sections = (
        ("reward", RewardConfig(), ("reward",)),
        ("ppo", PPOConfig(), ("ppo",)),
        ("online", OnlineConfig(), ("rloo", "grpo")),
    )
    for section, default, owners in sections:
        if r.method not in owners and getattr(r, section) != default:
            raise RecipeError(
                f"{where}: {section}: applies to method {' / '.join(repr(o) for o in owners)} only, "
                f"not '{r.method}'"
            )


def pair_collators(r: Recipe, data: PreparedData, pad: int, pack: int | None):
    """(train, eval) `collate(indices) -> PairBatch` over the prepared pairs."""
    return (
        lambda idx: collate_pairs([data.train[i] for i in idx], pad, pack_tokens=pack),
        lambda idx: collate_pairs([data.eval[i] for i in idx], pad, pack_tokens=pack),
    )


def wire_scored(method, r, data, tokenizer, accelerator, peft_model, total, plan, model_spec) -> Wired:
    """One update per step over the plan's micro-batches (DPO family, KTO, reward model)."""
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
    train_collate, eval_collate = method.collators(r, data, tokenizer.pad_token_id, pack)
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
