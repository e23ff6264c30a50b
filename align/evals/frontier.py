"""The reward-vs-KL frontier (Rafailov et al. 2023, Fig. 2): per run, the KL of the policy to the
reference on the eval prompts and, when a reward model is given, the mean reward of its samples.

For each question's first turn the policy samples one completion at temperature 1 (plain
sampling, the policy's own distribution); its KL is the sum over the sampled tokens of the exact
per-token KL(pi(.|x, y<t) || pi_ref(.|x, y<t)) over the whole vocabulary, whose expectation over
y ~ pi is the sequence-level KL(pi || pi_ref) (chain rule), with lower variance than the
log-ratio estimate. The reference is the same model with the adapter switched off. Completions
are cut at `max_new_tokens`, so this is the KL of the truncated distributions. The baseline (no
adapter) has KL 0 by definition.

The reward model is a plain callable `score(prompts, responses) -> list[float]` (None: no reward
column), so this module needs nothing from the reward-model training code.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Any

import torch

from align.evals.answers import AnswerSettings, generate, render
from align.evals.policies import ModelRef
from align.evals.questions import Question
from align.evals.store import JsonlStore
from align.models.adapters import use_adapter

log = logging.getLogger("align.evals")

RewardFn = Callable[[list[str], list[str]], list[float]]
KL_KEY = ("model", "question_id")


@torch.no_grad()
def sequence_kl(model, prompt: list[int], completion: list[int]) -> float:
    """sum_t KL(pi_t || pi_ref_t) over the completion's positions (adapter on vs off)."""
    if not completion:
        return 0.0
    dev = next(model.parameters()).device
    ids = torch.tensor([prompt + completion], device=dev)
    keep = len(completion) + 1  # logits that predict the completion tokens (the last is unused)

    def logp() -> torch.Tensor:
        logits = model(input_ids=ids, logits_to_keep=keep).logits[0, :-1]
        return logits.float().log_softmax(-1)

    policy = logp()
    with use_adapter(model, None):  # adapters off (or a continue run's frozen earlier adapter)
        reference = logp()
    return float((policy.exp() * (policy - reference)).sum())


def missing_kl(ref: ModelRef, questions: list[Question], store: JsonlStore, samples: bool) -> list[Question]:
    """Questions without a KL row for `ref` (or, with `samples`, without a sampled text: a
    baseline's rows carry none until a reward model needs its samples)."""
    rows = [store.get((ref.label, q.question_id)) for q in questions]
    return [q for q, r in zip(questions, rows) if r is None or (samples and r.get("text") is None)]


def measure_kl(
    ref: ModelRef,
    loaded,
    questions: list[Question],
    store: JsonlStore,
    settings: AnswerSettings,
    samples: bool,
) -> int:
    """Sample and score the KL of the questions `store` lacks for `ref`; returns how many.
    `loaded` is (model, tokenizer), or None for a baseline when `samples` is False."""
    todo = missing_kl(ref, questions, store, samples)
    if not todo:
        return 0
    if ref.is_baseline and not samples:  # the reference itself: KL is exactly 0
        store.append(
            {"model": ref.label, "question_id": q.question_id, "kl": 0.0, "text": None} for q in todo
        )
        return len(todo)
    model, tokenizer = loaded
    for start in range(0, len(todo), settings.batch_size):
        batch = todo[start : start + settings.batch_size]
        prompts = [
            render(tokenizer, [{"role": "user", "content": q.turns[0]}], ref.chat_template) for q in batch
        ]
        seed = zlib.crc32(repr(("kl", settings.seed, ref.label, batch[0].question_id)).encode())
        gens = generate(model, tokenizer, prompts, 1.0, settings.max_new_tokens, seed)
        store.append(
            {
                "model": ref.label,
                "question_id": q.question_id,
                "kl": 0.0 if ref.is_baseline else sequence_kl(model, p, g.ids),
                "text": g.text,
                "new_tokens": len(g.ids),
            }
            for q, p, g in zip(batch, prompts, gens)
        )
    log.info("kl %s: %d samples", ref.label, len(todo))
    return len(todo)


def add_rewards(
    store: JsonlStore, questions: list[Question], reward_fn: RewardFn, reward_name: str, batch_size: int = 8
) -> int:
    """Score the cached samples that have no reward from `reward_name` yet."""
    text_of = {q.question_id: q.turns[0] for q in questions}
    todo = [r for r in store.values() if r.get("text") is not None and r.get("reward_model") != reward_name]
    for start in range(0, len(todo), batch_size):
        rows = todo[start : start + batch_size]
        scores = reward_fn([text_of[r["question_id"]] for r in rows], [r["text"] for r in rows])
        store.append({**r, "reward": float(s), "reward_model": reward_name} for r, s in zip(rows, scores))
    return len(todo)


def frontier_rows(
    store: JsonlStore, labels: list[str], questions: list[Question]
) -> dict[str, dict[str, Any]]:
    """{model: {"kl": {mean, low, high, n}, "reward": {...} or None}} over this question set."""
    from align.evals.stats import mean_ci

    ids = {q.question_id for q in questions}
    out = {}
    for label in labels:
        rows = [r for r in store.values() if r["model"] == label and r["question_id"] in ids]
        if not rows:
            continue
        rewards = [r["reward"] for r in rows if r.get("reward") is not None]
        out[label] = {
            "kl": mean_ci([r["kl"] for r in rows]),
            "reward": mean_ci(rewards) if rewards else None,
        }
    return out
