"""Two "machines" on loopback (`--num_machines 2 --machine_rank 0/1`, one process each) rendezvous
and train to the same adapter as one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from run_helpers import (
    ROOT,
    TINY,
    adapter,
    align_env,
    free_port,
    max_abs_diff,
    multi_process_overrides,
    run_tiny,
)


def _node(rank: int, port: int, out: Path, *overrides: str) -> subprocess.Popen:
    cmd = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_machines",
        "2",
        "--machine_rank",
        str(rank),
        "--num_processes",
        "2",  # in all: one per machine
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "align",
        "train",
        str(TINY),
        f"output_dir={out}",
        *overrides,
    ]
    log = open(out.with_name(f"{out.name}.node{rank}.log"), "w")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=align_env(), cwd=ROOT)


def test_two_machines_on_loopback_equal_one_process(tmp_path):
    common = ("train.max_steps=3", "optim.lr=1e-2", "lora.dropout=0.0", *multi_process_overrides())
    run_tiny(tmp_path / "one", "train.per_device_batch_size=4", *common)
    port = free_port()
    out = tmp_path / "two"
    nodes = [_node(rank, port, out, "train.per_device_batch_size=2", *common) for rank in (0, 1)]
    for rank, node in enumerate(nodes):
        log = out.with_name(f"two.node{rank}.log")
        assert node.wait(timeout=300) == 0, log.read_text()[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["distributed_type"].endswith("MULTI_CPU")
    assert max_abs_diff(adapter(tmp_path / "one"), adapter(out)) < 1e-5
