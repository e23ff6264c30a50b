"""`align eval heldout`: per-prompt greedy accuracy and sampled reward of a run and its base on the
run's held-out prompts, paired bootstrap intervals; accuracy equals the run's own before/after eval."""

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
    assert main(["eval", "heldout", str(out), "--batch-size", "3"]) == 0
    table = capsys.readouterr().out
    assert "| run | measure | n |" in table and "accuracy (greedy)" in table and "reward" not in table
    result = json.loads((out / "evals" / "heldout" / "results.json").read_text())
    assert result["n"] == 8 and "reward" not in result
    result = result["accuracy"]
    base, after = result["per_prompt"]["base"], result["per_prompt"]["run"]
    assert len(base) == len(after) == 8 and set(base + after) <= {0.0, 1.0}
    assert sum(base) / 8 == pytest.approx(summary["before"]["eval/accuracy"])  # the base answers some
    assert sum(after) / 8 == pytest.approx(summary["after"]["eval/accuracy"])
    assert 0 < sum(base) < 8
    d = result["difference"]
    assert d["mean_diff"] == pytest.approx((sum(after) - sum(base)) / 8)
    assert d["low"] <= d["mean_diff"] <= d["high"] and d["inside_noise"] == (d["low"] <= 0 <= d["high"])
    assert result["run"]["mean"] == pytest.approx(sum(after) / 8)


def test_a_run_without_answers_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    run(load_recipe(ONLINE, [f"output_dir={out}", "train.max_steps=1", "report.eval_before=false"]))
    assert main(["eval", "heldout", str(out)]) != 0
    assert "held-out prompts (8) do not all have an `answer` and no reward run" in capsys.readouterr().err
    assert main(["eval", "heldout", str(out), "--samples", "0"]) != 0
    assert "--samples: must be at least 1" in capsys.readouterr().err
    assert main(["eval", "heldout", str(out), "--reward-run", str(tmp_path / "nope")]) != 0
    assert "not a finished reward run" in capsys.readouterr().err
    assert main(["eval", "heldout", str(tmp_path / "nope")]) != 0
    assert "does not exist" in capsys.readouterr().err


def test_sampled_reward_is_paired_seeded_and_scored_like_training(tmp_path, capsys):
    """A tiny reward run scores a tiny RLOO run's samples (its own online.reward_run)."""
    rm = tmp_path / "rm"
    run(load_recipe(ROOT / "tests" / "tiny.yaml", ["method=reward", f"output_dir={rm}", "train.max_steps=2"]))
    out = tmp_path / "rloo"
    overrides = [f"output_dir={out}", "method=rloo", "online.reward_function=null", f"online.reward_run={rm}"]
    run(load_recipe(ONLINE, [*overrides, "train.max_steps=2", "report.eval_before=false"]))
    assert main(["eval", "heldout", str(out), "--samples", "2", "--batch-size", "5"]) == 0
    assert "reward (mean of 2 samples)" in capsys.readouterr().out
    first = json.loads((out / "evals" / "heldout" / "results.json").read_text())
    assert first["reward_run"] == str(rm) and "accuracy" not in first
    r = first["reward"]
    base, after = r["per_prompt"]["base"], r["per_prompt"]["run"]
    assert len(base) == len(after) == first["n"] == 8  # online_tiny.yaml: eval_prompts 8
    assert base != after  # the trained adapter samples (or scores) differently
    assert r["difference"]["mean_diff"] == pytest.approx((sum(after) - sum(base)) / 8)
    assert main(["eval", "heldout", str(out), "--samples", "2", "--batch-size", "5"]) == 0
    again = json.loads((out / "evals" / "heldout" / "results.json").read_text())["reward"]
    assert again["per_prompt"] == r["per_prompt"]  # seeded: the same samples again


def test_token_and_text_reward_paths_agree(tmp_path):
    from align.models.reward_model import reward_function, reward_ids_function

    rm = tmp_path / "rm"
    run(load_recipe(ROOT / "tests" / "tiny.yaml", ["method=reward", f"output_dir={rm}", "train.max_steps=1"]))
    ids_fn, text_fn = reward_ids_function(rm, batch_size=2), reward_function(rm, batch_size=3)
    tok = ids_fn.tokenizer
    prompts, replies = ["Hi there", "What is 2+2?", "Name a colour"], ["Hello!", "4", "Blue, I think."]
    chats = [
        list(
            tok.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
        for p in prompts
    ]
    tokens = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in replies]
    by_ids, by_text = ids_fn(chats, tokens), text_fn(prompts, replies)
    assert by_ids == pytest.approx(by_text, abs=1e-5) and len(set(by_ids)) == 3
