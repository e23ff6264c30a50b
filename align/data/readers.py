"""Local file readers: rows (or the error that replaced a row) numbered the way an editor shows them.

Positions are 1-based: `line N` for .jsonl and .csv (for CSV the physical line where the record
starts; the header is line 1), `record N` for the elements of a .json array, `row N` for parquet
(and for `datasets` sources, see sources.py). A reader never raises for one bad row: invalid
UTF-8, invalid or too deeply nested JSON, a CSV row with the wrong number of cells all come back as
a `RecordError` in the stream, so skip mode can count it and error mode can report every one. It
raises `DataError` only when the file as a whole cannot be read (or is plainly the wrong format).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from align.data.records import RecordError
from align.util.errors import DataError

Row = dict[str, Any]
# A row, or the error that replaced it (kept in the stream so skip mode can count it and go on).
RowOrError = Row | RecordError
Reader = Callable[[Path, str], Iterator[tuple[str, RowOrError]]]

BOM = "\ufeff"
CSV_FIELD_LIMIT = 1 << 30  # the csv module's default (128 KiB per cell) rejects long answers


def read_jsonl(path: Path, name: str) -> Iterator[tuple[str, RowOrError]]:
    """One JSON object per line; lines are split on b'\\n' only, so numbers match `wc -l` and editors."""
    first = True
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield (
                    where,
                    RecordError(name, where, None, "invalid UTF-8", f"bad byte at column {err.start + 1}"),
                )
                continue
            line = line.removeprefix(BOM)  # a BOM starts many files written on Windows
            if not line.strip():
                continue
            if first:
                first = False
                _check_not_whole_json(path, name, where, line)
            yield where, _json_row(line, name, where)


def _json_row(line: str, name: str, where: str) -> RowOrError:
    try:
        row = json.loads(line)
    except RecursionError:
        return RecordError(name, where, None, "invalid JSON", "nested too deeply")
    except ValueError as err:  # JSONDecodeError, or an integer too long to convert
        return RecordError(name, where, None, "invalid JSON", str(err))
    return row if isinstance(row, dict) else _not_object(name, where, row)


def _check_not_whole_json(path: Path, name: str, where: str, line: str) -> None:
    """A pretty-printed JSON file saved as .jsonl fails on every line; say what it is, once."""
    head = line.strip()
    kind = {"[": "a JSON array", "{": "pretty-printed JSON"}.get(head)
    if kind is None:
        try:
            json.loads(head)
            return
        except (ValueError, RecursionError):
            pass
        try:
            whole = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return
        kind = "a JSON array" if isinstance(whole, list) else "pretty-printed JSON"
    raise DataError(
        name, where, None, f"this looks like {kind}: write one object per line, or name the file .json"
    )


def read_json(path: Path, name: str) -> Iterator[tuple[str, RowOrError]]:
    """A JSON array of objects, or {"data": [...]}; the whole file is one document."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(name, None, None, f"invalid UTF-8 at byte {err.start}") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise DataError(name, None, None, "invalid JSON: nested too deeply") from None
    except ValueError as err:
        hint = ""
        if isinstance(_first_line_json(text), dict):
            hint = "; this looks like JSON Lines (one object per line): name the file .jsonl"
        raise DataError(name, None, None, f"invalid JSON: {err}{hint}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(name, None, None, 'expected a JSON list of objects or {"data": [...]}')
    for i, row in enumerate(data, start=1):
        where = f"record {i}"
        yield where, row if isinstance(row, dict) else _not_object(name, where, row)


def _first_line_json(text: str) -> Any:
    try:
        return json.loads(text.split("\n", 1)[0])
    except (ValueError, RecursionError):
        return None


def read_parquet(path: Path, name: str) -> Iterator[tuple[str, RowOrError]]:
    import pyarrow.parquet as pq

    number = 0
    try:  # pyarrow raises several types for corrupt files, also part-way through
        for batch in pq.ParquetFile(path).iter_batches():
            for row in batch.to_pylist():
                number += 1
                yield f"row {number}", row
    except Exception as err:
        raise DataError(name, None, None, f"cannot read parquet (after {number} rows): {err}") from None


def read_csv(path: Path, name: str) -> Iterator[tuple[str, RowOrError]]:
    """Every cell is text (answers like '42' stay strings) and an empty cell is ""."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    # surrogateescape: an invalid byte becomes a lone surrogate, reported for its own row below
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
        except csv.Error as err:
            raise DataError(name, "line 1", None, f"cannot read the CSV header: {err}") from None
        if not header:
            raise DataError(name, None, None, "empty CSV: no header row")
        if not all(_is_text(h) for h in header):
            raise DataError(name, "line 1", None, "invalid UTF-8 in the header row")
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(name, "line 1", None, f"duplicate column name(s) {dupes}")
        yield from _csv_rows(reader, header, name)


def _csv_rows(reader: Any, header: list[str], name: str) -> Iterator[tuple[str, RowOrError]]:
    end = reader.line_num
    while True:
        start = end + 1  # the physical line this record starts on (blank lines come back as [])
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            if reader.line_num == end:  # no progress: stop rather than loop
                raise DataError(name, f"line {start}", None, f"cannot read CSV: {err}") from None
            end = reader.line_num
            yield f"line {start}", RecordError(name, f"line {start}", None, "invalid CSV", str(err))
            continue
        end = reader.line_num
        if not cells:
            continue
        where = f"line {start}"
        if len(cells) != len(header):
            detail = f"expected {len(header)} cells (the header's columns), got {len(cells)}"
            yield where, RecordError(name, where, None, "wrong number of cells", detail)
            continue
        bad = next((h for h, c in zip(header, cells, strict=True) if not _is_text(c)), None)
        if bad is not None:
            yield where, RecordError(name, where, bad, "invalid UTF-8")
            continue
        yield where, dict(zip(header, cells, strict=True))


def _is_text(value: str) -> bool:
    """False for text holding surrogate-escaped bytes, i.e. bytes that were not valid UTF-8."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def numbered(rows: Iterable[Any]) -> Iterator[tuple[str, Row]]:
    for i, row in enumerate(rows, start=1):
        yield f"row {i}", row


def _not_object(name: str, where: str, row: Any) -> RecordError:
    return RecordError(
        name, where, None, "not an object", f"expected a JSON object, got {type(row).__name__}"
    )


READERS: dict[str, Reader] = {
    ".jsonl": read_jsonl,
    ".json": read_json,
    ".parquet": read_parquet,
    ".csv": read_csv,
}
