"""IPO, Azar et al. 2023 ("A General Theoretical Paradigm to Understand Learning from Human
Preferences"), Eq. 17: loss = (h - 1/(2β))², regressing the log-ratio margin onto a fixed target
instead of pushing it to infinity as DPO does.

The paper leaves the normalisation of h unspecified and implementations disagree:

* normalize="mean" (default): h = (π_c - ref_c)/n_c - (π_r - ref_r)/n_r on per-token-mean log-ratios.
  TRL's "ipo" and the HF β-sweep blog (whose recommended β values we inherit) use this; TRL notes the
  IPO authors confirmed their reported results use it.
* normalize="sum": h on summed log-ratios, as OpenRLHF does.

This matters because the target 1/(2β) is compared to h directly: summed margins grow with completion
length, so the same β means a very different loss (and optimum) under the two choices. Reported metrics
stay sum-based either way, for comparability with DPO.
"""

from __future__ import annotations

from typing import Literal

from align.objectives.metrics import check_beta, mean_logratios, pairwise_metrics, summed_logratios
from align.objectives.types import ObjectiveOutput, PairLogps

IpoNormalize = Literal["mean", "sum"]


def ipo_loss(
    policy: PairLogps, reference: PairLogps, beta: float, normalize: IpoNormalize = "mean"
) -> ObjectiveOutput:
    """Per-pair IPO loss [B]; see the module docstring for what `normalize` changes."""
    check_beta(beta)
    if normalize == "mean":
        chosen_lr, rejected_lr = mean_logratios(policy, reference)
    elif normalize == "sum":
        chosen_lr, rejected_lr = summed_logratios(policy, reference)
    else:
        raise ValueError(f"normalize must be 'mean' or 'sum', got {normalize!r}")
    loss = (chosen_lr - rejected_lr - 1.0 / (2.0 * beta)) ** 2
    return ObjectiveOutput(loss=loss, metrics=pairwise_metrics(policy, reference, beta))
