"""`align eval accuracy`: per-prompt greedy accuracy of a run and its base on the run's held-out
prompts, paired bootstrap interval; the same numbers as the run's own before/after eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_helpers import ROOT

from align.cli import main
from align.methods import load_recipe
from align.train import run

ONLINE = ROOT / "tests" / "online_tiny.yaml"


@pytest.fixture(scope="module")
def math_run(tmp_path_factory) -> tuple[Path, dict]:
    """One GRPO step of the embedded SmolLM2 on 8 held-out align_math_v1 prompts (it answers some)."""
    out = tmp_path_factory.mktemp("math") / "run"
    overrides = [
        f"output_dir={out}",
        "model.name=smollm2-135m-instruct",
        "optim.lr=1e-3",
        "data.card=align_math_v1",
        "data.max_train_examples=2",
        "data.max_eval_examples=8",
        "train.per_device_batch_size=1",
        "train.gradient_accumulation_steps=2",
        "train.max_steps=1",
        "online.reward_function=align.rewards:exact_answer",
        "online.group_size=2",
        "online.max_new_tokens=24",
        "online.eval_prompts=8",
    ]
    return out, run(load_recipe(ONLINE, overrides))


def test_accuracy_matches_the_runs_own_eval_and_pairs_prompts(math_run, capsys):
    out, summary = math_run
    assert main(["eval", "accuracy", str(out), "--batch-size", "3"]) == 0
    table = capsys.readouterr().out
    assert "| run | n | base accuracy" in table and str(out) in table
    result = json.loads((out / "evals" / "accuracy" / "results.json").read_text())
    base, after = result["per_prompt"]["base"], result["per_prompt"]["run"]
    assert len(base) == len(after) == result["n"] == 8 and set(base + after) <= {0.0, 1.0}
    assert sum(base) / 8 == pytest.approx(summary["before"]["eval/accuracy"])  # the base answers some
    assert sum(after) / 8 == pytest.approx(summary["after"]["eval/accuracy"])
    assert 0 < sum(base) < 8
    d = result["difference"]
    assert d["mean_diff"] == pytest.approx((sum(after) - sum(base)) / 8)
    assert d["low"] <= d["mean_diff"] <= d["high"] and d["inside_noise"] == (d["low"] <= 0 <= d["high"])
    assert result["accuracy"]["mean"] == pytest.approx(sum(after) / 8)


def test_a_run_without_answers_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    run(load_recipe(ONLINE, [f"output_dir={out}", "train.max_steps=1", "report.eval_before=false"]))
    assert main(["eval", "accuracy", str(out)]) != 0
    assert "held-out prompts (16) do not all have an `answer`" in capsys.readouterr().err
    assert main(["eval", "accuracy", str(out), "--batch-size", "0"]) != 0
    assert "--batch-size: must be at least 1" in capsys.readouterr().err
    assert main(["eval", "accuracy", str(tmp_path / "nope")]) != 0
    assert "does not exist" in capsys.readouterr().err
