"""Checkable answers on prompt records: read from an `answer` column (mappable, numbers as text),
bad ones refused with file, line and field, carried into the prepared examples and the cache key,
kept by PPO's prompt view; and the bundled set align_math_v1 that has them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from align.data.cards import REPO_ROOT, load_card, load_card_records
from align.data.parse import parse_prompt
from align.data.prepare import fingerprint, prepare
from align.data.records import PromptRecord, RecordError
from align.data.tokenize import TokenizeConfig
from align.methods.rollout_phase import unique_prompts
from align.models.load import load_tokenizer
from align.recipe import DataConfig, ModelConfig
from align.rewards import exact_answer
from align.util.errors import DataError


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_answers_are_read_as_text() -> None:
    def answer(row, columns=None):
        return parse_prompt(row, source="d.jsonl", where="line 1", columns=columns).answer

    assert answer({"prompt": "q", "answer": " 42 "}) == "42"
    assert answer({"prompt": "q", "answer": 42}) == "42"
    assert answer({"prompt": "q", "answer": -2.5}) == "-2.5"
    assert answer({"prompt": "q"}) is None and answer({"prompt": "q", "answer": None}) is None
    assert answer({"prompt": "q", "gold": 7}, {"answer": "gold"}) == "7"
    assert answer({"prompt": "q", "answer": 1, "gold": 7}, {"answer": "gold"}) == "7"


@pytest.mark.parametrize(
    ("value", "category", "detail"),
    [
        ([4], "wrong type", "expected a string or a number as the answer, got list"),
        (True, "wrong type", "got bool"),
        ({"n": 4}, "wrong type", "got dict"),
        ("  ", "empty answer", ""),
    ],
)
def test_a_bad_answer_names_file_record_and_field(value, category: str, detail: str) -> None:
    with pytest.raises(RecordError) as info:
        parse_prompt(
            {"prompt": "q", "gold": value}, source="d.jsonl", where="line 3", columns={"answer": "gold"}
        )
    assert str(info.value).startswith(f"d.jsonl: line 3: field 'gold': {category}")
    assert detail in str(info.value) and info.value.category == category


def test_answers_reach_the_prepared_examples_and_the_cache_key(tok, tmp_path: Path) -> None:
    rows = [
        {"prompt": [{"role": "user", "content": "What is 2 + 3?"}], "solution": 5},
        {"prompt": "What is 4 x 2?", "solution": "8"},
        {"prompt": "Name a colour."},
        {"prompt": "What is 4 x 2?", "solution": "9"},  # a repeat: PPO's prompt view keeps the first
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    data = DataConfig(path=path, format="prompts", heldout_fraction=0.0, columns={"answer": "solution"})
    out = prepare(data, tok, want="prompts")
    assert [ex.get("answer") for ex in out.train] == ["5", "8", None, "9"]
    assert sorted(out.train[0]) == ["answer", "index", "origin", "prompt_ids"]
    assert [ex.get("answer") for ex in unique_prompts(out.train)] == ["5", "8", None]
    unmapped = prepare(DataConfig(path=path, format="prompts", heldout_fraction=0.0), tok, want="prompts")
    assert all("answer" not in ex for ex in unmapped.train) and unmapped.fingerprint != out.fingerprint
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "solution": [1]}])
    with pytest.raises(
        DataError, match=rf"(?s)^{bad}: 1 bad record of 1 .*\n  {bad}: line 1: field 'solution'"
    ):
        prepare(DataConfig(path=bad, format="prompts", columns={"answer": "solution"}), tok, want="prompts")
    args = dict(
        held=[], config=TokenizeConfig(128, 64), tokenizer=tok, template_text=None, on_bad_record="error"
    )
    keys = {fingerprint([PromptRecord("Q", "d:1", answer)], **args) for answer in (None, "1", "2")}
    assert len(keys) == 3


def test_bundled_math_card_matches_its_file_and_generator(tok) -> None:
    card = load_card("align_math_v1")
    meta = yaml.safe_load(card.path.read_text().split("---")[1])
    records, stats = load_card_records(card)
    assert (card.format, card.license, card.size, stats.kept, stats.bad) == (
        "prompts",
        "Apache-2.0",
        400,
        400,
        0,
    )
    assert all(r.answer is not None and r.answer.isdigit() for r in records)
    rows = [json.loads(line) for line in Path(card.source).read_text().splitlines()]
    counts = {c: sum(1 for r in rows if r["category"] == c) for c in meta["categories"]}
    assert counts == meta["categories"] and sum(counts.values()) == 400
    spec = importlib.util.spec_from_file_location(
        "build_math", REPO_ROOT / "data_cards" / "build_align_math.py"
    )
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.build() == rows  # the generator reproduces the file (and its checks pass)
    replies = [f"Answer: {r['answer']}" for r in rows]
    assert exact_answer([""] * 400, replies, [r.answer for r in records]) == [1.0] * 400
    out = prepare(DataConfig(card="align_math_v1", max_prompt_length=96), tok, want="prompts")
    assert (len(out.train), len(out.eval)) == (350, 50)  # the card's 12.5% held-out split
    assert all("answer" in ex for ex in out.train + out.eval)
    lengths = [len(ex["prompt_ids"]) for ex in out.train + out.eval]
    assert out.token_stats == {"records": 400} and (min(lengths), max(lengths)) == (
        49,
        63,
    )  # as the card says
