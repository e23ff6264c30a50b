"""Programmatic rewards for PPO, and how a recipe names one.

`ppo.reward_function: align.rewards:<name>` picks one of the functions below; `module:function`
imports a user's (imported only when named). A reward function takes the decoded prompts and
responses (and, when its signature asks for them, `response_ids`: lists of token ids) and returns
one finite number per response.
"""

from __future__ import annotations

import importlib
import inspect
import math
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


BUILTIN = {"lowercase": lowercase, "brevity": brevity}


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
    fn: RewardFn, prompts: list[str], responses: list[str], response_ids: list[list[int]]
) -> list[float]:
    """Call `fn` and check what it returned: one finite number per response."""
    try:
        takes_ids = "response_ids" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_ids = False
    got = fn(prompts, responses, response_ids=response_ids) if takes_ids else fn(prompts, responses)
    name = getattr(fn, "__qualname__", repr(fn))
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
