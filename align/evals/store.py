"""Append-only keyed jsonl caches (answers, judgments, KL samples) that survive being killed.

Each record is appended as one `write` of whole lines, flushed and fsynced, so a kill leaves at
most one torn last line; opening the file cuts that line off (atomically) instead of letting the
next append glue a new record onto it. A later record with the same key replaces an earlier one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from align.util.errors import DataError
from align.util.files import write_text_atomic
from align.util.secrets import redact

log = logging.getLogger("align.evals")

Key = tuple[Any, ...]


class JsonlStore:
    """Records keyed by `key_fields`, loaded from `path` (if present) and appended to it."""

    def __init__(self, path: Path, key_fields: Sequence[str]) -> None:
        self.path, self.key_fields = Path(path), tuple(key_fields)
        self.rows: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # killed mid-append: drop the torn last line
            keep = data[: data.rfind(b"\n") + 1]
            write_text_atomic(self.path, keep.decode("utf-8", errors="replace"))
            log.warning("%s: dropped a torn last line (an interrupted write); it will be redone", self.path)
            data = keep
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = self.key(row)
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(
                    str(self.path),
                    f"line {number}",
                    None,
                    f"not a record of this cache ({type(e).__name__}: {e}); delete the line (it will be "
                    "recomputed) or use another output directory",
                ) from None
            self.rows[key] = row

    def key(self, row: dict[str, Any]) -> Key:
        if not isinstance(row, dict):
            raise TypeError("expected a JSON object")
        return tuple(row[f] for f in self.key_fields)

    def __contains__(self, key: Key) -> bool:
        return key in self.rows

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.rows.get(key)

    def values(self) -> list[dict[str, Any]]:
        return list(self.rows.values())

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(redact(text))
                f.flush()
                os.fsync(f.fileno())
            for r in rows:
                self.rows[self.key(r)] = r
