"""The loop's invariances on the tiny model: accumulation, resume, reference modes, run dir."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from run_helpers import adapter, max_abs_diff, run_tiny

from align.engine.checkpoint import list_checkpoints


def test_accumulation_equals_large_batch(tmp_path):
    """per-device 1 x accumulation 8 == per-device 8 x accumulation 1 (same examples per step)."""
    # Adam's first steps move each weight by ~lr * g / (|g| + eps): with the default eps=1e-8, weights
    # whose gradient is itself ~1e-8 turn fp32 summation-order noise into ~1e-5 differences.
    common = ("train.max_steps=3", "data.max_train_examples=24", "optim.lr=1e-2", "optim.adam_eps=1e-6")
    run_tiny(
        tmp_path / "big", "train.per_device_batch_size=8", "train.gradient_accumulation_steps=1", *common
    )
    run_tiny(
        tmp_path / "acc", "train.per_device_batch_size=1", "train.gradient_accumulation_steps=8", *common
    )
    a, b = adapter(tmp_path / "big"), adapter(tmp_path / "acc")
    # fp32 summation order differs between the two layouts; a CI CPU measured 1.07e-5 here. A real
    # accumulation bug (wrong weighting of micro-batches) moves Adam's weights by O(lr) = 1e-2.
    assert max_abs_diff(a, b) < 1e-4
    # and training moved the adapter at all (LoRA B starts at zero)
    assert max(float(v.abs().max()) for k, v in a.items() if "lora_B" in k) > 1e-4


def test_resume_matches_uninterrupted(tmp_path):
    """Kill after step 4 of 6 (simulated by deleting later outputs), resume, same adapter."""
    args = (
        "train.max_steps=6",
        "train.save_every=2",
        "train.keep_checkpoints=5",
        "lora.dropout=0.2",
        "optim.lr=1e-2",
    )
    full = tmp_path / "run"
    run_tiny(full, *args)
    reference = adapter(full)
    ckpts = list_checkpoints(full)
    assert [c.name for c in ckpts] == ["step-0000002", "step-0000004", "step-0000006"]
    shutil.rmtree(ckpts[-1])
    shutil.rmtree(full / "adapter")
    summary = run_tiny(full, *args, resume=True)
    assert summary["steps"] == 6
    assert max_abs_diff(adapter(full), reference) < 1e-6
    steps = [json.loads(ln)["step"] for ln in (full / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(5) == 1  # metrics after step 4 were trimmed, not duplicated


def test_resume_with_changed_recipe_warns(tmp_path, caplog):
    run_tiny(tmp_path / "r", "train.max_steps=2", "train.save_every=1")
    with caplog.at_level("WARNING", logger="align.train"):
        summary = run_tiny(tmp_path / "r", "train.max_steps=3", "train.save_every=1", resume=True)
    assert summary["steps"] == 3
    assert "train.max_steps (2 -> 3)" in caplog.text


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    summary = run_tiny(tmp_path / "r", "train.max_steps=1", resume=True)
    assert summary["steps"] == 1


def test_precomputed_reference_equals_adapter_off(tmp_path):
    args = ("train.max_steps=3", "optim.lr=1e-2")
    live = run_tiny(tmp_path / "live", *args)
    pre = run_tiny(tmp_path / "pre", "reference=precompute", *args)
    assert max_abs_diff(adapter(tmp_path / "live"), adapter(tmp_path / "pre")) < 1e-5
    assert live["after"]["eval/loss"] == pytest.approx(pre["after"]["eval/loss"], abs=1e-5)


def test_run_directory_contents(tmp_path):
    """Stock PEFT loads the adapter; manifest, recipe, metrics and tensorboard logs are there."""
    from peft import PeftModel

    from align.models.load import tiny_model
    from align.models.logprobs import SequenceScorer

    out = tmp_path / "run"
    summary = run_tiny(out, "train.max_steps=2", "optim.lr=1e-2", "log.trackers=[tensorboard]")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["objective"]["objective"] == "dpo"
    assert manifest["objective"]["normalisation"] == "sum over completion tokens"
    assert manifest["versions"]["torch"] and manifest["versions"]["trl"]
    assert len(manifest["data"]["fingerprint"]) == 16
    assert (out / "recipe.yaml").read_text().startswith("method: dpo")
    assert list(out.rglob("events.out.tfevents*")), "tensorboard tracker wrote nothing"
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 0 and "eval/loss" in lines[0]
    assert any("train/loss" in ln for ln in lines)

    loaded = PeftModel.from_pretrained(tiny_model(seed=0), out / "adapter")
    trained = summary["peft_model"]
    ids = torch.tensor([[1, 520, 9531, 198, 504, 3575, 2]])
    att, mask = torch.ones_like(ids), torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
    trained.eval()
    a = SequenceScorer(loaded.eval())(ids, att, mask).sum
    b = SequenceScorer(trained)(ids, att, mask).sum
    with loaded.disable_adapter():
        base = SequenceScorer(loaded)(ids, att, mask).sum
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, base, atol=1e-4)


def test_metric_values_nan_aware_means_and_per_step_counts():
    """A per-class metric averages only where it applies; `count/*` is a per-step total."""
    from align.engine.metrics import accumulate, metric_values

    sums, counts = {}, {}
    nan = float("nan")
    step1 = {
        "rewards/desirable": torch.tensor([1.0, nan, 3.0]),
        "count/desirable": torch.tensor([1.0, 0.0, 1.0]),
    }
    step2 = {
        "rewards/desirable": torch.tensor([nan, nan, 5.0]),
        "count/desirable": torch.tensor([0.0, 0.0, 1.0]),
    }
    accumulate(sums, counts, step1)
    accumulate(sums, counts, step2)
    plain = {k: float(v) for k, v in sums.items()}, {k: float(v) for k, v in counts.items()}
    values = metric_values(*plain, per=2)
    assert values["rewards/desirable"] == 3.0  # (1 + 3 + 5) / 3, not / 6
    assert values["count/desirable"] == 1.5  # 3 desirable over 2 steps
    empty = metric_values({"rewards/undesirable": 0.0}, {"rewards/undesirable": 0.0})
    assert empty["rewards/undesirable"] != empty["rewards/undesirable"]  # NaN (written as null), not 0
