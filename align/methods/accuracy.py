"""Held-out accuracy on prompts with checkable answers: greedy replies scored by exact answer.

Greedy (temperature 0) so the number moves only when the policy's most likely reply changes, not
with sampling noise: with a few dozen held-out prompts that is what makes "accuracy went up"
readable. The eval's sampled rollouts (seeded, at the training temperature) stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from align.models.rollout import Sampling, sample
from align.rewards import exact_answer


def answers_of(examples: Sequence[dict]) -> list[str | None] | None:
    """The `answer` of each prepared prompt example, or None when none of them has one."""
    answers = [ex.get("answer") for ex in examples]
    return answers if any(a is not None for a in answers) else None


@torch.no_grad()
def greedy_accuracy(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    answers: list[str],
    tokenizer,
    max_new_tokens: int,
    backend: str = "auto",
) -> torch.Tensor:
    """Per-row 1.0/0.0 [N] (on the model's device): does the greedy reply's final answer equal
    `answers[i]`? `model` is used with its current adapter state, in eval mode (the caller picks
    the adapter, e.g. `use_adapter(model, POLICY)`)."""
    greedy = Sampling(max_new_tokens, temperature=0.0)
    rollout = sample(
        model, prompt_ids, greedy, tokenizer.eos_token_id, tokenizer.pad_token_id, backend=backend
    )
    lens = rollout.response_len.tolist()
    replies = [
        tokenizer.decode(row[:n], skip_special_tokens=True)
        for row, n in zip(rollout.response_ids.tolist(), lens, strict=True)
    ]
    prompts = [""] * len(replies)  # exact_answer reads replies and answers only
    return torch.tensor(exact_answer(prompts, replies, answers), device=rollout.response_ids.device)
