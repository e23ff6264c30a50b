"""DeepSpeed ZeRO-2 and ZeRO-3 on CPU (gloo), each checked against one process or DDP.

What is checked: the recipe's divisor and boundaries give one process's adapter, gradient norms
and Adam state; checkpoints hold the full adapter and a stock AdamW state (resumed exactly under
ZeRO, by one process, and a one-process checkpoint under ZeRO-3); ZeRO-3 really partitions every
weight (recipes/accelerate/zero3_cpu_2proc.json sets the persistence threshold to 0, so the tiny
model's small tensors are sliced too) and the paths that read weights outside a forward (saving,
loading, the fast rollout) gather them; a NaN step is skipped as one process skips it; a
non-finite loss whose update DeepSpeed applied stops the run, naming the last good checkpoint.
What needs a GPU (bf16 with DeepSpeed's overflow check, offload, NCCL) is bench/gpu_check.sh's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from poisoned_train import poisoned_loss
from run_helpers import (
    ROOT,
    adapter,
    free_port,
    launch_accelerate,
    launch_two,
    max_abs_diff,
    metric_values,
    run_tiny,
)
from test_sharded import COMMON, _finish, _grad_norms, _head, _manifest, ppo_weights

import align.methods
from align.engine.checkpoint import list_checkpoints

CONFIGS = ROOT / "recipes" / "accelerate"
ZERO = {2: CONFIGS / "zero2_cpu_2proc.yaml", 3: CONFIGS / "zero3_cpu_2proc.yaml"}
SPLIT = ("train.per_device_batch_size=1", "train.gradient_accumulation_steps=2")  # x 2 ranks = 4
ONLINE, PPO = ROOT / "tests" / "online_tiny.yaml", ROOT / "tests" / "ppo_tiny.yaml"


def _launch(stage: int, run: Path, *args: str, recipe: Path = ROOT / "tests" / "tiny.yaml", **kw):
    """A two-rank ZeRO launch of `align train`, waited for (it must succeed)."""
    log = run.with_name(run.name + ".log")
    launch = ["--config_file", str(ZERO[stage]), "--main_process_port", str(free_port())]
    _finish(launch_accelerate(run, launch, *args, recipe=recipe, log=log, **kw), log)
    return log


def _optimizer(run: Path, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"step-{step:07d}" / "optimizer.pt", weights_only=True)


def _drop_last(run: Path) -> dict[str, torch.Tensor]:
    """The run's final adapter; its last checkpoint and the adapter are removed (to resume)."""
    final = adapter(run)
    shutil.rmtree(list_checkpoints(run)[-1])
    shutil.rmtree(run / "adapter")
    return final


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> Path:
    """The DPO run in one process (4 pairs per step, as 2 ranks x 1 x 2 micro-batches)."""
    out = tmp_path_factory.mktemp("one") / "run"
    run_tiny(out, "train.per_device_batch_size=4", *COMMON)
    return out


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_equals_one_process_and_resumes(one, tmp_path, stage):
    from peft import PeftModel

    from align.models.load import tiny_model

    run = tmp_path / "zero"
    _launch(stage, run, *SPLIT, *COMMON)
    manifest = _manifest(run)
    assert manifest["distributed_type"].endswith(".DEEPSPEED") and manifest["world_size"] == 2
    assert manifest["zero_stage"] == stage and manifest["zero_partitioned"] is (stage == 3)
    assert max_abs_diff(adapter(one), adapter(run)) < 1e-5
    assert _grad_norms(run) == pytest.approx(_grad_norms(one), rel=1e-5)  # DeepSpeed clipped this norm
    ours, theirs = _optimizer(run, 2), _optimizer(one, 2)  # a stock AdamW state, not ZeRO's slices
    assert ours["state"].keys() == theirs["state"].keys() and len(ours["state"]) == 28
    for i, state in theirs["state"].items():
        for k, v in state.items():
            torch.testing.assert_close(ours["state"][i][k], v, rtol=1e-3, atol=1e-6)
    assert ours["param_groups"][0]["lr"] == theirs["param_groups"][0]["lr"]
    loaded = PeftModel.from_pretrained(tiny_model(), run / "adapter")  # whole tensors, stock PEFT
    q = loaded.base_model.model.model.layers[1].self_attn.q_proj.lora_B["default"].weight
    assert torch.equal(q, adapter(run)["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"])

    cross = tmp_path / "cross"  # one process resumes the ZeRO checkpoint
    shutil.copytree(run, cross)
    uninterrupted = _drop_last(run)
    log = _launch(stage, run, *SPLIT, *COMMON, "--resume")
    assert "resumed from" in log.read_text()
    assert max_abs_diff(adapter(run), uninterrupted) < 1e-6
    _drop_last(cross)
    run_tiny(cross, "train.per_device_batch_size=4", *COMMON, resume=True)
    assert max_abs_diff(adapter(cross), adapter(one)) < 1e-5

    if stage == 3:  # and ZeRO-3 resumes a one-process checkpoint: masters and Adam state re-sliced
        back = tmp_path / "back"
        shutil.copytree(one, back)
        _drop_last(back)
        assert "resumed from" in _launch(3, back, *SPLIT, *COMMON, "--resume").read_text()
        assert max_abs_diff(adapter(back), adapter(one)) < 1e-5


