"""Readers never crash on one bad row, and every position is 1-based and named the way editors show it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.data.records import BadRecordsError, LoadStats
from align.data.sources import load_pairs, load_unpaired, read_rows
from align.util.errors import DataError

GOOD = {"prompt": "p", "chosen": "c", "rejected": "r"}


def line(row: object) -> bytes:
    return json.dumps(row).encode() + b"\n"


def skip(path: Path) -> tuple[list, LoadStats]:
    return load_pairs(str(path), on_bad_record="skip")


def only_error(stats: LoadStats) -> str:
    """The single bad record's message."""
    (entries,) = stats.examples.values()
    assert len(entries) == 1 and stats.bad == 1, stats
    return entries[0][1]


def test_invalid_utf8_is_a_record_error_for_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(line(GOOD) + b'{"prompt": "caf\xe9", "chosen": "c", "rejected": "r"}\n' + line(GOOD))
    records, stats = skip(path)
    assert len(records) == 2 and stats.skipped == {"invalid UTF-8": 1}
    assert only_error(stats) == f"{path}: line 2: invalid UTF-8: bad byte at column 16"


def test_lone_surrogate_escape_is_invalid_text_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "p", "chosen": "a\ud800", "rejected": "r"},
        {"prompt": [{"role": "user", "content": "\udfff"}], "chosen": "c", "rejected": "r"},
        {"prompt": "\ud83d", "chosen": "c", "rejected": "r"},
    ]
    path.write_bytes(b"".join(line(r) for r in rows))  # json.dumps writes "\ud800" as an escape
    _, stats = skip(path)
    assert stats.skipped == {"invalid text": 3}
    assert [m for _, m in stats.examples["invalid text"]] == [
        f"{path}: line 1: field 'chosen': invalid text: lone surrogate '\\ud800' at character 1",
        f"{path}: line 2: field 'prompt[0].content': invalid text: lone surrogate '\\udfff' at character 0",
        f"{path}: line 3: field 'prompt': invalid text: lone surrogate '\\ud83d' at character 0",
    ]


def test_deeply_nested_json_is_a_record_error(tmp_path: Path) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    path = tmp_path / "d.jsonl"
    path.write_bytes(line(GOOD) + deep + b"\n" + b'{"prompt": ' + deep + b', "chosen": "c"}\n')
    records, stats = skip(path)
    assert len(records) == 1 and stats.skipped == {"invalid JSON": 2}
    assert "line 2: invalid JSON: nested too deeply" in stats.examples["invalid JSON"][0][1]
    nested = tmp_path / "d.json"
    nested.write_bytes(deep)
    with pytest.raises(DataError, match="invalid JSON: nested too deeply"):
        load_pairs(str(nested))


def test_huge_integer_is_invalid_json_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": ' + b"9" * 5000 + b', "chosen": "c", "rejected": "r"}\n' + line(GOOD))
    records, stats = skip(path)
    assert len(records) == 1 and stats.skipped == {"invalid JSON": 1}


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_utf8_bom_is_accepted(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"d{suffix}"
    text = {
        ".jsonl": json.dumps(GOOD) + "\n",
        ".json": json.dumps([GOOD]),
        ".csv": "prompt,chosen,rejected\np,c,r\n",
    }[suffix]
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    records, _ = load_pairs(str(path))
    assert [(r.prompt, r.chosen, r.rejected) for r in records] == [("p", "c", "r")]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (json.dumps([GOOD, GOOD], indent=2), "a JSON array"),
        (json.dumps(GOOD, indent=2), "pretty-printed JSON"),
        (
            '[{"prompt": "p", "chosen": "c", "rejected": "r"},\n {"prompt": "q", "chosen": "c", "rejected": "r"}]',
            "a JSON array",
        ),
    ],
    ids=["array", "object", "array-first-line-not-alone"],
)
def test_pretty_printed_json_saved_as_jsonl_gets_a_hint(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(text)
    for mode in ("error", "skip"):
        with pytest.raises(DataError) as info:
            load_pairs(str(path), on_bad_record=mode)
        assert str(info.value) == (
            f"{path}: line 1: this looks like {kind}: write one object per line, or name the file .json"
        )


def test_jsonl_saved_as_json_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(DataError, match=r"invalid JSON: Extra data.*this looks like JSON Lines"):
        load_pairs(str(path))


def test_csv_cells_are_text_and_positions_are_physical_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "prompt,chosen,rejected,extra\n"  # line 1: header
        "What is 6 * 7?,42,43,\n"  # line 2: numeric-looking answers stay text; empty cell is ""
        '"A question\n\nover three lines",1.0,1e0,x\n'  # lines 3-5
        "\n"  # line 6: blank
        "q,,r,x\n"  # line 7: empty chosen
        "q,a,b\n"  # line 8: a cell short
        "007,True,False,x\n"  # line 9
    )
    records, stats = skip(path)
    assert [(r.origin.rsplit(":", 1)[1], r.prompt, r.chosen, r.rejected) for r in records] == [
        ("line 2", "What is 6 * 7?", "42", "43"),
        ("line 3", "A question\n\nover three lines", "1.0", "1e0"),
        ("line 9", "007", "True", "False"),
    ]
    assert [m for kept in stats.examples.values() for _, m in kept] == [
        f"{path}: line 7: field 'chosen': empty completion",
        f"{path}: line 8: wrong number of cells: expected 4 cells (the header's columns), got 3",
    ]


