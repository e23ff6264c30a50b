"""kill -9 at random moments (mid-checkpoint and mid-adapter-write included), then --resume:
the adapter equals the uninterrupted run's and metrics.jsonl holds every step exactly once."""

from __future__ import annotations

import random
import signal

import pytest
import torch
from run_helpers import adapter, launch_tiny, max_abs_diff, metric_steps, run_tiny, wait_for

ARGS = (
    "train.max_steps=8",
    "train.save_every=1",
    "train.keep_checkpoints=2",
    "lora.dropout=0.2",  # the resumed RNG streams must match too
    "optim.lr=1e-2",
)
TRIALS = 10


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("kill9") / "uninterrupted"
    with _one_thread():
        run_tiny(out, *ARGS)
    return adapter(out)


class _one_thread:
    """The killed runs use one thread (OMP_NUM_THREADS=1); so do the in-process runs they are compared to."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _moment(kind: str, out, rng: random.Random):
    if kind == "checkpoint":  # checkpoint k of 8 is being written: its temp dir exists
        tmp = out / "checkpoints" / f".tmp-step-{rng.randint(1, 8):07d}"
        return tmp.exists
    if kind == "adapter":
        return lambda: (out / ".tmp-adapter").exists()
    # a moment defined by progress, not wall time (a fast machine must not finish first): after the
    # k-th metrics line (k <= 6 of the 10 an 8-step run writes), plus a fraction of a step
    lines, delay = rng.randint(1, 6), rng.uniform(0.0, 0.05)
    start: list[float] = []

    def ready() -> bool:
        import time

        path = out / "metrics.jsonl"
        if not start and path.exists() and len(path.read_text().splitlines()) >= lines:
            start.append(time.monotonic())
        return bool(start) and time.monotonic() - start[0] >= delay

    return ready


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill9_then_resume_is_exact(tmp_path, reference, trial):
    rng = random.Random(1000 + trial)
    kind = ("checkpoint", "adapter", "random", "random", "checkpoint")[trial % 5]
    out = tmp_path / "run"
    proc = launch_tiny(out, *ARGS)
    try:
        hit = wait_for(_moment(kind, out, rng), timeout=120)
        if hit and rng.random() < 0.5:  # land a little later inside the write, too
            wait_for(lambda: False, timeout=rng.uniform(0, 0.004))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert hit, f"trial {trial}: the {kind} moment never came"
    assert proc.returncode == -signal.SIGKILL, "the run had already ended: nothing was interrupted"
    done = (
        sorted(p.name for p in (out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []
    )
    print(f"trial {trial}: killed at {kind}; complete checkpoints then: {done}")
    with _one_thread():
        summary = run_tiny(out, *ARGS, resume=True)
    assert summary["steps"] == 8
    assert max_abs_diff(adapter(out), reference) <= 1e-6, f"trial {trial} ({kind})"
    train_steps, eval_steps = metric_steps(out)
    assert train_steps == list(range(1, 9)), train_steps
    assert eval_steps == [0, 8], eval_steps
    assert not list(out.rglob(".tmp-*")) and not list(out.rglob(".old-*"))  # nothing half-written is left
