"""Ask a judge, parse, retry an unparsable answer once, cache every judgment as it is made.

A judgment whose answer still has no rating (or verdict) after the retry is written with
`"error": "unparsable"` and a null result: it is counted per model in the tables and excluded
from every mean, never scored silently. Records go to the store in chunks, so an interrupted
eval re-asks at most one chunk (the judge's `batch`: its concurrent requests, or its batch size).
Each judgment records a hash of the answers it saw, so an answer that changed is judged again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from align.evals.judges import Judge, Request
from align.evals.store import JsonlStore

log = logging.getLogger("align.evals")


def answers_hash(*texts: str) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Item:
    record: dict[str, Any]  # the key fields and context (prompt name, category, ...)
    request: Request


@dataclass
class JudgeCounts:
    requests: int = 0  # prompts sent to the judge (HTTP retries of one prompt not included)
    judged: int = 0
    unparsable: int = 0


def judge_items(
    judge: Judge,
    items: list[Item],
    parse: Callable[[str], Any],
    result_field: str,
    store: JsonlStore,
    counts: JudgeCounts,
) -> None:
    step = max(1, getattr(judge, "batch", 1))
    for start in range(0, len(items), step):
        chunk = items[start : start + step]
        texts = judge.complete([it.request for it in chunk])
        counts.requests += len(chunk)
        tries = [1] * len(chunk)
        bad = [i for i, t in enumerate(texts) if parse(t) is None]
        if bad:  # ask once more; a second failure is recorded as such
            again = judge.complete([chunk[i].request for i in bad])
            counts.requests += len(bad)
            for i, text in zip(bad, again):
                texts[i], tries[i] = text, 2
        records = []
        for it, text, n in zip(chunk, texts, tries):
            value = parse(text)
            rec = {**it.record, result_field: value, "tries": n, "judgment": text}
            if value is None:
                rec["error"] = "unparsable"
                counts.unparsable += 1
            records.append(rec)
        store.append(records)
        counts.judged += len(chunk)
        log.info("judge %s: %d/%d judged", judge.name, min(start + step, len(items)), len(items))
