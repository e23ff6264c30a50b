"""Read raw rows from local files, save_to_disk directories or the Hub, and load them as records.

Local formats come first so that everything works offline; the Hub is only tried for names that
do not look like a path, and its failure names the offline alternatives instead of a traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from align.data.parse import parse_pair, parse_prompt, parse_unpaired
from align.data.parse_sft import SFT_FIELDS, parse_sft
from align.data.readers import READERS, Row, RowOrError, numbered
from align.data.records import (
    BadRecordsError,
    LoadStats,
    OnBadRecord,
    PairRecord,
    PromptRecord,
    RecordError,
    SFTRecord,
    UnpairedRecord,
)
from align.util.errors import DataError

log = logging.getLogger("align.data")

PAIR_FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_FIELDS = ("prompt", "completion", "label")
PROMPT_FIELDS = ("prompt", "answer")
FIELDS = {"pairwise": PAIR_FIELDS, "unpaired": UNPAIRED_FIELDS, "prompts": PROMPT_FIELDS, "sft": SFT_FIELDS}
FORMATS = tuple(FIELDS)  # record formats a source (or data card) can hold
FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
OFFLINE_HINT = (
    "offline alternatives: a local .jsonl/.json/.parquet/.csv file, "
    "or a directory written by datasets' Dataset.save_to_disk / DatasetDict.save_to_disk"
)

T = TypeVar("T")


def read_rows(
    path_or_name: str, *, split: str | None = None, base_dir: Path | None = None
) -> Iterator[tuple[str, Row]]:
    """Yield (where, row) pairs, raising at the first bad row; a missing file fails at the call."""
    rows = _open(path_or_name, split, base_dir)

    def strict() -> Iterator[tuple[str, Row]]:
        for where, row in rows:
            if isinstance(row, RecordError):
                raise row
            yield where, row

    return strict()


def load_pairs(
    source: str,
    *,
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    on_bad_record: OnBadRecord = "error",
    stats: LoadStats | None = None,
    base_dir: Path | None = None,
) -> tuple[list[PairRecord], LoadStats]:
    """Load preference pairs. Bad rows are counted by reason either way; with on_bad_record='error'
    the whole source is still read, then one `BadRecordsError` reports them all."""
    return _load(source, parse_pair, PAIR_FIELDS, columns, split, on_bad_record, stats, base_dir)


def load_unpaired(
    source: str,
    *,
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    on_bad_record: OnBadRecord = "error",
    stats: LoadStats | None = None,
    base_dir: Path | None = None,
    label_threshold: float | None = None,
) -> tuple[list[UnpairedRecord], LoadStats]:
    """Load unpaired (KTO) examples with the same reading, skipping and logging as `load_pairs`;
    numeric ratings are desirable at or above `label_threshold`."""
    parse = functools.partial(parse_unpaired, label_threshold=label_threshold)
    return _load(source, parse, UNPAIRED_FIELDS, columns, split, on_bad_record, stats, base_dir)


def load_prompts(
    source: str,
    *,
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    on_bad_record: OnBadRecord = "error",
    stats: LoadStats | None = None,
    base_dir: Path | None = None,
) -> tuple[list[PromptRecord], LoadStats]:
    """Load prompt-only records (for PPO) with the same reading, skipping and logging as `load_pairs`."""
    return _load(source, parse_prompt, PROMPT_FIELDS, columns, split, on_bad_record, stats, base_dir)


def load_sft(
    source: str,
    *,
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    on_bad_record: OnBadRecord = "error",
    stats: LoadStats | None = None,
    base_dir: Path | None = None,
) -> tuple[list[SFTRecord], LoadStats]:
    """Load SFT records (conversations, prompt + completion, or text; see parse_sft.py) with the
    same reading, skipping and logging as `load_pairs`."""
    return _load(source, parse_sft, SFT_FIELDS, columns, split, on_bad_record, stats, base_dir)


def load_records(
    fmt: str, source: str, *, label_threshold: float | None = None, **kwargs: Any
) -> tuple[list[PairRecord] | list[UnpairedRecord] | list[PromptRecord] | list[SFTRecord], LoadStats]:
    """Load the records of format `fmt` (one of FORMATS); `kwargs` as for `load_pairs`."""
    if fmt == "unpaired":
        return load_unpaired(source, label_threshold=label_threshold, **kwargs)
    return {"pairwise": load_pairs, "prompts": load_prompts, "sft": load_sft}[fmt](source, **kwargs)


def _load(
    source: str,
    parse: Callable[..., T],
    fields: tuple[str, ...],
    columns: Mapping[str, str] | None,
    split: str | None,
    on_bad_record: OnBadRecord,
    stats: LoadStats | None,
    base_dir: Path | None,
) -> tuple[list[T], LoadStats]:
    unknown = sorted(set(columns or {}) - set(fields))
    if unknown:
        other = [f for f, names in FIELDS.items() if names != fields and set(unknown) <= set(names)]
        hint = f" (fields of {' or '.join(other)} records: set data.format)" if other else ""
        raise DataError(
            source, None, "columns", f"unknown field(s) {unknown}; expected some of {list(fields)}{hint}"
        )
    if on_bad_record not in ("error", "skip"):
        raise DataError(source, None, "on_bad_record", f"expected 'error' or 'skip', got {on_bad_record!r}")
    stats = stats if stats is not None else LoadStats()
    records: list[T] = []
    before = stats.bad
    for where, row in _open(source, split, base_dir):
        stats.read += 1
        try:
            if isinstance(row, RecordError):
                raise row
            records.append(parse(row, source=source, where=where, columns=columns))
        except RecordError as err:
            stats.reject(err)
            continue
        except Exception as err:  # e.g. RecursionError comparing nested junk: one record, not the run
            stats.reject(
                RecordError(source, where, None, "unreadable record", f"{type(err).__name__}: {err}")
            )
            continue
        stats.kept += 1
    log.info("%s: read %d, kept %d, skipped %s", source, stats.read, stats.kept, stats.counts_text())
    if stats.read and not stats.kept:
        log.warning("%s: every record was skipped", source)
    if on_bad_record == "error" and stats.bad > before:
        raise BadRecordsError(source, stats)
    return records, stats


def _open(name: str, split: str | None, base_dir: Path | None) -> Iterator[tuple[str, RowOrError]]:
    path = _local_path(name, base_dir)
    if path is None:
        return _dataset_rows(_load_hub(name, split))
    if path.is_dir():
        return _dataset_rows(_load_disk(path, name, split))
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            name, None, None, f"unsupported file type {path.suffix!r}; use one of {', '.join(FILE_SUFFIXES)}"
        )
    if split not in (None, "train"):
        raise DataError(name, None, "split", f"a single file has only the 'train' split, not {split!r}")
    return reader(path, name)


def _local_path(name: str, base_dir: Path | None) -> Path | None:
    """The local path `name` denotes, or None when it can only be a Hub dataset name."""
    path = Path(name).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.exists():
        return path
    if path.suffix.lower() in FILE_SUFFIXES or name.startswith(("/", ".", "~")):
        raise DataError(name, None, None, f"file not found: {path}")
    return None


def _dataset_rows(dataset: Any) -> Iterator[tuple[str, Row]]:
    return numbered(iter(dataset))


def _load_disk(path: Path, name: str, split: str | None) -> Any:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataError(name, None, None, f"not a datasets save_to_disk directory ({err})") from None
    if not isinstance(loaded, datasets.DatasetDict):
        if split not in (None, "train"):
            raise DataError(
                name, None, "split", f"this directory holds a single Dataset, not split {split!r}"
            )
        return loaded
    if split is None:
        split = "train" if "train" in loaded or len(loaded) != 1 else next(iter(loaded))
    if split not in loaded:
        raise DataError(name, None, "split", f"unknown split {split!r}; available: {', '.join(loaded)}")
    return loaded[split]


def _load_hub(name: str, split: str | None) -> Any:
    import datasets

    from align.util.offline import unreachable_reason

    # Probed once, in seconds; when the Hub is away the process is in offline mode from here on,
    # so a dataset in the local cache still loads and any other fails at once instead of retrying.
    away = unreachable_reason()
    try:
        return datasets.load_dataset(name, split=split or "train")
    except Exception as err:  # datasets/hub raise many types; all end the same way for the user
        text = f"{type(err).__name__}: {err}"
        if away:
            reason = f"{away}, and the dataset is not in the local cache; {OFFLINE_HINT}"
        elif isinstance(err, OSError) or any(w in text.lower() for w in ("offline", "connect", "reach")):
            reason = f"the Hugging Face Hub is unreachable ({text}); {OFFLINE_HINT}"
        else:
            reason = f"could not load dataset ({text}); {OFFLINE_HINT}"
        raise DataError(name, None, None, reason) from None
