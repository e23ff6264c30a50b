"""KTO from thumbs up / thumbs down (Ethayarajh et al. 2024), on unpaired records or on pairs
split into one desirable and one undesirable record each (`data.unpair`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from align.data.batches import PairBatch, UnpairedBatch, collate_unpaired, kl_partners
from align.data.prepare import label_counts
from align.engine.wired import Wired
from align.methods.base import check_sections, wire_scored
from align.objectives import ObjectiveOutput, SeqLogps
from align.objectives.kto import kl_sums, kto_loss, reference_point
from align.util.errors import RecipeError

if TYPE_CHECKING:
    from align.data.prepare import PreparedData
    from align.recipe import Recipe

log = logging.getLogger("align.train")


@dataclass
class KTOMethod:
    """KTO on unpaired batches (align/data/batches.py: UnpairedBatch): the "chosen" rows are the
    records' completions, the "rejected" rows the mismatched KL rows. z0 is the KL estimate over
    every process's mismatched rows in this micro-step: one all-reduce of [sum, count], so it is a
    global mean (HALOs' way), not a mean of per-rank means; a rank without one class, or with a
    single record, contributes its rows like any other."""

    beta: float
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    batch_kind: ClassVar[str] = "unpaired"
    needs_reference: ClassVar[bool] = True

    def loss(self, policy: SeqLogps, reference: SeqLogps, batch: UnpairedBatch) -> ObjectiveOutput:
        pol, ref = PairBatch.split(policy), PairBatch.split(reference)
        sums = kl_sums(pol.rejected, ref.rejected)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
        z0 = reference_point(sums)
        return kto_loss(
            pol.chosen,
            ref.chosen,
            batch.desirable,
            z0,
            self.beta,
            self.desirable_weight,
            self.undesirable_weight,
        )

    def collators(self, r: Recipe, data: PreparedData, pad: int, pack: int | None):
        """(train, eval) `collate(indices) -> UnpairedBatch`: each record with its KL partner."""
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

    def wire(self, *args) -> Wired:
        return wire_scored(self, *args)

    def derived(self, metrics: dict[str, float]) -> dict[str, float]:
        """Held-out reward gap: mean reward of desirable minus undesirable completions."""
        up, down = metrics.get("eval/rewards/desirable"), metrics.get("eval/rewards/undesirable")
        return {} if up is None or down is None else {"eval/reward_gap": up - down}

    def manifest(self) -> dict[str, Any]:
        return {
            "objective": "kto",
            "normalisation": "sum over completion tokens",
            "paper": "Ethayarajh et al. 2024, Eq. 7-8",
            "beta": self.beta,
            "desirable_weight": self.desirable_weight,
            "undesirable_weight": self.undesirable_weight,
            "kl_estimate": "mismatched pairs: each record's prompt with a fixed other record's completion "
            "(a seeded cycle); global sum / global count over processes, detached, clamped at 0",
        }


@dataclass(frozen=True)
class KTOFactory:
    def check_recipe(self, r: Recipe, where: str) -> None:
        if r.label_smoothing:
            raise RecipeError(f"{where}: label_smoothing applies to dpo/cdpo only, not 'kto'")
        if r.data.format in ("prompts", "sft"):
            raise RecipeError(
                f"{where}: data.format: method 'kto' needs unpaired records (or pairs to unpair), "
                f"not {r.data.format}"
            )
        if r.data.format == "pairwise" and r.data.unpair is False:
            raise RecipeError(f"{where}: data.unpair: method 'kto' on pairwise data needs it true (or unset)")
        check_sections(r, where)

    def build(self, r: Recipe) -> KTOMethod:
        return KTOMethod(r.beta, r.desirable_weight, r.undesirable_weight)


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
