"""A reward model: LoRA + a scalar score head, Bradley-Terry on pairs (the first half of RLHF)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from align.data.batches import PairBatch
from align.engine.wired import Wired
from align.methods.base import check_sections, pair_collators, wire_scored
from align.models.logprobs import attn_implementation, resolve_layout
from align.models.reward_model import RewardScorer
from align.objectives import ObjectiveOutput
from align.objectives.reward import bradley_terry_loss
from align.util.errors import RecipeError

if TYPE_CHECKING:
    from align.data.prepare import PreparedData
    from align.recipe import Recipe


@dataclass
class RewardMethod:
    """A reward model: LoRA + a scalar score head on the base, read at each sequence's last real
    token, trained with the Bradley-Terry loss on pairs (rows [0, B) chosen, [B, 2B) rejected)."""

    margin: float = 0.0
    center_coef: float = 0.0
    layout: str = "auto"  # train.layout: packed pairs where the attention takes a block mask
    batch_kind: ClassVar[str] = "pair"
    needs_reference: ClassVar[bool] = False

    def scorer(self, peft_model, seed: int, gradient_checkpointing: bool = False):
        layout = resolve_layout(self.layout, attn_implementation(peft_model), gradient_checkpointing)
        return RewardScorer.fresh(peft_model, seed, layout="packed" if layout == "packed" else "padded")

    def collators(self, r: Recipe, data: PreparedData, pad: int, pack: int | None):
        return pair_collators(r, data, pad, pack)

    def wire(self, *args) -> Wired:
        return wire_scored(self, *args)

    def loss(self, scores: torch.Tensor, reference: None, batch: PairBatch) -> ObjectiveOutput:
        b = scores.shape[0] // 2
        return bradley_terry_loss(scores[:b], scores[b:], self.margin, self.center_coef)

    def manifest(self) -> dict[str, Any]:
        return {
            "objective": "bradley_terry",
            "normalisation": "one scalar score per sequence, at its last real token",
            "paper": "Ouyang et al. 2022, Eq. 1; margin: Touvron et al. 2023, Eq. 2",
            "margin": self.margin,
            "center_coef": self.center_coef,
        }


@dataclass(frozen=True)
class RewardFactory:
    def check_recipe(self, r: Recipe, where: str) -> None:
        if r.label_smoothing:
            raise RecipeError(f"{where}: label_smoothing applies to dpo/cdpo only, not 'reward'")
        if r.data.format in ("unpaired", "prompts", "sft"):
            raise RecipeError(f"{where}: data.format: method 'reward' needs pairwise data")
        if r.data.unpair:
            raise RecipeError(f"{where}: data.unpair: applies to kto only, not 'reward'")
        if r.reference == "precompute":
            raise RecipeError(f"{where}: reference: a reward model has no reference model; remove the key")
        check_sections(r, where)

    def build(self, r: Recipe) -> RewardMethod:
        return RewardMethod(r.reward.margin, r.reward.center_coef, r.train.layout)
