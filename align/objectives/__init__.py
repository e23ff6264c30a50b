"""Training objectives (pure torch) and the registry recipes resolve `objective.name` against.

Every entry records how it normalises log-probs and which paper it follows, so a recipe's β can be
interpreted unambiguously. Later objectives (kto, reward, ppo) register with a different `kind`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from align.objectives.dpo import dpo_loss, hinge_loss
from align.objectives.ipo import ipo_loss
from align.objectives.metrics import pairwise_metrics
from align.objectives.sft import sft_loss
from align.objectives.types import ObjectiveOutput, PairLogps, SeqLogps


@dataclass(frozen=True)
class ObjectiveSpec:
    """Registry entry: `fn(policy, reference, beta, **kwargs) -> ObjectiveOutput` for kind "pairwise"."""

    name: str
    kind: str  # "pairwise", or "sft" (policy log-probs only)
    fn: Callable[..., ObjectiveOutput]
    normalisation: str
    reference: str
    kwargs: tuple[str, ...] = ()  # accepted keyword arguments beyond beta


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
    "dpo_loss",
    "get_objective",
    "hinge_loss",
    "ipo_loss",
    "pairwise_metrics",
    "sft_loss",
]
