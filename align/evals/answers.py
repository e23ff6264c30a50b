"""Two-turn answers to the questions, batched across questions, cached per (model, question, turn).

Turn 2 sees the model's own turn-1 answer through the chat template. Sampling follows MT-Bench
(per-category temperatures, see questions.TEMPERATURES) or is greedy everywhere. Every batch is
appended to answers.jsonl as soon as it is generated, so an interrupted eval redoes at most one
batch. `generate` is the one place evals sample from a model (answers, KL samples, the local
judge), through `align.models.rollout.sample`, the sampler PPO uses.
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from align.evals.policies import ModelRef, load
from align.evals.questions import Question
from align.evals.store import JsonlStore

log = logging.getLogger("align.evals")

ANSWER_KEY = ("model", "question_id", "turn")
Message = dict[str, str]


@dataclass(frozen=True)
class Generation:
    text: str
    ids: list[int]  # generated ids, the closing EOS included when the model stopped by itself
    finished: bool  # stopped at EOS (not cut by max_new_tokens)


@dataclass(frozen=True)
class AnswerSettings:
    greedy: bool = False
    max_new_tokens: int = 512
    batch_size: int = 8
    seed: int = 0

    def cache_key(self) -> dict[str, object]:
        """What cached answers depend on (batch_size does not change what a batch generates)."""
        return {"greedy": self.greedy, "max_new_tokens": self.max_new_tokens, "seed": self.seed}


def render(tokenizer, messages: list[Message], chat_template: str | None = None) -> list[int]:
    """Prompt ids of a conversation, ending with the assistant header (generation prompt)."""
    out = tokenizer.apply_chat_template(
        messages, chat_template=chat_template, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(out["input_ids"])


def stop_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, list) else [config_eos])
    return {i for i in ids if i is not None}


def generate(
    model, tokenizer, prompts: Sequence[list[int]], temperature: float, max_new_tokens: int, seed: int
) -> list[Generation]:
    """Complete a batch of prompt ids with `align.models.rollout.sample` (left-padded, KV cache, masks
    from lengths): greedy when `temperature` is 0, else plain sampling (no top-k/top-p, and no
    checkpoint generation_config in the way) from a generator seeded by `seed`."""
    from align.models.rollout import Sampling, sample

    dev = next(model.parameters()).device
    generator = torch.Generator(device=dev).manual_seed(seed) if temperature > 0 else None
    r = sample(
        model,
        prompts,
        Sampling(max_new_tokens=max_new_tokens, temperature=temperature),
        sorted(stop_ids(model, tokenizer)),
        tokenizer.pad_token_id,
        generator=generator,
    )
    results = []
    for row, n, ended in zip(r.response_ids.tolist(), r.response_len.tolist(), r.ended.tolist()):
        ids = row[:n]
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        results.append(Generation(text=text, ids=ids, finished=bool(ended)))
    return results


def conversation(q: Question, turn: int, earlier: Sequence[str]) -> list[Message]:
    """The messages before the answer to `turn` (1-based): earlier turns with the model's answers."""
    msgs: list[Message] = []
    for i in range(turn - 1):
        msgs += [{"role": "user", "content": q.turns[i]}, {"role": "assistant", "content": earlier[i]}]
    return [*msgs, {"role": "user", "content": q.turns[turn - 1]}]


def missing(ref: ModelRef, questions: list[Question], store: JsonlStore) -> list[tuple[Question, int]]:
    return [
        (q, t)
        for q in questions
        for t in range(1, len(q.turns) + 1)
        if (ref.label, q.question_id, t) not in store
    ]


def answer_questions(
    ref: ModelRef, questions: list[Question], store: JsonlStore, settings: AnswerSettings, loaded=None
) -> int:
    """Generate the answers `store` lacks for `ref`; returns how many were generated.
    `loaded` is an already loaded (model, tokenizer) for `ref`, else it is loaded here if needed."""
    todo = missing(ref, questions, store)
    if not todo:
        return 0
    model, tokenizer = loaded or load(ref)
    made = 0
    for turn in (1, 2):
        groups: dict[float, list[Question]] = defaultdict(list)
        for q, t in todo:
            if t == turn:
                groups[q.temperature(settings.greedy)].append(q)
        for temperature, qs in sorted(groups.items()):
            prompts = {
                q.question_id: render(tokenizer, _messages(ref, q, turn, store), ref.chat_template)
                for q in qs
            }
            qs = sorted(qs, key=lambda q: len(prompts[q.question_id]))  # similar lengths: less padding
            for start in range(0, len(qs), settings.batch_size):
                batch = qs[start : start + settings.batch_size]
                seed = zlib.crc32(repr((settings.seed, ref.label, turn, batch[0].question_id)).encode())
                gens = generate(
                    model,
                    tokenizer,
                    [prompts[q.question_id] for q in batch],
                    temperature,
                    settings.max_new_tokens,
                    seed,
                )
                store.append(_record(ref, q, turn, temperature, g) for q, g in zip(batch, gens))
                made += len(batch)
                log.info("answers %s: turn %d, %d/%d", ref.label, turn, made, len(todo))
    return made


def _messages(ref: ModelRef, q: Question, turn: int, store: JsonlStore) -> list[Message]:
    earlier = [store.get((ref.label, q.question_id, t))["text"] for t in range(1, turn)]
    return conversation(q, turn, earlier)


def _record(ref: ModelRef, q: Question, turn: int, temperature: float, g: Generation) -> dict:
    return {
        "model": ref.label,
        "question_id": q.question_id,
        "turn": turn,
        "category": q.category,
        "temperature": temperature,
        "text": g.text,
        "new_tokens": len(g.ids),
        "finished": g.finished,
    }


def answer_texts(store: JsonlStore, label: str, q: Question) -> list[str]:
    """The model's answers to every turn of `q` (all must be in the store)."""
    return [store.get((label, q.question_id, t))["text"] for t in range(1, len(q.turns) + 1)]
