"""Methods: small objects that say what batch they need and how outputs become a loss.

The loop knows none of this. A method declares `batch_kind` (which collator/dataset it reads),
`needs_reference`, and `loss(policy, reference, batch)`. KTO (unpaired batches) and PPO (a
rollout phase before its minibatches) register here in later issues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from align.data.batches import PairBatch
from align.errors import RecipeError
from align.objectives import PAIRWISE_OBJECTIVES, ObjectiveOutput, ObjectiveSpec, SeqLogps

if TYPE_CHECKING:
    from align.recipe import Recipe


@dataclass
class PairwiseMethod:
    """DPO-family methods: one forward over chosen+rejected rows, a pairwise objective."""

    spec: ObjectiveSpec
    beta: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    batch_kind: ClassVar[str] = "pair"
    needs_reference: ClassVar[bool] = True

    def loss(self, policy: SeqLogps, reference: SeqLogps, batch: PairBatch) -> ObjectiveOutput:
        pol, ref = PairBatch.split(policy), PairBatch.split(reference)
        out = self.spec.fn(pol, ref, self.beta, **self.kwargs)
        # Preference accuracy of the policy itself (per-token mean log-prob, chosen vs rejected):
        # unlike the implicit-reward accuracy it is meaningful before training too.
        margin = (pol.chosen.mean - pol.rejected.mean).detach()
        out.metrics["policy/accuracy"] = (margin > 0).float()
        out.metrics["policy/logp_margin"] = margin
        return out

    def manifest(self) -> dict[str, Any]:
        return {
            "objective": self.spec.name,
            "normalisation": self.spec.normalisation,
            "paper": self.spec.reference,
            "beta": self.beta,
            **self.kwargs,
        }


@dataclass(frozen=True)
class PairwiseFactory:
    objective: str
    require_smoothing: bool = False

    def check_recipe(self, r: Recipe, where: str) -> None:
        if r.label_smoothing and self.objective != "dpo":
            raise RecipeError(f"{where}: label_smoothing applies to dpo/cdpo only, not '{r.method}'")
        if not 0.0 <= r.label_smoothing < 0.5:
            raise RecipeError(f"{where}: label_smoothing must be in [0, 0.5)")
        if self.require_smoothing and r.label_smoothing <= 0:
            raise RecipeError(f"{where}: method 'cdpo' needs label_smoothing > 0 (e.g. 0.1)")
        if r.ipo_normalization != "mean" and self.objective != "ipo":
            raise RecipeError(f"{where}: ipo_normalization applies to ipo only, not '{r.method}'")
        if r.data.format != "pairwise":
            raise RecipeError(f"{where}: method '{r.method}' needs data.format: pairwise")

    def build(self, r: Recipe) -> PairwiseMethod:
        spec = PAIRWISE_OBJECTIVES[self.objective]
        kwargs: dict[str, Any] = {}
        if self.objective == "dpo":
            kwargs["label_smoothing"] = r.label_smoothing
        if self.objective == "ipo":
            kwargs["normalize"] = r.ipo_normalization
        return PairwiseMethod(spec, r.beta, kwargs)


METHODS: dict[str, PairwiseFactory] = {
    "dpo": PairwiseFactory("dpo"),
    "cdpo": PairwiseFactory("dpo", require_smoothing=True),
    "ipo": PairwiseFactory("ipo"),
    "hinge": PairwiseFactory("hinge"),
}


def build_method(r: Recipe) -> PairwiseMethod:
    return METHODS[r.method].build(r)


def mean_metrics(outputs: list[ObjectiveOutput]) -> dict[str, torch.Tensor]:
    """Concatenate per-example metrics (and loss) across micro-batches."""
    keys = outputs[0].metrics.keys()
    merged = {k: torch.cat([o.metrics[k].float() for o in outputs]) for k in keys}
    merged["loss"] = torch.cat([o.loss.detach().float() for o in outputs])
    return merged
