"""Run directory I/O: atomic checkpoints, resume, final adapter, manifest, metrics.jsonl.

Everything is written to a temporary sibling, fsynced, and renamed into place, so an interrupted
run (kill -9, power loss, a full disk) never leaves a half-written checkpoint or adapter that
`--resume` or `PeftModel.from_pretrained` would trip over, and never removes the last good one.
A checkpoint holds only the adapter (safetensors), optimizer and scheduler (`torch.load` with
`weights_only=True`), each rank's RNG states (safetensors + JSON metadata: no pickle) and the data
position: a resumed run ends with the same adapter as an uninterrupted one. Tensors that are not
finite are never written: `NonFiniteError` instead.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from align.engine import zero
from align.engine.sharding import (
    full_optimizer_state,
    full_tensor,
    full_trainable_state,
    shard_optimizer_state,
)
from align.models.adapters import REFERENCE
from align.util.errors import AlignError
from align.util.files import (  # noqa: F401  (re-exported: the checkpoint API)
    atomic_dir,
    commit_dir,
    dumps_json,
    finite_json,
    fsync_tree,
    recover_dirs,
    write_text_atomic,
)
from align.util.ranks import any_rank

log = logging.getLogger("align.checkpoint")

STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint


class CheckpointError(AlignError):
    """A checkpoint or the final adapter could not be written (disk full, permissions, ...)."""


class NonFiniteError(AlignError):
    """Refusing to write NaN/inf weights: they would replace the last good checkpoint."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done (skipped non-finite steps included)
    epoch: int = 0
    step_in_epoch: int = 0
    total_steps: int = 0
    skipped_steps: int = 0  # steps whose update was skipped for a non-finite loss or gradient

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def adapter_state(peft_model, model_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter's tensors, full even when sharded (FSDP): every rank must call it.
    `model_state` is `full_trainable_state(peft_model)` when the caller has it already."""
    from peft import get_peft_model_state_dict

    sd = get_peft_model_state_dict(peft_model, state_dict=model_state or full_trainable_state(peft_model))
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteError(
            f"refusing to write {what}: {len(bad)} tensor(s) hold NaN/inf (first: {bad[0]}); "
            "the last good checkpoint is left as it was"
        )


# -- RNG state without pickle ------------------------------------------------------------------


def _save_rng(path: Path) -> None:
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
    }
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    meta = {
        "python": json.dumps([py_version, list(py_state), py_gauss]),
        "numpy": json.dumps(
            {k: np_state[k] for k in ("has_gauss", "gauss")} | {"pos": np_state["state"]["pos"]}
        ),
    }
    _write_bytes(path, save(tensors, metadata=meta))


def _write_bytes(path: Path, data: bytes) -> None:
    """Serialise in memory, write with plain file I/O: a full disk is then an OSError with its
    errno, not torch's "unexpected pos" or a safetensors I/O wrapper."""
    with open(path, "wb") as f:
        f.write(data)


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load_rng(path: Path) -> None:
    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    py_version, py_state, py_gauss = json.loads(meta["python"])
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_meta = json.loads(meta["numpy"])
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": tensors["numpy_key"].numpy().astype(np.uint32), "pos": np_meta["pos"]},
            "has_gauss": np_meta["has_gauss"],
            "gauss": np_meta["gauss"],
        }
    )
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# -- writing with every rank agreeing ------------------------------------------------------------


def _on_all_ranks(accelerator, action: Callable[[], None], what: str, cleanup: Path | None) -> None:
    """Run `action` (an I/O phase); if it failed on any rank, remove `cleanup` and raise everywhere."""
    err: Exception | None = None
    try:
        action()
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save/safetensors wrap ENOSPC
        err = e
    if not any_rank(torch.tensor([err is not None], device=accelerator.device))[0]:
        return
    if cleanup is not None and accelerator.is_main_process:
        shutil.rmtree(cleanup, ignore_errors=True)
    why = _reason(err) if err is not None else "it failed on another process"
    raise CheckpointError(f"could not write {what}: {why}")


def _reason(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err)
    for known in (
        "No space left on device",
        "Permission denied",
        "Read-only file system",
        "Disk quota exceeded",
    ):
        if known in text:
            return known
    return text.splitlines()[0][:300] if text else type(err).__name__


EXTRA_FILE = "extra_state.safetensors"


