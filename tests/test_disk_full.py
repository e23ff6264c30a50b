"""A full disk while checkpointing: the previous checkpoint stays intact and the error says so.
Uses a real, small tmpfs mounted by the test (root, as on CI)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from run_helpers import TINY

from align.cli import main
from align.engine.checkpoint import CheckpointError, TrainState, list_checkpoints, save_checkpoint


@pytest.fixture
def small_fs(tmp_path, request):
    """A tmpfs at tmp_path/fs; its size (default 512k) comes from `@pytest.mark.parametrize(..., indirect)`."""
    size = getattr(request, "param", "512k")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    )
    assert proc.returncode == 0, f"this test needs to mount a tmpfs (run as root): {proc.stderr.decode()}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> None:
    """Write a ballast file until only about `leave` bytes remain."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    with open(mnt / "ballast", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def _parts():
    from accelerate import Accelerator

    from align.models.load import add_lora, tiny_model
    from align.recipe import LoraConfig

    model = add_lora(tiny_model(), LoraConfig(r=4, alpha=8))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return Accelerator(cpu=True), model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(small_fs):
    acc, model, opt, sched = _parts()
    run_dir = small_fs / "run"
    first = save_checkpoint(run_dir, TrainState(step=1), acc, model, opt, sched, keep=1)
    kept = _tree(first)
    _fill(small_fs, leave=8 * 1024)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(run_dir, TrainState(step=2), acc, model, opt, sched, keep=1)
    message = str(err.value)
    assert "No space left on device" in message
    assert "the previous checkpoint step-0000001 is intact" in message
    assert list_checkpoints(run_dir) == [first] and _tree(first) == kept
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # the partial write was cleaned up


@pytest.mark.parametrize("small_fs", ["96k"], indirect=True)
def test_full_disk_through_the_cli_is_one_clear_error(small_fs, capsys):
    code = main(
        ["train", str(TINY), f"output_dir={small_fs / 'run'}", "train.max_steps=3", "train.save_every=1"]
    )
    err = capsys.readouterr().err
    # 96 KiB holds the run's metadata but not one checkpoint (adapter + optimizer: ~150 KB)
    assert code == 2 and "Traceback" not in err, err
    assert "align: error: could not write checkpoint" in err and "No space left on device" in err
