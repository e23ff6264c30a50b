"""Fuzzing the real CLI entry point with generated recipes (hypothesis, derandomized).

Random key=value overrides on the tiny recipe, and random YAML documents (mutations of it and
pure junk), go through `align.cli.main(["train", path, *overrides])` in-process, with training
replaced by a sentinel. Properties: no traceback ever; exit 0 (reached training) or 2; an error is
one line whose subject is a key path (or the file, for unreadable YAML); and a recipe that reaches
training has every numeric value inside its declared range.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import re
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hub_helpers import closed_port, isolate_hub
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import align.train
from align.cli import main
from align.recipe import Recipe

TINY = Path(__file__).resolve().parent / "tiny.yaml"
BASE = yaml.safe_load(TINY.read_text())
FILE_LEVEL = ("invalid YAML", "a recipe must be a mapping at the top level", "cannot read the recipe")


def _schema(cls: type = Recipe, prefix: str = "") -> dict[str, Any]:
    """Dotted path -> type, for every section and leaf of the recipe."""
    out: dict[str, Any] = {}
    for name, tp in typing.get_type_hints(cls).items():
        out[prefix + name] = tp
        if dataclasses.is_dataclass(tp):
            out.update(_schema(tp, f"{prefix}{name}."))
    return out


SCHEMA = _schema()
LEAVES = sorted(p for p, tp in SCHEMA.items() if not dataclasses.is_dataclass(tp))


class Reached(BaseException):
    """Raised by the stand-in for train.run: the recipe passed every check (BaseException, so the
    CLI's handler for unexpected errors cannot swallow it)."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe


def _reached(recipe: Recipe, **kwargs: Any) -> None:
    raise Reached(recipe)


# -- strategies --------------------------------------------------------------------------------

name = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
junk_key = st.one_of(
    st.lists(name, min_size=1, max_size=3).map(".".join), st.sampled_from(["", "a..b", ".x", "lora.", "1"])
)
key = st.one_of(st.sampled_from(LEAVES), st.sampled_from(sorted(SCHEMA)), junk_key)
# fmt: off
SPECIAL = [
    "", "null", "~", "true", "no", "[]", "{}", "[1, 2]", "[0.9]", "[1.5, 2]", "[0.9, 0.999]", "{a: 1}",
    ".inf", "-.inf", ".nan", "nan", "inf", "1e38", "1e-5", "-1e-3", "0x1F", "1_000", "''", "' '",
    "[", "]", "{", ": x", "a: b: c", "!!binary aGk=", "!!python/object:os.system", "2020-13-45",
    "all-linear", "[q_proj, v_proj]", "[nope]", "eager", "flash_attention_2", "tensorboard", "[mlflow]",
    "auto", "dpo", "cdpo", "ipo", "hinge", "precompute", "bfloat16", "tiny-smollm2", "org/model", "./nope",
    "simpo", "orpo", "rpo", "dpo_norm", "apo_zero",
    "tests", "tests/tiny.yaml", "runs/fuzz", "\x00", "hf_planted", "0", "-1", "1", "2", "4294967296",
]
# fmt: on
scalar_text = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(-3, 300).map(str),
    st.floats().map(repr),
    st.text(max_size=12),
)


def _plausible(path: str) -> st.SearchStrategy[str]:
    """Values of the leaf's own kind, in range and just outside it, so valid recipes come up too."""
    tp = SCHEMA[path]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if len(args) == 1 and typing.get_origin(tp) is not list else tp
    edges = st.sampled_from([".inf", "-.inf", ".nan", "1e400", "2.5", "1e3", "-0.0", "9" * 30, ""])
    if base is int:
        return st.one_of(st.integers(-2, 9), st.integers(60_000, 70_000).map(str), edges).map(str)
    if base is float:
        return st.one_of(st.floats(-0.5, 1.5), st.floats(0, 20_000), edges).map(str)
    if base is bool:
        return st.sampled_from(["true", "false"])
    if typing.get_origin(base) is typing.Literal:
        return st.sampled_from([*map(str, typing.get_args(base)), "other"])
    return st.sampled_from(SPECIAL)


plausible = st.sampled_from(LEAVES).flatmap(lambda p: _plausible(p).map(lambda v: f"{p}={v}"))
override = st.one_of(
    plausible,
    st.tuples(key, scalar_text).map("=".join),
    st.text(max_size=8).filter(lambda s: "=" not in s),
).filter(lambda s: not s.startswith("-"))  # an option, for argparse: not a recipe
overrides = st.lists(override, min_size=1, max_size=3)

