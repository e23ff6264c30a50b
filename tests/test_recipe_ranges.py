"""Every numeric recipe field declares its allowed range, and `build` enforces it generically.

These tests walk the dataclasses instead of listing fields, so a field added later without a
range (or with a default outside it) fails here rather than as a traceback mid-run.
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest

from align.recipe import Range, Recipe, build
from align.util.errors import RecipeError


def _numeric(tp: typing.Any) -> type | None:
    """int or float when the field holds numbers (directly, optionally, or as a list), else None."""
    if tp in (int, float):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is list or (len(args) == 1 and typing.get_origin(tp) is not None):
        return _numeric(args[0]) if args else None
    return None


def _fields(cls: type = Recipe, prefix: str = "") -> list[tuple[str, type, dataclasses.Field, type, bool]]:
    """(dotted path, section class, field, int/float, is-a-list) for every numeric field."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _fields(tp, f"{prefix}{f.name}.")
        elif (num := _numeric(tp)) is not None:
            out.append((f"{prefix}{f.name}", cls, f, num, typing.get_origin(tp) is list))
    return out


NUMERIC = _fields()
IDS = [path for path, *_ in NUMERIC]


def _section(path: str) -> str:
    return path.rpartition(".")[0]


def _build_one(path: str, cls: type, name: str, value: typing.Any) -> typing.Any:
    return build(cls, {name: value}, _section(path))


def test_walk_finds_every_section_and_the_new_keys():
    sections = {_section(p) for p in IDS}
    assert {"", "lora", "data", "optim", "train", "report"} <= sections
    assert {"train.max_bad_steps", "optim.adam_betas", "seed", "beta", "data.max_prompt_length"} <= set(IDS)
    assert len(IDS) >= 30


@pytest.mark.parametrize(("path", "cls", "f", "num", "is_list"), NUMERIC, ids=IDS)
def test_every_numeric_field_has_a_range_containing_its_default(path, cls, f, num, is_list):
    rng = f.metadata.get("range")
    assert isinstance(rng, Range), f"{path} declares no range"
    default = getattr(cls(), f.name)
    for v in default if is_list else [default]:
        assert v is None or v in rng, f"{path}: default {v} outside {rng}"
    if num is float:  # every float range is finite, so a finite check alone never has to carry it
        assert math.isfinite(rng.lo) and math.isfinite(rng.hi)


def _outside(rng: Range, num: type) -> list[float]:
    below = rng.lo if rng.lo_open else rng.lo - 1
    above = rng.hi if rng.hi_open else rng.hi + 1
    return [num(below), num(above)]


@pytest.mark.parametrize(("path", "cls", "f", "num", "is_list"), NUMERIC, ids=IDS)
def test_out_of_range_is_rejected_naming_key_and_range(path, cls, f, num, is_list):
    rng = f.metadata["range"]
    for bad in _outside(rng, num):
        value = [bad] * (f.metadata.get("length") or 1) if is_list else bad
        with pytest.raises(RecipeError) as err:
            _build_one(path, cls, f.name, value)
        key = f"{path}[0]" if is_list else path
        assert str(err.value) == f"{key}: {bad!r} is out of range {rng}"


@pytest.mark.parametrize(("path", "cls", "f", "num", "is_list"), NUMERIC, ids=IDS)
def test_closed_bounds_are_accepted(path, cls, f, num, is_list):
    rng = f.metadata["range"]
    for edge, is_open in ((rng.lo, rng.lo_open), (rng.hi, rng.hi_open)):
        if is_open:
            continue
        value = [num(edge)] * (f.metadata.get("length") or 1) if is_list else num(edge)
        assert getattr(_build_one(path, cls, f.name, value), f.name) == value


FLOATS = [(p, c, f) for p, c, f, num, _ in NUMERIC if num is float]


@pytest.mark.parametrize(("path", "cls", "f"), FLOATS, ids=[p for p, *_ in FLOATS])
@pytest.mark.parametrize("value", [math.inf, -math.inf, "inf", "-Infinity"])
def test_every_float_must_be_finite(path, cls, f, value):
    with pytest.raises(RecipeError, match=rf"^{path}(\[0\])?: expected a finite number"):
        _build_one(path, cls, f.name, [value, value] if f.metadata.get("length") else value)


def test_list_length_is_checked():
    with pytest.raises(RecipeError, match=r"^optim.adam_betas: expected 2 numbers in \[0, 1\), got \[0.9\]$"):
        build(Recipe, {"optim": {"adam_betas": [0.9]}})


def test_range_text_round_trips():
    for text in ("(0, 10]", "[0, 1)", "[1, 2147483647]", "(0, 1e-06]"):
        assert str(Range.parse(text)) == text
    assert 10 in Range.parse("(0, 10]") and 0 not in Range.parse("(0, 10]")
    with pytest.raises(ValueError):
        Range.parse("0..10")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": {"disable_dropout": 2}}, "model.disable_dropout: expected true/false, got 2"),
        ({"output_dir": ""}, "output_dir: expected a non-empty string without NUL bytes, got ''"),
        ({"model": {"name": "a\0b"}}, "model.name: expected a non-empty string without NUL bytes"),
        ({"resume": "sometimes"}, "resume: expected true/false or one of ['auto'], got 'sometimes'"),
        ({"train": {"max_steps": 2.5}}, "train.max_steps: expected an integer, got 2.5"),
        ({"train": {"max_steps": 1e400}}, "train.max_steps: expected an integer or null, got inf"),
        ({"optim": {"max_grad_norm": float("inf")}}, "optim.max_grad_norm: expected a finite number"),
        ({"lora": {"target_modules": ["q_proj", 3]}}, "lora.target_modules[1]: expected a string, got 3"),
        ({"seed": 2**40}, "seed: 1099511627776 is out of range [0, 4294967295]"),
        ({7: 1}, "unknown key 7 (known keys: "),
        ({"lora": {"": 1}}, "lora: unknown key '' (known keys: alpha, dropout, r, target_modules)"),
    ],
)
def test_kinds_of_bad_values(data, message):
    with pytest.raises(RecipeError) as err:
        build(Recipe, data)
    assert str(err.value).startswith(message)


def test_a_section_left_empty_means_its_defaults():
    r = build(Recipe, {"lora": None})
    assert r.lora.r == 16