def save_checkpoint(
    run_dir: Path,
    state: TrainState,
    accelerator,
    peft_model,
    optimizer,
    scheduler,
    keep: int,
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """`extra`: a method's other trainable state (heads, more adapters, a KL coefficient), as
    full tensors, written beside the adapter and handed back by `load_checkpoint`."""
    final = run_dir / "checkpoints" / f"step-{state.step:07d}"
    tmp = final.parent / f".tmp-{final.name}"
    main = accelerator.is_main_process
    weights = adapter_state(peft_model)  # gathered on every rank (FSDP): same decision everywhere
    extra = {k: full_tensor(v) for k, v in (extra or {}).items()}  # a sharded head, gathered too
    check_finite({**weights, **(extra or {})}, f"checkpoint {final}")
    optim_state = (
        zero.full_optimizer_state(optimizer) if zero.is_zero(optimizer) else full_optimizer_state(optimizer)
    )
    previous = list_checkpoints(run_dir)
    what = f"checkpoint {final} ({'the previous checkpoint ' + previous[-1].name + ' is intact' if previous else 'no earlier checkpoint'})"

    def write() -> None:
        if main:
            atomic_dir(final)

    def fill() -> None:
        _save_rng(tmp / f"rng_rank{accelerator.process_index}.safetensors")
        if main:
            _write_bytes(tmp / "adapter_model.safetensors", save(weights))
            if extra:
                _write_bytes(
                    tmp / EXTRA_FILE, save({k: v.detach().cpu().contiguous() for k, v in extra.items()})
                )
            _write_bytes(tmp / "optimizer.pt", _torch_bytes(optim_state))
            _write_bytes(tmp / "scheduler.pt", _torch_bytes(scheduler.state_dict()))

    def publish() -> None:
        if main:
            (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
            commit_dir(tmp, final)

    _on_all_ranks(accelerator, write, what, tmp)
    _on_all_ranks(accelerator, fill, what, tmp)
    _on_all_ranks(accelerator, publish, what, tmp)
    if main:
        for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / STATE_FILE).exists())


def load_checkpoint(path: Path, accelerator, peft_model, optimizer, scheduler, load_extra=None) -> TrainState:
    """Restore a checkpoint; `load_extra(tensors)` receives what `save_checkpoint` got as `extra`."""
    from peft import set_peft_model_state_dict

    with zero.gathered(zero.trainable(optimizer), modify=True):  # ZeRO-3: written whole, re-partitioned
        set_peft_model_state_dict(peft_model, load_file(path / "adapter_model.safetensors"))
        if load_extra is not None and (path / EXTRA_FILE).exists():
            load_extra(load_file(path / EXTRA_FILE))
        zero.load_master_weights(optimizer)  # ZeRO's fp32 copies of what was just loaded
    optim_state = torch.load(path / "optimizer.pt", weights_only=True)
    if zero.is_zero(optimizer):
        zero.load_optimizer_state(optimizer, optim_state)
    else:
        optimizer.load_state_dict(shard_optimizer_state(optimizer, optim_state))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = path / f"rng_rank{accelerator.process_index}.safetensors"
    if rng.exists():  # a different world size keeps fresh RNG streams for new ranks
        _load_rng(rng)
    return TrainState.from_dict(json.loads((path / STATE_FILE).read_text()))


def save_adapter(
    run_dir: Path,
    peft_model,
    accelerator,
    extra_files: dict[str, dict[str, torch.Tensor]] | None = None,
    adapters: list[str] | None = None,
) -> Path:
    """Final adapter as stock PEFT files: `PeftModel.from_pretrained(base, run_dir/'adapter')`.
    Gathered on every rank (FSDP shards it), written by the main process; every rank learns
    whether it worked. `adapters`: PEFT adapter names to save (default: the policy, `default`;
    others go to subfolders named after them, PEFT's layout); `extra_files`: more safetensors
    files (file name -> tensors) in the same atomic directory (e.g. a score head)."""
    final = run_dir / "adapter"
    tmp = final.parent / f".tmp-{final.name}"
    if adapters is None:  # every adapter but a `continue` run's frozen reference copy
        adapters = [n for n in peft_model.peft_config if n != REFERENCE]
    full = full_trainable_state(peft_model)
    check_finite(adapter_state(peft_model, full), f"the final adapter {final}")
    extra_files = {name: {k: full_tensor(v) for k, v in t.items()} for name, t in (extra_files or {}).items()}

    def write() -> None:
        if accelerator.is_main_process:
            atomic_dir(final)
            peft_model.save_pretrained(
                tmp, state_dict=full, safe_serialization=True, selected_adapters=adapters
            )
            for name, tensors in (extra_files or {}).items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                _write_bytes(tmp / name, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
            commit_dir(tmp, final)

    _on_all_ranks(accelerator, write, f"the final adapter {final}", tmp)
    return final


def set_aside_run(run_dir: Path) -> Path:
    """Move a whole earlier run (adapter, checkpoints, metrics, events, recipe) to `NAME.prev-<UTC>`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = run_dir.with_name(f"{run_dir.name}.prev-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.prev-{stamp}-{n}")
    os.replace(run_dir, target)
    log.warning("set the earlier run in %s aside as %s", run_dir, target)
    return target


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


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as dicts; a torn last line (killed mid-append) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            out.append(row)
    return out


def trim_metrics(path: Path, upto_step: int, final_step: int | None = None) -> None:
    """On resume, drop metric lines logged after the checkpoint we continue from: later steps, a
    torn line, and (when the checkpoint is the last step) the final evaluation written after it."""
    if not path.exists():
        return
    keep = [
        row
        for row in read_metrics(path)
        if row["step"] < upto_step
        or (row["step"] == upto_step and not (upto_step == final_step and _is_eval(row)))
    ]
    write_text_atomic(path, "".join(dumps_json(row) + "\n" for row in keep))


def _is_eval(row: dict[str, Any]) -> bool:
    return any(k.startswith("eval/") for k in row)