def test_zero2_skips_a_nan_step_as_one_process_does(tmp_path, monkeypatch):
    """Step 2's loss is NaN on every rank: DeepSpeed's gradient-norm check skips the update, the
    loop counts and locates it, the schedule advances; one process skipping step 2 trains the same."""
    monkeypatch.setattr(align.methods.PairwiseMethod, "loss", poisoned_loss({2}))
    one = tmp_path / "one"
    assert run_tiny(one, "train.per_device_batch_size=4", *COMMON)["skipped_steps"] == 1
    run = tmp_path / "zero"
    log = _launch(
        2, run, *SPLIT, *COMMON, entry=("tests/poisoned_train.py",), ALIGN_TEST_POISON="3"
    )  # step 2's first micro-batch
    assert "step 2: non-finite loss or gradient; update skipped" in log.read_text()
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 1
    assert max_abs_diff(adapter(one), adapter(run)) < 1e-5


def test_zero_stops_when_deepspeed_applied_a_non_finite_loss(tmp_path):
    """+inf added to the loss leaves the gradients finite, so DeepSpeed applies the update: the run
    stops at that step with the last good checkpoint named, and writes nothing after it."""
    run = tmp_path / "zero"
    log = run.with_name("zero.log")
    launch = ["--config_file", str(ZERO[2]), "--main_process_port", str(free_port())]
    proc = launch_accelerate(
        run,
        launch,
        *SPLIT,
        *COMMON,
        log=log,
        entry=("tests/poisoned_train.py",),
        ALIGN_TEST_POISON="3",
        ALIGN_TEST_POISON_KIND="inf",
    )
    try:
        rc = proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.terminate()
        pytest.fail(f"still running: {log.read_text()[-2000:]}")
    text = log.read_text()
    assert rc != 0
    assert "align: error: step 2: non-finite loss, and DeepSpeed applied the update" in text
    assert f"the last good checkpoint is {run / 'checkpoints' / 'step-0000001'}" in text
    assert "Traceback" not in text.split("align: error:")[0][-3000:]  # a clean stop, not a crash
    assert [c.name for c in list_checkpoints(run)] == ["step-0000001"]
    assert not (run / "adapter").exists()


GRPO_ARGS = ("method=grpo", "cpu=true", "train.per_device_batch_size=1")


@pytest.fixture(scope="module")
def grpo_ddp(tmp_path_factory) -> Path:
    ddp = tmp_path_factory.mktemp("grpo") / "ddp"
    _finish(launch_two(ddp, *GRPO_ARGS, recipe=ONLINE), ddp.with_name("ddp.log"))
    return ddp


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_grpo_equals_ddp(grpo_ddp, tmp_path, stage):
    """Each rank samples its own prompts: compared with DDP. ZeRO-1/2 write updated weights
    through `.data` (no version bump), so the rollout's sampling weights must be rebuilt every
    rollout, or step 2 samples from step 1's policy (it once did: 5e-3 away from DDP); ZeRO-3
    samples from weights gathered for the rollout."""
    run = tmp_path / "zero"
    _launch(stage, run, *GRPO_ARGS, recipe=ONLINE)
    # both layouts sampled the same completions: each step's group reward spread agrees
    spread = "train/group/reward_std"
    assert metric_values(run, spread) == pytest.approx(metric_values(grpo_ddp, spread), rel=1e-6, abs=0)
    # then only fp32 reduction order differs, which Adam (lr 3e-3) turns into 2.3e-6 at most
    # with the two-race sampler's tokens; the stale-weights bug above was 5e-3 away
    assert max_abs_diff(adapter(grpo_ddp), adapter(run)) < 1e-5
    assert max_abs_diff(adapter(run), {k: v * 0 for k, v in adapter(run).items()}) > 1e-4  # it trained


def test_zero3_ppo_equals_ddp_and_resumes(tmp_path):
    """PPO's policy and value adapters and value head on one ZeRO-3-partitioned base: the rollout
    samples from gathered weights, the fused LoRA forward steps aside for partitioned adapters,
    heads are saved and loaded whole; all equal DDP's, and a resumed run its uninterrupted self."""
    args = ("cpu=true", "train.per_device_batch_size=1", "train.max_steps=3", "train.save_every=1")

    ddp = tmp_path / "ddp"
    _finish(launch_two(ddp, *args, recipe=PPO), tmp_path / "ddp.log")
    run = tmp_path / "zero"
    _launch(3, run, *args, recipe=PPO)
    assert _manifest(run)["zero_partitioned"] is True
    assert max_abs_diff(ppo_weights(ddp), ppo_weights(run)) < 1e-5  # 2.1e-6 seen (FSDP2: under 1e-6)

    uninterrupted = ppo_weights(run)
    _drop_last(run)
    assert "resumed from" in _launch(3, run, *args, "--resume", recipe=PPO).read_text()
    assert max_abs_diff(ppo_weights(run), uninterrupted) < 1e-6


def test_zero3_reward_model_equals_one_process(tmp_path):
    """The reward head is partitioned too; saved whole, it is one process's head (its bias gets no
    gradient from a pairwise loss, see tests/test_sharded.py, so only its weight is compared)."""
    args = ("method=reward", *COMMON)
    one = tmp_path / "one"
    run_tiny(one, "train.per_device_batch_size=4", *args)
    run = tmp_path / "zero"
    _launch(3, run, "train.per_device_batch_size=2", *args)
    assert max_abs_diff(adapter(one), adapter(run)) < 1e-5
    assert float((_head(one)["linear.weight"] - _head(run)["linear.weight"]).abs().max()) < 1e-5