leaf_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 300),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(SPECIAL),
)
value = st.recursive(
    leaf_value, lambda c: st.lists(c, max_size=3) | st.dictionaries(name, c, max_size=3), max_leaves=6
)
mutation = st.tuples(st.sampled_from(["set", "delete"]), key, value)
document = st.one_of(
    st.lists(mutation, min_size=1, max_size=4).map(lambda ms: ("mutated", ms)),
    st.dictionaries(st.one_of(key, name, st.integers(), st.none(), st.booleans()), value, max_size=5).map(
        lambda d: ("random", d)
    ),
    st.text(max_size=60).map(lambda t: ("text", t)),
)


def _mutate(mutations: list[tuple[str, str, Any]]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    for op, dotted, v in mutations:
        *parents, last = dotted.split(".")
        node = doc
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        if op == "set":
            node[last] = v
        else:
            node.pop(last, None)
    return doc


# -- the properties ----------------------------------------------------------------------------


def _prefixes(keys: list[str]) -> set[str]:
    out = set()
    for k in keys:
        parts = k.split(".")
        out |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return out


def _doc_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    out = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        out += [path, *_doc_keys(v, path + ".")]
    return out


def _names_a_key(line: str, recipe_file: str, given: set[str]) -> bool:
    msg = line.removeprefix("align: error: ").removeprefix(f"{recipe_file}: ")
    if msg.startswith(FILE_LEVEL) or msg.startswith("override "):
        return True
    odd = re.match(r"(?:([^:\s']+): )?unknown key ", msg)  # a key like '' or 'a b': its section, quoted
    if odd:
        return odd[1] is None or odd[1] in SCHEMA or odd[1] in given
    head = re.match(r"[^:\s']+", msg)
    if head is None:
        return False
    path = re.sub(r"\[\d+\]", "", head[0])
    return path in SCHEMA or any(path == k or path.startswith(k + ".") for k in given)


def _in_ranges(obj: Any, where: str = "") -> None:
    for f in dataclasses.fields(obj):
        v, path = getattr(obj, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(v):
            _in_ranges(v, path + ".")
        elif (rng := f.metadata.get("range")) is not None and v is not None:
            assert all(x in rng for x in (v if isinstance(v, list) else [v])), f"{path}={v!r} outside {rng}"


class Fuzz:
    """Runs one recipe through the CLI and checks the properties; counts what it ran."""

    def __init__(self) -> None:
        self.runs = self.accepted = 0

    def __call__(self, recipe_file: str, argv_overrides: list[str], given: set[str]) -> None:
        out, err = io.StringIO(), io.StringIO()
        recipe = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["train", recipe_file, *argv_overrides])
            except Reached as r:
                code, recipe = 0, r.recipe
        self.runs += 1
        text = err.getvalue()
        assert "Traceback" not in text, text
        assert code in (0, 2), (code, text)
        if code == 0:
            self.accepted += 1
            _in_ranges(recipe)
            return
        lines = [ln for ln in text.splitlines() if ln.startswith("align: error:")]
        assert len(lines) == 1, text
        assert _names_a_key(lines[0], recipe_file, _prefixes(sorted(given))), (lines[0], given)


FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def fuzz(monkeypatch, tmp_path):
    monkeypatch.setattr(align.train, "run", _reached)
    isolate_hub(monkeypatch, tmp_path / "hf-cache", f"http://127.0.0.1:{closed_port()}")  # fails fast
    f = Fuzz()
    t0 = time.monotonic()
    yield f
    print(
        f"\nfuzz: {f.runs} recipes through the CLI ({f.accepted} accepted) in {time.monotonic() - t0:.1f} s"
    )


def test_fuzz_overrides(fuzz):
    @settings(FUZZ, max_examples=650)
    @given(overrides)
    def one(items: list[str]) -> None:
        fuzz(str(TINY), items, {i.split("=", 1)[0].strip() for i in items})

    one()
    assert fuzz.runs >= 600
    assert fuzz.accepted >= 30  # the valid corner is reached too, so preflight is fuzzed as well


def test_fuzz_documents(fuzz, tmp_path):
    path = tmp_path / "recipe.yaml"

    @settings(FUZZ, max_examples=450)
    @given(document, st.lists(override, max_size=2))
    def one(doc: tuple[str, Any], items: list[str]) -> None:
        kind, content = doc
        if kind == "text":
            path.write_bytes(content.encode("utf-8", "surrogatepass"))
            keys: list[str] = []
        else:
            data = _mutate(content) if kind == "mutated" else content
            path.write_text(
                yaml.safe_dump(data, allow_unicode=True), encoding="utf-8", errors="surrogatepass"
            )
            keys = _doc_keys(data)
        fuzz(str(path), items, {*keys, *(i.split("=", 1)[0].strip() for i in items)})

    one()
    assert fuzz.runs >= 400
    assert fuzz.accepted >= 10
