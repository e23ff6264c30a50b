"""The run directory's life: refuse to mix runs, set an earlier run aside, resume, skip a finished run.

A fresh run never writes into a non-empty output_dir: `--resume` continues it, `--overwrite`
renames the whole earlier run to `NAME.prev-<UTC time>` first. Resuming loads the last complete
checkpoint and trims metric lines logged after it, so metrics.jsonl holds every step once; a run
that already finished is reported and skipped (what sweeps rely on).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from align.engine.checkpoint import (
    TrainState,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    recover_dirs,
    set_aside_run,
    trim_metrics,
)
from align.util.errors import AlignError

if TYPE_CHECKING:
    from align.engine.loop import LoopParts
    from align.recipe import Recipe

log = logging.getLogger("align.train")


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


class RunDirError(AlignError):
    """A fresh run would overwrite an earlier run's outputs."""


def is_occupied(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(run_dir.iterdir())


def prepare_run_dir(run_dir: Path, accelerator, resume: bool, overwrite: bool) -> None:
    """Refuse to mix a fresh run into an earlier one; `overwrite` sets the earlier run aside whole.
    Every rank decides before the main process moves anything."""
    occupied = is_occupied(run_dir)
    accelerator.wait_for_everyone()
    if occupied and not (resume or overwrite):
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(sorted(p.name for p in run_dir.iterdir())[:6])}); "
            "pass --resume to continue it, --overwrite to set it aside (renamed to "
            f"{run_dir.name}.prev-<time>) and start fresh, or choose another output_dir"
        )
    if accelerator.is_main_process:
        if occupied and overwrite and not resume:
            set_aside_run(run_dir)
        elif occupied:
            recover_dirs(run_dir / "checkpoints")
    accelerator.wait_for_everyone()


def resume_command(argv: list[str] | None = None, world: int = 1) -> str:
    """The command line that continues this run: the same arguments, plus --resume."""
    import shlex
    import sys

    argv = list(sys.argv if argv is None else argv)
    args = argv[argv.index("train") :] if "train" in argv else ["train", "RECIPE"]
    args = [a for a in args if a != "--overwrite"] + ([] if "--resume" in args else ["--resume"])
    launch = (
        ["accelerate", "launch", "--multi_gpu", "--num_processes", str(world), "-m", "align"]
        if world > 1
        else ["align"]
    )
    return shlex.join(launch + args)


def completed_summary(run_dir: Path, total: int) -> dict[str, Any] | None:
    """The summary of a run that already finished `total` steps (so a re-run can skip it)."""
    path = run_dir / "summary.json"
    if not path.exists() or not (run_dir / "adapter").is_dir():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("steps", 0) >= total else None


def start_state(
    run_dir: Path, r: Recipe, accelerator, parts: LoopParts, total: int, resume: bool
) -> TrainState:
    """Load the last checkpoint when resuming (trimming metrics logged after it), else a fresh state.
    Resuming a directory without a checkpoint sets its earlier outputs aside first."""
    main = accelerator.is_main_process
    ckpts = list_checkpoints(run_dir)
    if resume and ckpts:
        state = load_checkpoint(
            ckpts[-1], accelerator, parts.peft_model, parts.optimizer, parts.scheduler, parts.load_extra_state
        )
        state.total_steps = total
        log.info("resumed from %s (step %d of %d)", ckpts[-1], state.step, total)
        warn_recipe_changes(run_dir / "recipe.yaml", r)
        if main:
            trim_metrics(run_dir / "metrics.jsonl", state.step, final_step=total)
        accelerator.wait_for_everyone()
        return state
    if resume and is_occupied(run_dir):
        log.warning("resume asked for but %s has no checkpoint; starting fresh", run_dir)
        if main:
            set_aside_run(run_dir)
    if main:  # only now: a recipe, data or model error leaves no empty run directory behind
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return TrainState(total_steps=total)


def before_metrics(run_dir: Path) -> dict[str, float]:
    """The held-out metrics logged before step 1, for the summary of a resumed run."""
    rows = [row for row in read_metrics(run_dir / "metrics.jsonl") if row["step"] == 0]
    return {k: v for row in rows for k, v in row.items() if k.startswith("eval/")}


def warn_recipe_changes(saved: Path, r: Recipe) -> None:
    """Resuming under a different recipe is allowed (e.g. more steps) but never silent."""
    if not saved.exists():
        return
    before, now = flat(yaml.safe_load(saved.read_text()) or {}), flat(r.to_dict())
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k) and k != "resume")
    if changed:
        log.warning(
            "resuming with a recipe that differs from the run's recipe.yaml in: %s",
            ", ".join(f"{k} ({before.get(k)!r} -> {now.get(k)!r})" for k in changed),
        )
