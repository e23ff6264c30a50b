"""Programmatic rewards for PPO, and how a recipe names one.

`ppo.reward_function: align.rewards:<name>` picks one of the functions below; `module:function`
imports a user's (imported only when named). A reward function takes the decoded prompts and
responses (and, when its signature asks for them, `response_ids`: lists of token ids, and
`answers`: each prompt record's `answer` column, for verifiable rewards) and returns one finite
number per response.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections.abc import Callable, Sequence

from align.util.errors import RecipeError

RewardFn = Callable[..., Sequence[float]]


def lowercase(prompts: list[str], responses: list[str]) -> list[float]:
    """Share of letters that are lower case (1.0 for a reply without letters): a simple,
    checkable preference for the 'reply in lowercase' style."""
    out = []
    for text in responses:
        letters = [c for c in text if c.isalpha()]
        out.append(sum(c.islower() for c in letters) / len(letters) if letters else 1.0)
    return out


def brevity(prompts: list[str], responses: list[str], target_words: int = 30) -> list[float]:
    """1 at or below `target_words` words, falling linearly to 0 at twice that."""
    out = []
    for text in responses:
        n = len(text.split())
        out.append(max(0.0, min(1.0, 2.0 - n / target_words)))
    return out


# a number: optional sign (not a hyphen after a word or digit), comma-grouped thousands, decimals
_NUMBER = re.compile(r"(?:(?<![\w.])[-\u2212])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\s*\{([^{}]*)\}")
_MARKER = re.compile(r"answer\s*(?:is|:|=)", re.IGNORECASE)
_EDGES = " \t\n*_$`\"'.,;:!?()[]"


def final_answer(response: str) -> str | None:
    """The response's final answer: the last `\\boxed{...}`, else what follows the last
    "Answer:" / "answer is" (the first number of that line, after its last "=" if any; else the
    rest of the line), else the last
    number anywhere; None when there is none. Markers win because a reply often restates the
    numbers of the question after giving its answer."""
    boxed = _BOXED.findall(response)
    if boxed:
        return boxed[-1].strip()
    markers = list(_MARKER.finditer(response))
    if markers:
        line = response[markers[-1].end() :].strip().split("\n", 1)[0]
        line = line.rsplit("=", 1)[-1]  # "Answer: 6 + 9 = 15": the result, not the sum's first term
        number = _NUMBER.search(line)
        line = line.strip(_EDGES)
        if number is not None:
            return number.group()
        if line:
            return line
    numbers = _NUMBER.findall(response)
    return numbers[-1] if numbers else None


def _as_number(text: str) -> float | None:
    text = text.strip(_EDGES).replace(",", "").replace("\u2212", "-")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def same_answer(got: str | None, want: str) -> bool:
    """Numerically equal when both read as numbers ("42.0" == "42", "1,000" == "1000"), else equal
    after lower-casing and stripping spaces, punctuation and markdown at the edges."""
    if got is None:
        return False
    a, b = _as_number(got), _as_number(want)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return " ".join(got.lower().strip(_EDGES).split()) == " ".join(want.lower().strip(_EDGES).split())


def exact_answer(prompts: list[str], responses: list[str], answers: list[str | None]) -> list[float]:
    """1.0 when the response's final answer (`final_answer`) equals the record's answer, else 0.0:
    a verifiable reward that cannot be gamed by style, for prompts with checkable answers."""
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        raise RecipeError(
            f"align.rewards:exact_answer: response {missing[0]} has no answer to check against "
            f"({len(missing)} of {len(answers)} without); the prompt records need an `answer` column"
        )
    return [float(same_answer(final_answer(r), str(a))) for r, a in zip(responses, answers, strict=True)]


BUILTIN = {"lowercase": lowercase, "brevity": brevity, "exact_answer": exact_answer}


def resolve(spec: str, where: str = "ppo.reward_function") -> RewardFn:
    """`align.rewards:name` or `package.module:function` -> the callable, or a RecipeError."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RecipeError(
            f"{where}: {spec!r} must look like `module:function` (e.g. align.rewards:lowercase)"
        )
    if module_name == "align.rewards" and attr not in BUILTIN:
        raise RecipeError(f"{where}: align.rewards has no {attr!r}; built in: {', '.join(sorted(BUILTIN))}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RecipeError(f"{where}: cannot import {module_name!r}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RecipeError(f"{where}: {module_name} has no function {attr!r}")
    return fn


def call(
    fn: RewardFn,
    prompts: list[str],
    responses: list[str],
    response_ids: list[list[int]],
    answers: Sequence[str | None] | None = None,
) -> list[float]:
    """Call `fn` (with `response_ids=` / `answers=` when its signature names them) and check what
    it returned: one finite number per response."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    name = getattr(fn, "__qualname__", repr(fn))
    kwargs: dict = {}
    if "response_ids" in params:
        kwargs["response_ids"] = response_ids
    if "answers" in params:
        if answers is None or any(a is None for a in answers):
            have = 0 if answers is None else sum(a is not None for a in answers)
            raise RecipeError(
                f"ppo.reward_function: {name} checks answers, but {len(responses) - have} of "
                f"{len(responses)} prompts have none; use prompt data with an `answer` column (or map "
                "one with data.columns: {answer: <column>}), e.g. data.card: align_math_v1"
            )
        kwargs["answers"] = list(answers)
    got = fn(prompts, responses, **kwargs)
    try:
        values = [float(v) for v in (got.tolist() if hasattr(got, "tolist") else got)]
    except (TypeError, ValueError):
        raise RecipeError(
            f"ppo.reward_function: {name} returned {type(got).__name__}, not one number per response"
        ) from None
    if len(values) != len(responses):
        raise RecipeError(
            f"ppo.reward_function: {name} returned {len(values)} values for {len(responses)} responses"
        )
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise RecipeError(
            f"ppo.reward_function: {name} returned a non-finite value ({values[bad[0]]}) for response "
            f"{bad[0]}: {responses[bad[0]][:80]!r}"
        )
    return values
