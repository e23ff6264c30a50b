"""Methods: small objects that say what batch they need and how outputs become a loss.

The loop knows none of this. A method declares `batch_kind` (which collator/dataset it reads),
`needs_reference`, and `loss(policy, reference, batch)`; optionally `derived(metrics)` for
metrics computed from the averaged ones, and `scorer(peft_model, seed)` when its model outputs
are not sequence log-probabilities (the reward model's scores). PPO (`batch_kind` "prompts") adds
a rollout phase before its minibatches: align/ppo.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from align.data.batches import PairBatch, UnpairedBatch
from align.errors import RecipeError
from align.objectives import PAIRWISE_OBJECTIVES, ObjectiveOutput, ObjectiveSpec, SeqLogps
from align.objectives.kto import kl_sums, kto_loss, reference_point
from align.objectives.reward import bradley_terry_loss

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


def check_sections(r: Recipe, where: str) -> None:
    """The `reward:` and `ppo:` sections configure their methods only: set elsewhere they are a
    mistake (e.g. a PPO recipe whose method line was changed), not something to ignore."""
    from align.recipe import PPOConfig, RewardConfig

    for section, default, owner in (("reward", RewardConfig(), "reward"), ("ppo", PPOConfig(), "ppo")):
        if r.method != owner and getattr(r, section) != default:
            raise RecipeError(f"{where}: {section}: applies to method '{owner}' only, not '{r.method}'")


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
        if r.data.format in ("unpaired", "prompts"):
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
        return PairwiseMethod(spec, r.beta, kwargs)


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
        if r.data.format == "prompts":
            raise RecipeError(
                f"{where}: data.format: method 'kto' needs unpaired records (or pairs to unpair), not prompts"
            )
        if r.data.format == "pairwise" and r.data.unpair is False:
            raise RecipeError(f"{where}: data.unpair: method 'kto' on pairwise data needs it true (or unset)")
        check_sections(r, where)

    def build(self, r: Recipe) -> KTOMethod:
        return KTOMethod(r.beta, r.desirable_weight, r.undesirable_weight)


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
        from align.logprobs import resolve_layout
        from align.reward_model import RewardScorer

        attn = getattr(peft_model.get_base_model().config, "_attn_implementation", None)
        layout = resolve_layout(self.layout, attn, gradient_checkpointing)
        return RewardScorer.fresh(peft_model, seed, layout="packed" if layout == "packed" else "padded")

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
        if r.data.format in ("unpaired", "prompts"):
            raise RecipeError(f"{where}: data.format: method 'reward' needs pairwise data")
        if r.data.unpair:
            raise RecipeError(f"{where}: data.unpair: applies to kto only, not 'reward'")
        if r.reference == "precompute":
            raise RecipeError(f"{where}: reference: a reward model has no reference model; remove the key")
        check_sections(r, where)

    def build(self, r: Recipe) -> RewardMethod:
        return RewardMethod(r.reward.margin, r.reward.center_coef, r.train.layout)


@dataclass(frozen=True)
class PPOFactory:
    def check_recipe(self, r: Recipe, where: str) -> None:
        from align.ppo import check_recipe

        check_recipe(r, where)

    def build(self, r: Recipe):
        from align.ppo import PPOMethod

        return PPOMethod(r.beta, r.ppo)


METHODS: dict[str, PairwiseFactory | KTOFactory | RewardFactory | PPOFactory] = {
    "reward": RewardFactory(),
    "ppo": PPOFactory(),
    "kto": KTOFactory(),
    "dpo": PairwiseFactory("dpo"),
    "cdpo": PairwiseFactory("dpo", require_smoothing=True),
    "ipo": PairwiseFactory("ipo"),
    "hinge": PairwiseFactory("hinge"),
}


def build_method(r: Recipe):
    return METHODS[r.method].build(r)


def mean_metrics(outputs: list[ObjectiveOutput]) -> dict[str, torch.Tensor]:
    """Concatenate per-example metrics (and loss) across micro-batches."""
    keys = outputs[0].metrics.keys()  # per example; NaN where a metric does not apply
    merged = {k: torch.cat([o.metrics[k].float() for o in outputs]) for k in keys}
    merged["loss"] = torch.cat([o.loss.detach().float() for o in outputs])
    return merged
