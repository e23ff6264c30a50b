"""Data cards: markdown files whose YAML front matter says where a dataset lives and how to read it.

A card lets a recipe say `data: hh-rlhf-tiny` instead of repeating source, column mapping and split
names, and keeps the license and provenance next to the data description a human reads.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

import align
from align.data.records import LoadStats, OnBadRecord, PairRecord, PromptRecord, UnpairedRecord
from align.data.sources import FORMATS, load_records
from align.util.errors import DataError, RecipeError

REPO_ROOT = Path(align.__file__).resolve().parents[1]
REQUIRED_KEYS = ("name", "source", "license", "format")
T = TypeVar("T")


@dataclass(frozen=True)
class DataCard:
    """A parsed card. `source` is already resolved: an absolute path, or a dataset name for the Hub."""

    name: str
    source: str
    license: str
    format: str  # "pairwise" (prompt/chosen/rejected), "unpaired" (prompt/completion/label) or "prompts"
    columns: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)  # role (train/eval) -> source split name
    size: int | str | None = None
    description: str = ""
    heldout_fraction: float | None = None  # default held-out share when the card names no eval split
    label_threshold: float | None = None  # unpaired: numeric ratings >= this are desirable
    path: Path | None = None


def default_search_dirs() -> list[Path]:
    """The repo's bundled cards first, then ./data_cards for a user's own."""
    dirs = [REPO_ROOT / "data_cards", Path.cwd() / "data_cards"]
    return [d for i, d in enumerate(dirs) if d.resolve() not in {e.resolve() for e in dirs[:i]}]


def available_cards(search_dirs: Sequence[Path] | None = None) -> list[str]:
    dirs = default_search_dirs() if search_dirs is None else search_dirs
    names = {p.stem for d in dirs if d.is_dir() for p in d.glob("*.md") if p.stem.upper() != "README"}
    return sorted(names)


def load_card(name_or_path: str, search_dirs: Sequence[Path] | None = None) -> DataCard:
    """Load a card by path to a .md file, or by name from `search_dirs` (default: default_search_dirs())."""
    path = _find_card(name_or_path, default_search_dirs() if search_dirs is None else search_dirs)
    meta, body = _front_matter(path)
    where = str(path)
    for key in REQUIRED_KEYS:
        if key not in meta or meta[key] in (None, ""):
            raise DataError(where, None, key, "missing required key in the card's front matter")
        if not isinstance(meta[key], str):
            raise DataError(where, None, key, f"expected a string, got {type(meta[key]).__name__}")
    if meta["format"] not in FORMATS:
        raise DataError(
            where, None, "format", f"expected one of {', '.join(FORMATS)}, got {meta['format']!r}"
        )
    for key in ("columns", "splits"):
        value = meta.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise DataError(where, None, key, "expected a mapping of names to strings")
    fraction = meta.get("heldout_fraction")
    if fraction is not None and (
        isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1
    ):
        raise DataError(where, None, "heldout_fraction", f"expected a number in [0, 1), got {fraction!r}")
    threshold = meta.get("label_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        raise DataError(where, None, "label_threshold", f"expected a number, got {threshold!r}")
    return DataCard(
        label_threshold=threshold,
        name=meta["name"],
        source=_resolve_source(meta["source"], path),
        license=meta["license"],
        format=meta["format"],
        columns=dict(meta.get("columns") or {}),
        splits=dict(meta.get("splits") or {}),
        size=meta.get("size"),
        description=str(meta.get("description") or body.strip()),
        heldout_fraction=fraction,
        path=path,
    )


def load_card_records(
    card: DataCard,
    *,
    role: str = "train",
    split: str | None = None,
    on_bad_record: OnBadRecord = "error",
    stats: LoadStats | None = None,
    label_threshold: float | None = None,
) -> tuple[list[PairRecord] | list[UnpairedRecord] | list[PromptRecord], LoadStats]:
    """Load the records a card describes for `role` (e.g. train/eval): the source split named by
    `split` (the recipe's data.split / data.eval_split) or else by the card, if any.

    A split the source does not have fails with the splits it has (sources.py says which)."""
    split = split or card.splits.get(role)
    if split is None and role != "train":
        names = ", ".join(card.splits) or "none"
        raise DataError(
            str(card.path),
            None,
            "splits",
            f"card has no {role!r} split (has: {names}); set data.eval_split or use a held-out fraction",
        )
    threshold = label_threshold if label_threshold is not None else card.label_threshold
    return load_records(
        card.format,
        card.source,
        columns=card.columns,
        split=split,
        on_bad_record=on_bad_record,
        stats=stats,
        label_threshold=threshold,
    )


def split_records(records: Sequence[T], *, heldout_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Deterministic held-out split: depends only on the seed and record count, so every rank agrees.

    Order is preserved within each part. A positive fraction holds out at least one record (when
    there are two or more) and always leaves at least one for training.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise RecipeError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    n = len(records)
    k = round(n * heldout_fraction)
    if heldout_fraction > 0 and n > 1:
        k = min(max(k, 1), n - 1)
    heldout = set(random.Random(seed).sample(range(n), k))
    train = [r for i, r in enumerate(records) if i not in heldout]
    return train, [r for i, r in enumerate(records) if i in heldout]


def _find_card(name_or_path: str, search_dirs: Sequence[Path]) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix == ".md" or path.is_file():
        if not path.is_file():
            raise DataError(name_or_path, None, None, "data card file not found")
        return path
    for directory in search_dirs:
        candidate = directory / f"{name_or_path}.md"
        if candidate.is_file():
            return candidate
    names = available_cards(search_dirs)
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(names) or "none"
    searched = ", ".join(str(d) for d in search_dirs)
    raise DataError(
        name_or_path, None, None, f"unknown data card; {hint}available: {listed} (searched {searched})"
    )


def _front_matter(path: Path) -> tuple[dict[str, Any], str]:
    """Split '---\\n<yaml>\\n---\\n<markdown>' into the parsed YAML mapping and the markdown body."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "---":
        raise DataError(str(path), None, None, "a data card must start with '---' YAML front matter")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), None)
    if end is None:
        raise DataError(str(path), None, None, "front matter is not closed by a '---' line")
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as err:
        raise DataError(str(path), None, None, f"invalid YAML front matter: {err}") from None
    if not isinstance(meta, dict):
        raise DataError(str(path), None, None, "front matter must be a YAML mapping")
    return meta, "\n".join(lines[end + 1 :])


def _resolve_source(source: str, card_path: Path) -> str:
    """Relative paths are relative to the repo holding the card (its parent's parent), if present."""
    if Path(source).is_absolute():
        return source
    local = card_path.resolve().parent.parent / source
    return str(local) if local.exists() else source
