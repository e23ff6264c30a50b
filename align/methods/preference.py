"""The DPO family on pairs: DPO, conservative DPO (label smoothing), IPO, hinge, length-normalised
DPO, RPO, APO-zero, and the reference-free SimPO and ORPO.

One forward over chosen + rejected rows, the reference as the adapter switched off (or
precomputed; none at all for reference-free objectives), a pairwise objective from
align/objectives/ (the registry names each one's paper and normalisation, written to the run
manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from align.data.batches import PairBatch
from align.engine.wired import Wired
from align.methods.base import check_sections, pair_collators, wire_scored
from align.objectives import PAIRWISE_OBJECTIVES, ObjectiveOutput, ObjectiveSpec, SeqLogps
from align.util.errors import RecipeError

if TYPE_CHECKING:
    from align.data.prepare import PreparedData
    from align.recipe import Recipe


@dataclass
class PairwiseMethod:
    """DPO-family methods: one forward over chosen+rejected rows, a pairwise objective."""

    spec: ObjectiveSpec
    beta: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    batch_kind: ClassVar[str] = "pair"

    @property
    def needs_reference(self) -> bool:
        """False for SimPO / ORPO: wire_scored then builds no reference and runs no adapter-off pass."""
        return self.spec.needs_reference

    def loss(self, policy: SeqLogps, reference: SeqLogps | None, batch: PairBatch) -> ObjectiveOutput:
        pol = PairBatch.split(policy)
        ref = PairBatch.split(reference) if self.needs_reference else None
        out = self.spec.fn(pol, ref, self.beta, **self.kwargs)
        # Preference accuracy of the policy itself (per-token mean log-prob, chosen vs rejected):
        # unlike the implicit-reward accuracy it is meaningful before training too.
        margin = (pol.chosen.mean - pol.rejected.mean).detach()
        out.metrics["policy/accuracy"] = (margin > 0).float()
        out.metrics["policy/logp_margin"] = margin
        return out

    def collators(self, r: Recipe, data: PreparedData, pad: int, pack: int | None):
        return pair_collators(r, data, pad, pack)

    def wire(self, *args) -> Wired:
        return wire_scored(self, *args)

    def manifest(self) -> dict[str, Any]:
        return {
            "objective": self.spec.name,
            "normalisation": self.spec.normalisation,
            "paper": self.spec.reference,
            "beta": self.beta,
            **self.kwargs,
        }


# What an unset method key means (the papers' / TRL's values); the manifest records the value used.
RPO_ALPHA = 1.0
SIMPO_GAMMA = 0.5


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
        if r.reference == "precompute" and not PAIRWISE_OBJECTIVES[self.objective].needs_reference:
            raise RecipeError(
                f"{where}: reference: method '{r.method}' is reference-free (no reference forward); "
                "remove the key"
            )
        if r.data.format in ("unpaired", "prompts", "sft"):
            raise RecipeError(f"{where}: data.format: method '{r.method}' needs pairwise data")
        if r.data.unpair:
            raise RecipeError(f"{where}: data.unpair: applies to kto only, not '{r.method}'")
        for key in ("desirable_weight", "undesirable_weight"):
            if getattr(r, key) != 1.0:
                raise RecipeError(f"{where}: {key}: applies to kto only, not '{r.method}'")
        check_sections(r, where)

    def build(self, r: Recipe) -> PairwiseMethod:
        spec = PAIRWISE_OBJECTIVES[self.objective]
        kwargs: dict[str, Any] = {}
        if self.objective == "dpo":
            kwargs["label_smoothing"] = r.label_smoothing
        if self.objective == "ipo":
            kwargs["normalize"] = r.ipo_normalization
        if self.objective == "rpo":
            kwargs["alpha"] = RPO_ALPHA if r.rpo_alpha is None else r.rpo_alpha
        if self.objective == "simpo":
            kwargs["gamma"] = SIMPO_GAMMA if r.simpo_gamma is None else r.simpo_gamma
        return PairwiseMethod(spec, r.beta, kwargs)
