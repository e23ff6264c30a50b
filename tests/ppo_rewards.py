"""Programmatic rewards for the PPO tests (named in recipes as `ppo_rewards:<name>`)."""

from __future__ import annotations

LOW = 4096  # token ids below this count as "target" tokens (about 8% of SmolLM2's vocabulary)


def low_ids(prompts: list[str], responses: list[str], response_ids: list[list[int]]) -> list[float]:
    """Share of response tokens whose id is below LOW."""
    return [sum(t < LOW for t in ids) / max(len(ids), 1) for ids in response_ids]


def wrong_length(prompts: list[str], responses: list[str]) -> list[float]:
    return [0.0] * (len(responses) + 1)


def not_finite(prompts: list[str], responses: list[str]) -> list[float]:
    return [float("nan")] * len(responses)


def repeats(prompts: list[str], responses: list[str], response_ids: list[list[int]]) -> list[float]:
    """Share of response tokens equal to the token before them: learnable by a random model with
    tied embeddings (its residual stream already carries the current token's embedding)."""
    return [sum(a == b for a, b in zip(ids, ids[1:])) / max(len(ids) - 1, 1) for ids in response_ids]


def answer_in_prompt(prompts: list[str], responses: list[str], answers: list[str]) -> list[float]:
    """1 when the row's answer appears in its own prompt: checks that answers reach the reward row
    by row (repeated for each sampled completion of a prompt), not shifted or shuffled."""
    return [float(a in p) for p, a in zip(prompts, answers, strict=True)]
