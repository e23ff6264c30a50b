"""Helpers shared by run-level tests: train the tiny recipe, read and compare adapters."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "tiny.yaml"


def run_tiny(out: Path, *overrides: str, resume: bool | None = None) -> dict:
    """Train the tiny recipe in-process; returns the run summary."""
    from align.methods import load_recipe
    from align.train import run

    recipe = load_recipe(TINY, [f"output_dir={out}", *overrides])
    return run(recipe, resume=resume)


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def cut_before_last_checkpoint(full: Path, cut: Path, last: str) -> None:
    """Copy a finished run to `cut` as if it had stopped before checkpoint `last` was written
    (no final adapter or summary): resuming `cut` must then reproduce `full`."""
    import shutil

    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / last)
    shutil.rmtree(cut / "adapter")
    (cut / "summary.json").unlink()


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def align_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m align` subprocesses: one thread each, this checkout first on the path."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def launch_tiny(out: Path, *overrides: str, log: Path | None = None, **env: str):
    """Start `python -m align train tests/tiny.yaml` as a real process (for signals and kill -9)."""
    import subprocess
    import sys

    log = log or out.with_name(out.name + ".log")
    handle = open(log, "w")  # noqa: SIM115 - the process owns it until it exits
    cmd = [sys.executable, "-m", "align", "train", str(TINY), f"output_dir={out}", *overrides]
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=align_env(**env), cwd=ROOT)


def wait_for(predicate, timeout: float, poll: float = 0.002) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return False


def metric_rows(run_dir: Path) -> list[dict]:
    """The lines of a run's metrics.jsonl."""
    import json

    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def metric_values(run_dir: Path, key: str) -> list:
    """`key`'s value on each metrics.jsonl line that has it, in order."""
    return [r[key] for r in metric_rows(run_dir) if key in r]


def metric_steps(run_dir: Path) -> tuple[list[int], list[int]]:
    """(steps of train lines, steps of eval lines) in metrics.jsonl."""
    rows = metric_rows(run_dir)
    train = [r["step"] for r in rows if any(k.startswith("train/") for k in r)]
    evals = [r["step"] for r in rows if any(k.startswith("eval/") for k in r)]
    return train, evals


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multi_process_overrides(gpus: int | None = None) -> tuple[str, ...]:
    """Recipe overrides for runs that multi-process tests compare: gloo on CPU unless two GPUs
    exist (on a one-GPU machine, two ranks cannot each have a GPU). Pass them to every run of
    such a comparison, the one-process reference included, so all run on the same device."""
    if gpus is None:
        gpus = torch.cuda.device_count()
    return () if gpus >= 2 else ("cpu=true",)


def launch_two(out: Path, *overrides: str, log: Path | None = None, recipe: Path = TINY):
    """`accelerate launch --multi_gpu --num_processes 2 -m align train tests/tiny.yaml` (a real gloo
    group on CPU: align creates its Accelerator with cpu=True) as a background process."""
    import subprocess
    import sys

    cmd = [
        str(Path(sys.executable).parent / "accelerate"),
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
        str(free_port()),
        "-m",
        "align",
        "train",
        str(recipe),
        f"output_dir={out}",
        *overrides,
        *multi_process_overrides(),
    ]
    handle = open(log or out.with_name(out.name + ".log"), "w")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=align_env(), cwd=ROOT)


def launch_accelerate(
    out: Path,
    launch_args: list[str],
    *overrides: str,
    log: Path | None = None,
    recipe: Path = TINY,
    entry: tuple[str, ...] = ("-m", "align"),
    **env: str,
):
    """`accelerate launch <launch_args> -m align train tests/tiny.yaml output_dir=OUT ...` in the
    background (FSDP and DeepSpeed configs, one "node" of a multi-node group, ...); `entry`: what
    runs instead of `-m align` (a script taking the same arguments)."""
    import subprocess
    import sys

    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", *launch_args, *entry, "train"]
    cmd += [str(recipe), f"output_dir={out}", *overrides]
    handle = open(log or out.with_name(out.name + ".log"), "w")  # noqa: SIM115 - the process owns it
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=align_env(**env), cwd=ROOT)
