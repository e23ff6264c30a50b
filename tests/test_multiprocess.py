"""A real 2-process gloo run (accelerate launch --multi_gpu on CPU) equals a 1-process run."""

from __future__ import annotations

import json

from run_helpers import adapter, launch_two, max_abs_diff, multi_process_overrides, run_tiny


def test_two_processes_equal_one(tmp_path):
    common = ("train.max_steps=3", "optim.lr=1e-2", "lora.dropout=0.0")
    run_tiny(tmp_path / "one", "train.per_device_batch_size=4", *common, *multi_process_overrides())
    proc = launch_two(tmp_path / "two", "train.per_device_batch_size=2", *common)
    assert proc.wait(timeout=300) == 0, (tmp_path / "two.log").read_text()[-3000:]
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert manifest["distributed_type"].endswith("MULTI_CPU")  # a real gloo group, not two lone processes
    assert max_abs_diff(adapter(tmp_path / "one"), adapter(tmp_path / "two")) < 1e-5


def test_multi_process_comparisons_use_gloo_below_two_gpus():
    """On a one-GPU machine two ranks cannot each have a GPU: compared runs go to CPU (gloo)."""
    assert multi_process_overrides(gpus=0) == multi_process_overrides(gpus=1) == ("cpu=true",)
    assert multi_process_overrides(gpus=2) == ()
