"""MT-Bench questions (FastChat's jsonl) and reference answers, checked record by record.

A question is `{"question_id", "category", "turns": [1-2 strings], "reference": [optional]}`.
Reference answers come from the question's own `reference` field or from a FastChat answer file
(`--references`, e.g. `reference_answer/gpt-4.jsonl`: `{"question_id", "choices": [{"turns": [...]}]}`),
which wins where both exist, as FastChat does. The default question set ships inside the package
(align/evals/data/questions.jsonl), so an eval needs nothing outside it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.data.readers import read_jsonl
from align.util.errors import DataError

DATA = Path(__file__).parent / "data"
DEFAULT_QUESTIONS = DATA / "questions.jsonl"
JUDGE_PROMPTS = DATA / "judge_prompts.jsonl"

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
# Judged against a reference answer (FastChat's NEED_REF_CATS).
NEED_REFERENCE = frozenset({"math", "reasoning", "coding", "arena-hard-200"})
# MT-Bench's sampling temperature per category (FastChat's temperature_config); others: 0.7.
TEMPERATURES = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
    "arena-hard-200": 0.0,
}
DEFAULT_TEMPERATURE = 0.7


@dataclass(frozen=True)
class Question:
    question_id: int | str
    category: str
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None = None

    def temperature(self, greedy: bool) -> float:
        return 0.0 if greedy else TEMPERATURES.get(self.category, DEFAULT_TEMPERATURE)

    def reference_guided(self, turn: int) -> bool:
        """Judged against a reference answer (math, reasoning, coding; when one exists)."""
        return self.category in NEED_REFERENCE and self.reference is not None and len(self.reference) >= turn


def _rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(str(path), None, None, "file not found")
    out = []
    for where, row in read_jsonl(path, str(path)):
        if isinstance(row, DataError):  # invalid JSON, not an object, bad UTF-8: names the line
            raise row
        out.append((where, row))
    return out


def _strings(
    value: Any, path: Path, where: str, field: str, lo: int, hi: int, empty: bool = False
) -> tuple[str, ...]:
    """A list of lo..hi strings (non-empty unless `empty`: MT-Bench has an empty reference)."""
    if not isinstance(value, list) or not lo <= len(value) <= hi:
        raise DataError(
            str(path), where, field, f"expected a list of {lo} to {hi} strings, got {value!r:.80}"
        )
    for i, v in enumerate(value):
        if not isinstance(v, str) or not (empty or v.strip()):
            raise DataError(str(path), where, f"{field}[{i}]", f"expected a non-empty string, got {v!r:.80}")
    return tuple(value)


def _qid(row: dict[str, Any], path: Path, where: str) -> int | str:
    qid = row.get("question_id")
    if isinstance(qid, bool) or not isinstance(qid, int | str) or qid == "":
        raise DataError(str(path), where, "question_id", f"expected an integer or a string, got {qid!r:.80}")
    return qid


def load_questions(path: str | Path | None = None, references: str | Path | None = None) -> list[Question]:
    """The questions of `path` (default: the shipped set), with references attached."""
    path = Path(path) if path is not None else DEFAULT_QUESTIONS
    refs = load_references(Path(references)) if references is not None else {}
    questions: list[Question] = []
    seen: dict[int | str, str] = {}
    for where, row in _rows(path):
        qid = _qid(row, path, where)
        if qid in seen:
            raise DataError(str(path), where, "question_id", f"{qid!r} already used at {seen[qid]}")
        seen[qid] = where
        category = row.get("category")
        if not isinstance(category, str) or not category.strip():
            raise DataError(
                str(path), where, "category", f"expected a non-empty string, got {category!r:.80}"
            )
        turns = _strings(row.get("turns"), path, where, "turns", 1, 2)
        reference = refs.get(qid)
        if reference is None and row.get("reference") is not None:
            reference = _strings(row["reference"], path, where, "reference", 1, 2, empty=True)
        questions.append(Question(qid, category, turns, reference))
    if not questions:
        raise DataError(str(path), None, None, "no questions in the file")
    return questions


def load_references(path: Path) -> dict[int | str, tuple[str, ...]]:
    """FastChat answer files (`choices[0].turns`) or plain `{"question_id", "reference": [...]}`."""
    out: dict[int | str, tuple[str, ...]] = {}
    for where, row in _rows(path):
        qid = _qid(row, path, where)
        if "reference" in row:
            out[qid] = _strings(row["reference"], path, where, "reference", 1, 2, empty=True)
            continue
        choices = row.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise DataError(
                str(path), where, "choices", "expected a list of {'turns': [...]} (FastChat answers)"
            )
        out[qid] = _strings(choices[0].get("turns"), path, where, "choices[0].turns", 1, 2, empty=True)
    return out


def fingerprint(questions: list[Question]) -> str:
    """Changes when any question, turn or reference changes (cached answers would be stale)."""
    text = json.dumps([[q.question_id, q.category, q.turns, q.reference] for q in questions])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
