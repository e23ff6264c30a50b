"""Run directory I/O: atomic checkpoints, resume, final adapter, manifest, metrics.jsonl.

Everything is written to a temporary sibling and renamed into place, so an interrupted run
never leaves a half-written checkpoint or adapter that `--resume` or `PeftModel.from_pretrained`
would trip over. A checkpoint holds only the adapter (safetensors), optimizer, scheduler, each
rank's RNG states and the data position: a resumed run ends with the same adapter as an
uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger("align.checkpoint")

STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    step_in_epoch: int = 0
    total_steps: int = 0


def atomic_dir(final: Path) -> Path:
    """A fresh temp dir next to `final`; `commit_dir` renames it into place."""
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        old = final.parent / f".old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def adapter_state(peft_model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path, state: TrainState, accelerator, peft_model, optimizer, scheduler, keep: int
) -> Path:
    final = run_dir / "checkpoints" / f"step-{state.step:07d}"
    tmp = final.parent / f".tmp-{final.name}"
    if accelerator.is_main_process:
        atomic_dir(final)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng_rank{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        save_file(adapter_state(peft_model), tmp / "adapter_model.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
        commit_dir(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / STATE_FILE).exists())


def load_checkpoint(path: Path, accelerator, peft_model, optimizer, scheduler) -> TrainState:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(peft_model, load_file(path / "adapter_model.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = path / f"rng_rank{accelerator.process_index}.pt"
    if rng.exists():  # a different world size keeps fresh RNG streams for new ranks
        _set_rng_state(torch.load(rng, weights_only=False))
    return TrainState(**json.loads((path / STATE_FILE).read_text()))


def save_adapter(run_dir: Path, peft_model) -> Path:
    """Final adapter as stock PEFT files: `PeftModel.from_pretrained(base, run_dir/'adapter')`."""
    final = run_dir / "adapter"
    tmp = atomic_dir(final)
    peft_model.save_pretrained(tmp, safe_serialization=True)
    commit_dir(tmp, final)
    return final


def set_aside(run_dir: Path, names: list[str]) -> None:
    """Rename an earlier run's outputs to `NAME.prev-<UTC time>` instead of deleting them."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for name in names:
        path = run_dir / name
        if path.exists():
            os.replace(path, run_dir / f"{name}.prev-{stamp}")
            log.warning("%s existed from an earlier run; kept as %s.prev-%s", path, name, stamp)


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in (
        "align",
        "torch",
        "transformers",
        "peft",
        "accelerate",
        "datasets",
        "trl",
        "evaluate",
        "gguf",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def trim_metrics(path: Path, upto_step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint we continue from."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= upto_step]
    write_text_atomic(path, "".join(ln + "\n" for ln in keep))
