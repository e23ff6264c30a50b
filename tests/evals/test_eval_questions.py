"""Questions, judge prompts, rating/verdict parsing, stores and statistics (no model, no server)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from eval_helpers import SHARED

from align.evals import ratings, stats
from align.evals.questions import (
    CATEGORIES,
    DEFAULT_QUESTIONS,
    JUDGE_PROMPTS,
    NEED_REFERENCE,
    load_questions,
)
from align.evals.store import JsonlStore
from align.util.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_judge_prompts_are_fastchats_and_packaged():
    assert JUDGE_PROMPTS.read_bytes() == (SHARED / "judge_prompts.jsonl").read_bytes()
    notice = (JUDGE_PROMPTS.parent / "NOTICE.md").read_text()
    assert "FastChat" in notice and "Apache License, Version 2.0" in notice
    block = re.search(r'^"align" = \[(.*?)\]', (ROOT / "pyproject.toml").read_text(), re.S | re.M)[1]
    globs = re.findall(r'"([^"]+)"', block)  # [tool.setuptools.package-data] (tomllib needs 3.11)
    packaged = {p for g in globs for p in (ROOT / "align").glob(g)}
    for needed in (
        DEFAULT_QUESTIONS,
        JUDGE_PROMPTS,
        JUDGE_PROMPTS.parent / "NOTICE.md",
        *(ROOT / "align" / "evals" / "metrics").glob("*/*.py"),
    ):
        assert needed in packaged, needed


def test_shipped_question_set():
    qs = load_questions()
    assert len(qs) >= 16
    assert len({q.question_id for q in qs}) == len(qs)
    for c in CATEGORIES:
        assert sum(q.category == c for q in qs) >= 2, c
    assert all(len(q.turns) == 2 for q in qs)
    for q in qs:
        if q.category in NEED_REFERENCE:
            assert q.reference is not None and len(q.reference) == 2, q.question_id
            assert q.reference_guided(1) and q.reference_guided(2)
        else:
            assert not q.reference_guided(1)


def outputs_for(output_format: str) -> list[tuple[str, object]]:
    """Judge outputs in a prompt's declared format, with what each must parse to."""
    if output_format == "[[rating]]":
        fill = lambda v: output_format.replace("rating", v)
        return [
            (f"Good answer. Rating: {fill('7')}", 7.0),
            (f"Rating: {fill('8.5')}", 8.5),
            ("Explanation... Rating: [6]", 6.0),  # FastChat's single-bracket fallback
            ('The format is "[[rating]]", for example [[5]]. My verdict: Rating: [[3]]', 3.0),
            ("Rating: [[11]]", None),
            ("Rating: [[0]]", None),
            ("I cannot rate this.", None),
            ("", None),
        ]
    fill = lambda v: output_format.replace("A", v)
    return [
        (f"A is more helpful. {fill('A')}", "A"),
        (f"{fill('B')}", "B"),
        (f"Equally good: {fill('C')}", "tie"),
        (f"Considered {fill('A')} at first, but final verdict: {fill('B')}", "B"),
        ("No verdict here.", None),
        ("[[D]]", None),
    ]


def test_parse_every_judge_prompt_format():
    prompts = ratings.load_judge_prompts()
    assert len(prompts) == 8
    for p in prompts.values():
        for text, want in outputs_for(p.output_format):
            got = (
                ratings.parse_rating(text)
                if p.type == "single"
                else ratings.parse_verdict(text, p.output_format)
            )
            assert got == want, (p.name, text)
    assert ratings.parse_verdict("[A]", "[[A]]") is None  # pair-v2 wants double brackets
    assert ratings.parse_verdict("so [B]", "[A]") == "B"  # FastChat's older pair-v1 format


def real_questions():
    return load_questions(SHARED / "question.jsonl", SHARED / "reference_answer_gpt-4.jsonl")


def test_prompt_selection_on_the_real_mt_bench():
    qs = real_questions()
    assert len(qs) == 80
    prompts = ratings.load_judge_prompts()
    placeholder = re.compile(r"\{(question|answer|ref_answer)\w*\}")
    for q in qs:
        answers = [f"ANSWER-1-{q.question_id}", f"ANSWER-2-{q.question_id}"]
        for turn in (1, 2):
            name, (system, user) = ratings.single_request(prompts, q, turn, answers)
            guided = q.category in ("math", "reasoning", "coding")
            assert name == ("single-math-v1" if guided else "single-v1") + (
                "-multi-turn" if turn == 2 else ""
            )
            assert system == prompts[name].system_prompt
            assert not placeholder.search(user)
            assert answers[turn - 1] in user and q.turns[turn - 1] in user
            if turn == 2:  # the conversation: turn 1's question and answer are shown too
                assert answers[0] in user and q.turns[0] in user
            if guided:
                assert q.reference[turn - 1] in user  # GPT-4's reference answer, from the answer file
            pname, (_, puser) = ratings.pair_request(prompts, q, turn, ["A1", "A2"], ["B1", "B2"])
            assert pname.startswith("pair-math-v1" if guided else "pair-v2")
            assert not placeholder.search(puser)
            assert puser.index(f"A{turn}") < puser.index(f"B{turn}")


