"""Supervised fine-tuning of the LoRA adapter: the per-token NLL of the loss tokens, no reference.

Reads SFT records (conversations: every assistant turn; prompt + completion: the completion;
plain text: every token), or the chosen replies of pairs and the desirable completions of
unpaired records (align/data/prepare.py: `sft_of`). Sequences are packed under the block mask
(one segment each, positions restarting) where the attention takes one, else padded rows.

Normalisation (align/objectives/sft.py) is over the loss tokens of the whole optimizer step, as
TRL's `num_items_in_batch`: a phase collates the step's micro-batches, counts their loss tokens
on the host (and sums them over processes: one small all-reduce per step), and hands each batch
that count, so per-device 1 x accumulation 8 equals 8 x 1 and a long reply weighs its length.
Held-out loss and perplexity are exact over the whole set (total NLL / total loss tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from align.data.batches import SFTBatch, collate_sft
from align.engine.loop import Phase, Update
from align.engine.wired import Wired
from align.methods.base import check_sections, wire_scored
from align.objectives import SFT_OBJECTIVE, ObjectiveOutput, SeqLogps, sft_loss
from align.util.errors import RecipeError

if TYPE_CHECKING:
    from align.data.prepare import PreparedData
    from align.recipe import Recipe


@dataclass
class SFTMethod:
    """SFT on the policy's own log-probs (sums and token counts per sequence)."""

    batch_kind: ClassVar[str] = "sft"
    needs_reference: ClassVar[bool] = False

    def loss(self, policy: SeqLogps, reference: None, batch: SFTBatch) -> ObjectiveOutput:
        return sft_loss(policy, batch.norm_examples, batch.norm_tokens)

    def collators(self, r: Recipe, data: PreparedData, pad: int, pack: int | None):
        return (
            lambda idx: collate_sft([data.train[i] for i in idx], pad, pack_tokens=pack),
            lambda idx: collate_sft([data.eval[i] for i in idx], pad, pack_tokens=pack),
        )

    def wire(self, r, data, tokenizer, accelerator, peft_model, total, plan, model_spec) -> Wired:
        w = wire_scored(self, r, data, tokenizer, accelerator, peft_model, total, plan, model_spec)
        return replace(w, phase=step_normalised(w.collate, accelerator, plan.per_device * plan.accumulation))

    def derived(self, metrics: dict[str, float]) -> dict[str, float]:
        """Held-out loss per token over the whole set, and its perplexity exp(loss)."""
        nll, tokens = metrics.get("eval/count/nll"), metrics.get("eval/count/loss_tokens")
        if not tokens:
            return {}
        loss = nll / tokens
        return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 700.0))}

    def manifest(self) -> dict[str, Any]:
        return {
            "objective": SFT_OBJECTIVE.name,
            "normalisation": SFT_OBJECTIVE.normalisation,
            "paper": SFT_OBJECTIVE.reference,
            "loss_tokens": "conversations: every assistant turn through its EOS; prompt + completion: the "
            "completion; text: every token; pairs: the chosen reply; unpaired: desirable completions",
        }


def step_normalised(collate, accelerator, examples: int):
    """A phase: the step's micro-batches, each told the step's examples per process and loss tokens
    (the global count / processes: DDP's gradient average then makes it the global per-token mean)."""

    def phase(micro_idx: list[list[int]]) -> Phase:
        batches = [collate(idx) for idx in micro_idx]
        tokens = float(sum(b.loss_tokens for b in batches))
        world = accelerator.num_processes
        if world > 1:
            total = accelerator.reduce(torch.tensor([tokens], device=accelerator.device), reduction="sum")
            tokens = float(total.item()) / world
        for b in batches:
            b.norm_examples, b.norm_tokens = examples, tokens
        return Phase([Update(batches, examples)])

    return phase


@dataclass(frozen=True)
class SFTFactory:
    def check_recipe(self, r: Recipe, where: str) -> None:
        from align.recipe import Recipe

        default = Recipe()
        for key in ("beta", "label_smoothing", "ipo_normalization", "desirable_weight", "undesirable_weight"):
            if getattr(r, key) != getattr(default, key):
                raise RecipeError(f"{where}: {key}: does not apply to 'sft' (no reference, no preference)")
        if r.reference == "precompute":
            raise RecipeError(f"{where}: reference: method 'sft' has no reference model; remove the key")
        if r.data.format == "prompts":
            raise RecipeError(f"{where}: data.format: method 'sft' needs completions, not prompts")
        if r.data.unpair:
            raise RecipeError(f"{where}: data.unpair: applies to kto only, not 'sft'")
        check_sections(r, where)

    def build(self, r: Recipe) -> SFTMethod:
        return SFTMethod()
