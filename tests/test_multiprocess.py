"""A real 2-process gloo run (accelerate launch --multi_gpu on CPU) equals a 1-process run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from run_helpers import TINY, adapter, max_abs_diff, run_tiny


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    common = ("train.max_steps=3", "optim.lr=1e-2", "lora.dropout=0.0")
    run_tiny(tmp_path / "one", "train.per_device_batch_size=4", *common)
    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [
        str(launcher),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "align",
        "train",
        str(TINY),
        f"output_dir={tmp_path / 'two'}",
        "train.per_device_batch_size=2",
        *common,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    assert manifest["distributed_type"].endswith("MULTI_CPU")  # a real gloo group, not two lone processes
    assert max_abs_diff(adapter(tmp_path / "one"), adapter(tmp_path / "two")) < 1e-5
