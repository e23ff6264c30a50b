"""Training objectives (pure torch) and the registry recipes resolve `objective.name` against.

Every entry records how it normalises log-probs and which paper it follows, so a recipe's β can be
interpreted unambiguously, and whether it needs a reference at all (SimPO and ORPO do not: their
methods then run no reference forward). Later objectives (kto, reward, ppo) register with a
different `kind`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from align.objectives.apo import apo_zero_loss
from align.objectives.dpo import dpo_loss, dpo_norm_loss, hinge_loss, rpo_loss
from align.objectives.ipo import ipo_loss
from align.objectives.metrics import pairwise_metrics
from align.objectives.reference_free import orpo_loss, simpo_loss
from align.objectives.sft import sft_loss
from align.objectives.types import ObjectiveOutput, PairLogps, SeqLogps


@dataclass(frozen=True)
class ObjectiveSpec:
    """Registry entry: `fn(policy, reference, beta, **kwargs) -> ObjectiveOutput` for kind "pairwise";
    `reference` is None for the objectives with needs_reference=False."""

    name: str
    kind: str  # "pairwise", or "sft" (policy log-probs only)
    fn: Callable[..., ObjectiveOutput]
    normalisation: str
    reference: str
    kwargs: tuple[str, ...] = ()  # accepted keyword arguments beyond beta
    needs_reference: bool = True


PAIRWISE_OBJECTIVES: dict[str, ObjectiveSpec] = {
    spec.name: spec
    for spec in (
        ObjectiveSpec(
            name="dpo",
            kind="pairwise",
            fn=dpo_loss,
            normalisation="sum over completion tokens",
            reference="Rafailov et al. 2023, Eq. 7; cDPO (label_smoothing > 0): Mitchell 2023",
            kwargs=("label_smoothing",),
        ),
        ObjectiveSpec(
            name="ipo",
            kind="pairwise",
            fn=ipo_loss,
            normalisation="per-token mean (normalize='mean', default) or sum (normalize='sum')",
            reference="Azar et al. 2023, Eq. 17",
            kwargs=("normalize",),
        ),
        ObjectiveSpec(
            name="hinge",
            kind="pairwise",
            fn=hinge_loss,
            normalisation="sum over completion tokens",
            reference="SLiC, Zhao et al. 2023, Eq. 3; RSO, Liu et al. 2023",
        ),
        ObjectiveSpec(
            name="dpo_norm",
            kind="pairwise",
            fn=dpo_norm_loss,
            normalisation="per-token mean over completion tokens",
            reference="length-normalised DPO, Tulu 3 (Lambert et al. 2024, arXiv:2411.15124)",
        ),
        ObjectiveSpec(
            name="rpo",
            kind="pairwise",
            fn=rpo_loss,
            normalisation="DPO term: sum; NLL term: per-token mean of the chosen completion, per pair",
            reference="RPO, Pang et al. 2024 (arXiv:2404.19733): DPO + alpha * NLL(chosen)",
            kwargs=("alpha",),
        ),
        ObjectiveSpec(
            name="apo_zero",
            kind="pairwise",
            fn=apo_zero_loss,
            normalisation="sum over completion tokens",
            reference="APO-zero, D'Oosterlinck et al. 2024 (arXiv:2408.06266), Eq. 7",
        ),
        ObjectiveSpec(
            name="simpo",
            kind="pairwise",
            fn=simpo_loss,
            normalisation="per-token mean over completion tokens (no reference)",
            reference="SimPO, Meng et al. 2024 (arXiv:2405.14734), Eq. 6",
            kwargs=("gamma",),
            needs_reference=False,
        ),
        ObjectiveSpec(
            name="orpo",
            kind="pairwise",
            fn=orpo_loss,
            normalisation="per-token mean over completion tokens (odds and NLL; no reference)",
            reference="ORPO, Hong et al. 2024 (arXiv:2403.07691), Eqs. 6-7; beta is its lambda",
            needs_reference=False,
        ),
    )
}

# Supervised fine-tuning reads the policy's log-probs only: fn(policy, examples, tokens).
SFT_OBJECTIVE = ObjectiveSpec(
    name="sft",
    kind="sft",
    fn=sft_loss,
    normalisation="per-token mean NLL over every loss token of the optimizer step (all micro-batches and "
    "processes), as TRL's SFTTrainer with num_items_in_batch",
    reference="Radford et al. 2018, Eq. 1 (token-averaged)",
)

OBJECTIVES: dict[str, ObjectiveSpec] = {**PAIRWISE_OBJECTIVES, "sft": SFT_OBJECTIVE}


def get_objective(name: str) -> ObjectiveSpec:
    """Look up a registered objective; unknown names raise ValueError with a did-you-mean hint."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        known = sorted(OBJECTIVES)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown objective {name!r}.{hint} Known objectives: {', '.join(known)}.") from None


__all__ = [
    "OBJECTIVES",
    "PAIRWISE_OBJECTIVES",
    "SFT_OBJECTIVE",
    "ObjectiveOutput",
    "ObjectiveSpec",
    "PairLogps",
    "SeqLogps",
    "apo_zero_loss",
    "dpo_loss",
    "dpo_norm_loss",
    "get_objective",
    "hinge_loss",
    "ipo_loss",
    "orpo_loss",
    "pairwise_metrics",
    "rpo_loss",
    "simpo_loss",
    "sft_loss",
]