def test_reference_file_wins_over_the_question_field(tmp_path):
    qs = tmp_path / "q.jsonl"
    qs.write_text(
        json.dumps({"question_id": 7, "category": "math", "turns": ["1+1?"], "reference": ["two"]}) + "\n"
    )
    assert load_questions(qs)[0].reference == ("two",)
    refs = tmp_path / "r.jsonl"
    refs.write_text(json.dumps({"question_id": 7, "choices": [{"index": 0, "turns": ["2"]}]}) + "\n")
    assert load_questions(qs, refs)[0].reference == ("2",)


@pytest.mark.parametrize(
    "row, where",
    [
        ({"question_id": 1, "category": "math"}, "line 2: field 'turns'"),
        ({"question_id": 1, "category": "math", "turns": ["a", "b", "c"]}, "line 2: field 'turns'"),
        ({"question_id": 1, "category": "", "turns": ["a"]}, "line 2: field 'category'"),
        ({"question_id": None, "category": "math", "turns": ["a"]}, "line 2: field 'question_id'"),
        (
            {"question_id": 0, "category": "math", "turns": ["a"]},
            "line 2: field 'question_id': 0 already used",
        ),
        ({"question_id": 1, "category": "math", "turns": ["a", ""]}, "line 2: field 'turns[1]'"),
        (
            {"question_id": 1, "category": "math", "turns": ["a"], "reference": "x"},
            "line 2: field 'reference'",
        ),
    ],
)
def test_bad_question_records_name_file_line_and_field(tmp_path, row, where):
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"question_id": 0, "category": "math", "turns": ["ok"]}) + "\n" + json.dumps(row) + "\n"
    )
    with pytest.raises(DataError) as err:
        load_questions(path)
    assert str(err.value).startswith(f"{path}: {where}")


def test_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 1, "category": "math", "turns": ["a"]}\n{not json\n')
    with pytest.raises(DataError, match=r"q\.jsonl: line 2: invalid JSON"):
        load_questions(path)
    with pytest.raises(DataError, match="file not found"):
        load_questions(tmp_path / "absent.jsonl")


def test_store_drops_a_torn_line_and_keeps_the_rest(tmp_path):
    path = tmp_path / "a.jsonl"
    store = JsonlStore(path, ("model", "turn"))
    store.append([{"model": "m", "turn": 1, "text": "one"}, {"model": "m", "turn": 2, "text": "two"}])
    with open(path, "a") as f:
        f.write('{"model": "m", "turn": 3, "te')  # killed mid-append
    reopened = JsonlStore(path, ("model", "turn"))
    assert set(reopened.rows) == {("m", 1), ("m", 2)}
    reopened.append([{"model": "m", "turn": 3, "text": "three"}, {"model": "m", "turn": 1, "text": "new"}])
    lines = [json.loads(line) for line in path.read_text().splitlines()]  # every line whole
    assert len(lines) == 4
    again = JsonlStore(path, ("model", "turn"))
    assert again.get(("m", 1))["text"] == "new" and again.get(("m", 3))["text"] == "three"
    path.write_text('{"model": "m", "turn": 1}\n{"model": "m"}\n')
    with pytest.raises(DataError, match=r"a\.jsonl: line 2: not a record of this cache"):
        JsonlStore(path, ("model", "turn"))


def test_bootstrap_metrics_loaded_by_path():
    scores = [3.0, 5.0, 7.0, 9.0, 4.0, 6.0]
    ci = stats.mean_ci(scores)
    assert ci["mean"] == pytest.approx(5.666666, abs=1e-5) and ci["n"] == 6
    assert min(scores) <= ci["low"] < ci["mean"] < ci["high"] <= max(scores)
    assert stats.mean_ci(scores) == ci  # seeded: reproducible
    flat = stats.mean_ci([4.0] * 5)
    assert flat["low"] == flat["high"] == flat["mean"] == 4.0
    empty = stats.mean_ci([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])
    same = stats.paired_difference([5.0, 6.0, 7.0], [5.0, 6.0, 7.0])
    assert same["mean_diff"] == 0.0 and same["inside_noise"]
    apart = stats.paired_difference([9.0, 8.0, 9.0, 8.0, 9.0, 8.0], [2.0, 3.0, 2.0, 1.0, 2.0, 3.0])
    assert apart["mean_diff"] == pytest.approx(6.333333, abs=1e-5) and not apart["inside_noise"]
    noisy = stats.paired_difference([9.0, 1.0, 8.0, 2.0], [1.0, 9.0, 2.0, 8.0])
    assert noisy["inside_noise"]


def test_results_saved_with_versions(tmp_path):
    path = stats.save_results(tmp_path / "results.json", rows=[{"m": float("nan")}], judge="j")
    data = json.loads(path.read_text())
    assert data["rows"] == [{"m": None}] and data["judge"] == "j"
    assert data["_evaluate_version"] and data["_python_version"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
