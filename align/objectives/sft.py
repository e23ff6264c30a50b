"""Supervised fine-tuning: the negative log-likelihood of the loss tokens, one mean per token.

The objective is the per-token mean NLL over every loss token of the *normalisation group*
(Radford et al. 2018, Eq. 1, averaged over tokens; TRL 1.16's SFTTrainer with its default
`loss_type="nll"`):

    L = -(1 / T) Σ_i Σ_{t ∈ loss tokens of i} log π(y_t | y_<t),    T = Σ_i n_i

It is token-level over the group, not a mean of per-sequence means: a 100-token reply weighs 100
times a 1-token reply. The group is the whole optimizer step (every micro-batch and every
process), as TRL's `num_items_in_batch` is: the method passes the step's `examples` E and `tokens`
T, and each example gets loss_i = -E · Σ_t log π / T, so the loop's Σ_i loss_i / E over the step is
exactly L and the per-example mean of the logged loss is the step's per-token loss. With the
defaults (E, T of this batch) the batch mean of loss_i is the batch's per-token NLL.

Worked example: summed log-probs -6 (3 tokens) and -2 (1 token): T = 4, L = 8 / 4 = 2, and
loss = [6·2/4, 2·2/4] = [3, 1], mean 2. With -6 over 2 tokens instead, L = 8/3, not the mean of
the per-sequence means (3 + 2) / 2 = 2.5.
"""

from __future__ import annotations

import torch

from align.objectives.types import ObjectiveOutput, SeqLogps


def sft_loss(
    policy: SeqLogps, examples: float | None = None, tokens: float | torch.Tensor | None = None
) -> ObjectiveOutput:
    """Per-example loss [N] whose sum / `examples` is the mean NLL per token over `tokens` tokens.

    `examples` and `tokens` describe the normalisation group (default: this batch). Metrics:
    `count/loss_tokens` and `count/nll` (totals, for exact per-token held-out loss and perplexity
    over a whole set), `logp/mean` (each sequence's mean log-prob per token)."""
    n = policy.n_tokens
    e = float(policy.sum.shape[0]) if examples is None else float(examples)
    t = n.sum() if tokens is None else torch.as_tensor(tokens, dtype=n.dtype, device=n.device)
    nll = -policy.sum
    loss = nll * (e / t.clamp(min=1))  # clamped like TRL: a group without loss tokens gives 0, not NaN
    return ObjectiveOutput(
        loss=loss,
        metrics={
            "count/loss_tokens": n.detach(),
            "count/nll": nll.detach(),
            "logp/mean": (policy.sum / n.clamp(min=1)).detach(),
        },
    )