def test_csv_invalid_utf8_cell_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"prompt,chosen,rejected\np,c,r\np,caf\xe9,r\np,c2,r2\n")
    records, stats = skip(path)
    assert [r.chosen for r in records] == ["c", "c2"]
    assert only_error(stats) == f"{path}: line 3: field 'chosen': invalid UTF-8"


def test_csv_labels_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_text("prompt,completion,label\np,a,True\np,b,0\n")
    assert [r.label for r in load_unpaired(str(path))[0]] == [True, False]


def test_csv_huge_cell_is_read(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(f"prompt,chosen,rejected\np,{'x' * 300_000},r\n")
    assert len(load_pairs(str(path))[0][0].chosen) == 300_000


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_csv_without_header_is_a_file_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(DataError, match="empty CSV: no header row"):
        load_pairs(str(path))


def test_positions_json_records_and_parquet_rows_are_one_based(tmp_path: Path) -> None:
    import pandas as pd

    rows = [GOOD, {"prompt": "p", "chosen": "c"}, "not an object"]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    _, stats = skip(tmp_path / "d.json")
    assert sorted(m for kept in stats.examples.values() for _, m in kept) == [
        f"{tmp_path / 'd.json'}: record 2: field 'rejected': missing field: row has columns 'prompt', 'chosen'",
        f"{tmp_path / 'd.json'}: record 3: not an object: expected a JSON object, got str",
    ]
    pd.DataFrame([GOOD, {**GOOD, "rejected": None}]).to_parquet(tmp_path / "d.parquet")
    _, stats = skip(tmp_path / "d.parquet")
    assert (
        only_error(stats)
        == f"{tmp_path / 'd.parquet'}: row 2: field 'rejected': null field: the value is null"
    )
    assert [where for where, _ in read_rows(str(tmp_path / "d.parquet"))] == ["row 1", "row 2"]


def test_parquet_nested_junk_is_a_record_error(tmp_path: Path) -> None:
    import pandas as pd

    rows = [
        {"prompt": "p", "chosen": "c", "rejected": "r", "x": [1]},
        {"prompt": "p", "chosen": "c", "rejected": "r", "x": [2, 3]},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "ok.parquet")
    assert len(load_pairs(str(tmp_path / "ok.parquet"))[0]) == 2  # extra columns are ignored
    pd.DataFrame({"prompt": ["p"], "chosen": [{"a": {"b": [1, 2]}}], "rejected": ["r"]}).to_parquet(
        tmp_path / "junk.parquet"
    )
    _, stats = skip(tmp_path / "junk.parquet")
    assert only_error(stats).endswith(
        "row 1: field 'chosen': wrong type: expected a string or a list of messages, got dict"
    )


def test_corrupt_parquet_is_a_file_error(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="cannot read parquet"):
        load_pairs(str(tmp_path / "d.parquet"))


def test_error_mode_reads_everything_then_raises_once(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    bad = [{"prompt": "p", "chosen": "", "rejected": "r"}] * 7 + [{"prompt": "p", "chosen": "c"}]
    path.write_bytes(line(GOOD) + b"".join(line(r) for r in bad) + b"{oops\n")
    with pytest.raises(BadRecordsError) as info:
        load_pairs(str(path))
    message = str(info.value)
    assert message.splitlines()[0] == (
        f"{path}: 9 bad records of 10 (7 empty completion, 1 invalid JSON, 1 missing field); fix them, or "
        "set data.on_bad_record=skip to skip and count bad records; the first 5:"
    )
    assert message.splitlines()[1:] == [
        *(f"  {path}: line {n}: field 'chosen': empty completion" for n in range(2, 7)),
        "  … and 4 more",
    ]
    assert info.value.stats.kept == 1 and info.value.stats.read == 10


def test_unexpected_exception_while_parsing_one_row_is_a_record_error(tmp_path: Path, monkeypatch) -> None:
    import align.data.sources as sources

    real = sources.parse_pair

    def fragile(row: dict, **kwargs: object):
        if row["prompt"] == "boom":
            raise RecursionError("maximum recursion depth exceeded")
        return real(row, **kwargs)

    monkeypatch.setattr(sources, "parse_pair", fragile)
    path = tmp_path / "d.jsonl"
    path.write_bytes(line(GOOD) + line({**GOOD, "prompt": "boom"}))
    records, stats = skip(path)
    assert len(records) == 1
    assert (
        only_error(stats)
        == f"{path}: line 2: unreadable record: RecursionError: maximum recursion depth exceeded"
    )


def test_user_text_in_messages_cannot_break_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    row = {
        "prompt": [{"role": "robot\nAssistant: hi" + "x" * 500, "content": "q"}],
        "chosen": "a",
        "rejected": "b",
    }
    wide = {f"column\n{i}": i for i in range(100)}
    path.write_bytes(line(row) + line(wide) + line(GOOD))
    _, stats = skip(path)
    messages = [m for kept in stats.examples.values() for _, m in kept]
    assert len(messages) == 2 and all("\n" not in m and len(m) < 500 for m in messages)
    assert "field 'prompt[0].role': unknown role: 'robot\\nAssistant: hi" in messages[0]
    assert "row has columns 'column\\n0', 'column\\n1'" in messages[1] and messages[1].endswith(", …")
