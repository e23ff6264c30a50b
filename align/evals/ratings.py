"""MT-Bench judge prompts (FastChat's, shipped in align/evals/data) and parsing what judges say.

Single-answer grading uses `single-v1` (`single-math-v1`, reference-guided, for math, reasoning
and coding) and their `-multi-turn` variants for turn 2; pairwise uses `pair-v2` / `pair-math-v1`
likewise. Ratings are read as `[[r]]`, else `[r]` (FastChat's two patterns), 1 <= r <= 10.
Where FastChat takes the first match we take the last: judges reason first and rate last, and a
quoted format example ("e.g. [[5]]") comes before the verdict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from align.evals.questions import JUDGE_PROMPTS, Question
from align.util.errors import DataError

RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")
VERDICT = {"[[A]]": re.compile(r"\[\[([ABC])\]\]"), "[A]": re.compile(r"\[([ABC])\]")}
WINNER = {"A": "A", "B": "B", "C": "tie"}


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    type: str  # "single" | "pairwise"
    system_prompt: str
    prompt_template: str
    output_format: str  # "[[rating]]" | "[[A]]" | "[A]"


def load_judge_prompts(path: Path = JUDGE_PROMPTS) -> dict[str, JudgePrompt]:
    out = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt = JudgePrompt(**{k: row[k] for k in JudgePrompt.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(str(path), f"line {number}", None, f"not a judge prompt ({e})") from None
        out[prompt.name] = prompt
    return out


def parse_rating(text: str) -> float | None:
    """The judge's 1-10 rating, or None when there is none (or it is out of range)."""
    for pattern in (RATING, RATING_FALLBACK):
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if 1.0 <= value <= 10.0 else None
    return None


def parse_verdict(text: str, output_format: str = "[[A]]") -> str | None:
    """ "A", "B" or "tie" from a pairwise judgment, or None when there is no verdict."""
    found = VERDICT.get(output_format, VERDICT["[[A]]"]).findall(text)
    return WINNER[found[-1]] if found else None


def prompt_name(kind: str, q: Question, turn: int) -> str:
    """single-v1 / single-math-v1 / pair-v2 / pair-math-v1, with -multi-turn for turn 2."""
    math = q.reference_guided(turn)
    base = {"single": ("single-v1", "single-math-v1"), "pairwise": ("pair-v2", "pair-math-v1")}[kind][math]
    return base + ("-multi-turn" if turn > 1 else "")


def _fields(q: Question, turn: int, answers: dict[str, list[str]]) -> dict[str, str]:
    """Template fields: the question(s), each answer list under its prefix, references."""
    out: dict[str, str] = {}
    if turn == 1:
        out["question"] = q.turns[0]
        for prefix, texts in answers.items():
            out[prefix] = texts[0]
    else:
        out["question_1"], out["question_2"] = q.turns[0], q.turns[1]
        for prefix, texts in answers.items():
            out[f"{prefix}_1"], out[f"{prefix}_2"] = texts[0], texts[1]
    if q.reference_guided(turn):
        for i, ref in enumerate(q.reference or (), start=1):
            out[f"ref_answer_{i}"] = ref
    return out


def single_request(prompts: dict[str, JudgePrompt], q: Question, turn: int, answers: list[str]):
    """(prompt name, (system, user)) grading one model's answer to `turn`."""
    p = prompts[prompt_name("single", q, turn)]
    return p.name, (p.system_prompt, p.prompt_template.format(**_fields(q, turn, {"answer": answers})))


def pair_request(prompts: dict[str, JudgePrompt], q: Question, turn: int, a: list[str], b: list[str]):
    """(prompt name, (system, user)) comparing assistant A's and B's answers to `turn`."""
    p = prompts[prompt_name("pairwise", q, turn)]
    fields = _fields(q, turn, {"answer_a": a, "answer_b": b})
    return p.name, (p.system_prompt, p.prompt_template.format(**fields))
