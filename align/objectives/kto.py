"""KTO: Kahneman-Tversky Optimization from unpaired desirable / undesirable completions.

Ethayarajh et al. 2024 ("KTO: Model Alignment as Prospect Theoretic Optimization"), Eq. 7-8:

    r(x, y) = log π(y|x) - log π_ref(y|x)            (summed over completion tokens)
    z0      = max(0, E_{x, y'} [ log π(y'|x) - log π_ref(y'|x) ])   (detached)
    desirable:    λ_D · (1 - σ(β (r - z0)))
    undesirable:  λ_U · (1 - σ(β (z0 - r)))

z0 is the reference point: a KL estimate from *mismatched* pairs (x, y') where y' is another
record's completion. Estimating it is the caller's job (`kl_sums`, then a sum over every process
divided by the global count: align/methods/kto.py), because it couples examples and ranks; this
module stays a pure function of log-probabilities, labels and z0.

Worked example (β = 0.1, z0 = 0.5, λ_D = 1, λ_U = 1.5): a desirable completion with r = 2.5 has
loss 1 - σ(0.1·2.0) = 1 - 0.549834 = 0.450166; an undesirable one with r = -1.5 has loss
1.5 · (1 - σ(0.1·2.0)) = 0.675249; rewards are β·r = 0.25 and -0.15.
"""

from __future__ import annotations

import torch

from align.objectives.metrics import check_beta
from align.objectives.types import ObjectiveOutput, SeqLogps


def kto_loss(
    policy: SeqLogps,
    reference: SeqLogps,
    desirable: torch.Tensor,
    z0: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> ObjectiveOutput:
    """Per-example KTO loss [N] for labels `desirable` [N] (bool) and reference point `z0` (scalar).

    Rows of either class may be absent (a rank with only thumbs-down rows is fine): every row is
    computed with `torch.where`, no empty selections. Per-class metrics are NaN on rows of the
    other class (the loop averages each metric over the rows where it is defined)."""
    check_beta(beta)
    z0 = z0.detach()
    r = policy.sum - reference.sum
    up = desirable.bool()
    loss = torch.where(
        up,
        desirable_weight * (1 - torch.sigmoid(beta * (r - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r))),
    )
    reward = (beta * r).detach()
    nan = torch.full_like(reward, float("nan"))
    logps = policy.sum.detach()
    metrics = {
        "rewards/desirable": torch.where(up, reward, nan),
        "rewards/undesirable": torch.where(up, nan, reward),
        "logps/desirable": torch.where(up, logps, nan),
        "logps/undesirable": torch.where(up, nan, logps),
        "kl": z0.expand_as(reward).float(),
        "count/desirable": up.float(),
        "count/undesirable": (~up).float(),
    }
    return ObjectiveOutput(loss=loss, metrics=metrics)


def kl_sums(policy_kl: SeqLogps, reference_kl: SeqLogps) -> torch.Tensor:
    """[sum over mismatched pairs of log π(y'|x) - log π_ref(y'|x), their count], to be summed
    over processes before dividing (a global mean, not a mean of per-rank means)."""
    diff = (policy_kl.sum - reference_kl.sum).detach().float()
    return torch.stack([diff.sum(), torch.tensor(float(diff.numel()), device=diff.device)])


def reference_point(global_sums: torch.Tensor) -> torch.Tensor:
    """z0 = max(0, global sum / global count); 0 when there were no mismatched pairs."""
    return (global_sums[0] / global_sums[1].clamp(min=1)).clamp(min=0)
