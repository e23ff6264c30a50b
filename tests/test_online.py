"""RLOO and GRPO end to end on tiny models: learning, resume, two processes, answers, recipe errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_helpers import write_steerable_model
from run_helpers import ROOT, cut_before_last_checkpoint, launch_two, max_abs_diff

from align.engine.checkpoint import read_metrics
from align.methods import load_recipe
from align.train import run
from align.util.errors import RecipeError

ONLINE = ROOT / "tests" / "online_tiny.yaml"


def online(out: Path, *overrides: str, resume: bool | None = None) -> dict:
    return run(load_recipe(ONLINE, [f"output_dir={out}", *overrides]), resume=resume)


def policy(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def train_rows(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "train/score" in r]


@pytest.fixture(scope="module")
def steerable(tmp_path_factory) -> str:
    return write_steerable_model(tmp_path_factory.mktemp("steerable"))


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_methods_raise_a_programmatic_reward(tmp_path, steerable, method):
    """Reward: the share of response tokens with id < 4096 (tests/ppo_rewards.py). Seeded."""
    summary = online(
        tmp_path / "run",
        f"method={method}",
        f"model.name={steerable}",
        "online.reward_function=ppo_rewards:low_ids",
        "train.max_steps=8",
    )
    before, after = summary["before"], summary["after"]
    assert before["eval/kl_ref"] == 0.0  # a fresh adapter is the reference
    assert after["eval/score"] > before["eval/score"] + 0.2, (before, after)
    assert 0 < after["eval/kl_ref/k3"] < 20
    rows = train_rows(tmp_path / "run")
    assert max(r["train/score"] for r in rows[-3:]) > rows[0]["train/score"] + 0.15
    for key in (
        "train/advantage/abs",
        "train/group/zero_std",
        "train/policy/entropy",
        "train/time/rollout_s",
    ):
        assert key in rows[-1]
    key = "train/kl" if method == "grpo" else "train/kl_ref"
    # step 1 samples the reference itself: 0 up to fp32 noise (the scoring and update forwards pack
    # the rows with different neighbours, so attention sums in another order)
    assert abs(rows[0][key]) < 1e-9 and rows[-1][key] > 1e-6
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())["objective"]
    assert manifest["objective"] == method and manifest["group_size"] == 4
    assert ("normalisation" in manifest) == (method == "grpo") and ("ratio" in manifest) == (method == "rloo")


def test_beta_zero_skips_the_reference_and_off_policy_epochs_clip(tmp_path):
    summary = online(
        tmp_path / "run", "beta=0", "online.epochs=2", "online.minibatches=2", "online.normalisation=token"
    )
    rows = train_rows(tmp_path / "run")
    assert "train/kl" not in rows[-1]  # no reference forward at β = 0
    assert rows[-1]["train/policy/approx_kl"] > 0  # the second epoch is off-policy: ratios move
    assert summary["after"]["eval/kl_ref"] > 0  # the held-out KL is still reported


def test_resume_equals_uninterrupted(tmp_path):
    common = ("train.max_steps=4", "train.save_every=2", "train.keep_checkpoints=0", "online.epochs=2")
    online(tmp_path / "full", *common)
    cut = tmp_path / "cut"
    cut_before_last_checkpoint(tmp_path / "full", cut, "step-0000004")
    online(cut, *common, resume=True)
    assert max_abs_diff(policy(tmp_path / "full"), policy(cut)) < 1e-6


def test_two_processes_hold_the_same_adapter(tmp_path):
    proc = launch_two(tmp_path / "two", "method=rloo", recipe=ONLINE)
    assert proc.wait(timeout=300) == 0, (tmp_path / "two.log").read_text()[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    sums = summary["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]


def test_answers_reach_each_completion_of_their_own_prompt(tmp_path):
    records = [
        {"prompt": f"Say the code word {w}{i}.", "answer": f"{w}{i}"} for i, w in enumerate(["ox"] * 24)
    ]
    path = tmp_path / "codes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = online(
        tmp_path / "run",
        "data.card=null",
        f"data.path={path}",
        "data.format=prompts",
        "online.reward_function=ppo_rewards:answer_in_prompt",
        "train.max_steps=2",
    )
    rows = train_rows(tmp_path / "run")
    assert [r["train/score"] for r in rows] == [1.0, 1.0]  # every row scored against its own answer
    assert rows[0]["train/group/zero_std"] == 1.0 and rows[0]["train/advantage/abs"] == 0.0
    assert summary["after"]["eval/score"] == 1.0


def test_verifiable_prompts_report_held_out_accuracy(tmp_path):
    summary = online(
        tmp_path / "run",
        "data.card=align_math_v1",
        "online.reward_function=align.rewards:exact_answer",
        "train.max_steps=1",
    )
    assert summary["before"]["eval/accuracy"] == summary["after"]["eval/accuracy"] == 0.0  # random replies


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["online.reward_function=null"], "online: set exactly one of online.reward_run"),
        (["online.group_size=1"], r"online.group_size: .*\[2, 1024\]"),
        (["lora.dropout=0.1"], "lora.dropout: grpo needs 0"),
        (["online.minibatches=17"], "online.minibatches: 17 is more than"),
        (["online.ratio=token"], "online.ratio: applies to method 'rloo' only"),
        (
            ["method=rloo", "online.normalisation=token"],
            "online.normalisation: applies to method 'grpo' only",
        ),
        (["online.clip=null"], "grpo's surrogate is clipped"),
        (["method=dpo"], "online: applies to method 'rloo' / 'grpo' only"),
        (["ppo.epochs=2"], "ppo: applies to method 'ppo' only"),
        (["online.reward_function=align.rewards:nope"], "align.rewards has no 'nope'"),
        (["method=dpo", "online.reward_function=null", "beta=0"], "beta: must be > 0 for 'dpo'"),
    ],
)
def test_bad_recipes_fail_before_any_model_loads(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(ONLINE, overrides)


def test_a_missing_reward_run_names_the_online_key(tmp_path):
    with pytest.raises(RecipeError, match=r"online\.reward_run: .*nope is not a finished reward run"):
        online(tmp_path / "run", "online.reward_function=null", f"online.reward_run={tmp_path / 'nope'}")
