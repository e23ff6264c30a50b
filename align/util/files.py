"""Files that are never half-written, and where align keeps its caches.

Everything is written to a temporary sibling, fsynced and renamed into place: an interrupted
process (kill -9, power loss, a full disk) leaves the old file or the new one, never a mix. Run
directories (align/engine), evals and hub pushes all write through these helpers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from align.util.secrets import redact

log = logging.getLogger("align.checkpoint")


def cache_dir() -> Path:
    return Path(os.environ.get("ALIGN_CACHE", Path.home() / ".cache" / "align"))


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file below `root` and the directories themselves before a rename publishes them."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            _fsync(Path(dirpath) / name)
        _fsync(Path(dirpath))


def atomic_dir(final: Path) -> Path:
    """A fresh temp dir next to `final`; `commit_dir` renames it into place."""
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit_dir(tmp: Path, final: Path) -> None:
    """fsync `tmp`, then rename it to `final` (an existing `final` is moved to `.old-` first and
    removed only once the new one is in place; `recover_dirs` undoes a crash in between)."""
    fsync_tree(tmp)
    if final.exists():
        old = final.parent / f".old-{final.name}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        _fsync(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
        _fsync(final.parent)


def recover_dirs(parent: Path) -> None:
    """Put back a `.old-X` whose replacement never arrived (killed between the two renames)."""
    if not parent.is_dir():
        return
    for old in parent.glob(".old-*"):
        final = parent / old.name[len(".old-") :]
        if not final.exists():
            os.replace(old, final)
            log.warning("restored %s from an interrupted replace", final)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (redacted) to a temp sibling, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(redact(text))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def finite_json(obj: Any) -> Any:
    """Non-finite floats become null: metrics files stay strict JSON (no bare NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def dumps_json(obj: Any, indent: int | None = None) -> str:
    return json.dumps(finite_json(obj), indent=indent, allow_nan=False)
