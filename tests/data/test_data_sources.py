"""read_rows / load_pairs / load_unpaired / load_prompts over every local format, skip mode and offline
errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from align.data.records import LoadStats
from align.data.sources import load_pairs, load_prompts, load_records, load_unpaired, read_rows
from align.util.errors import DataError

ROWS = [
    {"prompt": "p0", "chosen": "c0", "rejected": "r0"},
    {"prompt": "p1", "chosen": "c1", "rejected": "r1"},
    {"prompt": "p2", "chosen": "c2", "rejected": "r2"},
]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_line_numbers_are_one_based_and_count_blank_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), "", "   ", json.dumps(ROWS[1])])
    assert [where for where, _ in read_rows(str(path))] == ["line 1", "line 4"]


def test_jsonl_error_names_the_line_and_field(tmp_path: Path) -> None:
    bad = {"prompt": "p", "chosen": "", "rejected": "r"}
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), "", json.dumps(bad)])
    with pytest.raises(DataError, match=r"d\.jsonl: line 3: field 'chosen': empty completion"):
        load_pairs(str(path))


def test_invalid_json_line_raises_with_line_number(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(ROWS[0]), "{not json"])
    with pytest.raises(DataError, match=r"line 2: invalid JSON"):
        list(read_rows(str(path)))
    with pytest.raises(DataError, match=r"line 2: invalid JSON"):
        load_pairs(str(path))


def test_skip_mode_counts_by_reason_and_keeps_going(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [
        json.dumps(ROWS[0]),
        json.dumps({"prompt": "p", "chosen": " ", "rejected": "r"}),
        json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}),
        json.dumps({"prompt": "p", "chosen": "c"}),
        "[1, 2]",
        "{oops",
        json.dumps(ROWS[1]),
        json.dumps({"prompt": "p", "chosen": "", "rejected": "r"}),
    ]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    with caplog.at_level(logging.INFO, logger="align.data"):
        records, stats = load_pairs(str(path), on_bad_record="skip")
    assert [r.prompt for r in records] == ["p0", "p1"]
    assert [r.origin for r in records] == [f"{path}:line 1", f"{path}:line 7"]
    assert (stats.read, stats.kept) == (8, 2)
    assert stats.skipped == {
        "empty completion": 2,
        "chosen == rejected": 1,
        "missing field": 1,
        "not an object": 1,
        "invalid JSON": 1,
    }
    assert "read 8, kept 2" in caplog.text


def test_stats_accumulate_when_passed_in(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(r) for r in ROWS])
    stats = LoadStats()
    load_pairs(str(path), stats=stats)
    _, same = load_pairs(str(path), stats=stats)
    assert same is stats and (stats.read, stats.kept) == (6, 6)


def test_json_list_and_data_key(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "b.json").write_text(json.dumps({"data": ROWS}))
    for name in ("a.json", "b.json"):
        records, _ = load_pairs(name, base_dir=tmp_path)
        assert [r.chosen for r in records] == ["c0", "c1", "c2"]
        assert records[2].origin == f"{name}:record 3"  # 1-based, like every position
    (tmp_path / "c.json").write_text(json.dumps({"rows": ROWS}))
    with pytest.raises(DataError, match="expected a JSON list"):
        load_pairs(str(tmp_path / "c.json"))


def test_parquet_round_trip_with_messages(tmp_path: Path) -> None:
    import pandas as pd

    rows = [
        {
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": "b",
        }
        for i in range(3)
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    records, _ = load_pairs(str(tmp_path / "d.parquet"))
    assert [r.prompt for r in records] == [row["prompt"] for row in rows]
    assert records[0].rejected == [{"role": "assistant", "content": "b"}]


def test_csv_round_trip_with_column_mapping_and_labels(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"q": ["p0", "p1"], "good": ["c0", "c1"], "bad": ["r0", ""]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    columns = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    records, stats = load_pairs(str(tmp_path / "d.csv"), columns=columns, on_bad_record="skip")
    assert [(r.prompt, r.chosen, r.rejected) for r in records] == [("p0", "c0", "r0")]
    assert stats.skipped == {"empty completion": 1}

    for labels in ([True, False], [1, 0]):  # a CSV column is typed as a whole: all bools or all ints
        pd.DataFrame({"prompt": ["p", "p"], "completion": ["a", "b"], "label": labels}).to_csv(
            tmp_path / "k.csv", index=False
        )
        unpaired, _ = load_unpaired(str(tmp_path / "k.csv"))
        assert [(r.completion, r.label) for r in unpaired] == [("a", True), ("b", False)]


def test_save_to_disk_dataset_and_dataset_dict(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    records, _ = load_pairs(str(tmp_path / "single"))
    assert [r.prompt for r in records] == ["p0", "p1", "p2"] and records[1].origin.endswith(":row 2")

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}
    )
    dd.save_to_disk(str(tmp_path / "dict"))
    assert len(load_pairs(str(tmp_path / "dict"))[0]) == 2
    assert [r.prompt for r in load_pairs(str(tmp_path / "dict"), split="test")[0]] == ["p2"]
    with pytest.raises(DataError, match="unknown split 'dev'; available: train, test"):
        load_pairs(str(tmp_path / "dict"), split="dev")


def test_single_file_has_only_train_split(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(ROWS[0])])
    assert len(load_pairs(str(path), split="train")[0]) == 1
    with pytest.raises(DataError, match="only the 'train' split"):
        load_pairs(str(path), split="test")


def test_missing_local_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_rows(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="file not found"):
        load_pairs("./data/nothing-here")


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load_pairs(str(tmp_path / "d.txt"))


def test_unknown_column_mapping_key(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [json.dumps(ROWS[0])])
    with pytest.raises(DataError, match="field 'columns'.*promt"):
        load_pairs(str(path), columns={"promt": "q"})


def test_unreachable_hub_names_offline_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'org/ds' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        load_pairs("org/ds")
    message = str(info.value)
    assert message.startswith("org/ds:") and "Hub is unreachable" in message
    assert "local .jsonl" in message and "save_to_disk" in message


def test_hub_dataset_is_iterated_with_record_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple] = []

    def fake(name: str, split: str) -> datasets.Dataset:
        calls.append((name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    records, _ = load_pairs("org/ds", split="validation")
    assert calls == [("org/ds", "validation")] and records[2].origin == "org/ds:row 3"


CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
PROMPT_ROWS = [
    {"q": "Name a colour.", "id": 1},
    {"q": [*CHAT, {"role": "user", "content": "Tell me a joke."}], "id": 2},
    {"q": "  ", "id": 3},  # bad: empty prompt
    {"q": [*CHAT], "id": 4},  # bad: ends with the assistant
]


def _write_prompts(tmp_path: Path, kind: str) -> tuple[Path, list[str]]:
    """PROMPT_ROWS in one local format, and the positions the reader gives rows 3 and 4."""
    import datasets
    import pandas as pd

    path = tmp_path / f"prompts{kind}"
    if kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in PROMPT_ROWS))
        return path, ["line 3", "line 4"]
    if kind == ".json":
        path.write_text(json.dumps(PROMPT_ROWS))
        return path, ["record 3", "record 4"]
    if kind == ".csv":  # text cells only: the conversation rows become plain strings
        pd.DataFrame({"q": ["Name a colour.", "Why?", "  ", "Ok"], "id": [1, 2, 3, 4]}).to_csv(
            path, index=False
        )
        return path, ["line 4"]
    # parquet and save_to_disk need one column type: messages everywhere (an empty list is bad)
    rows = [
        {"q": [{"role": "user", "content": t}] if t else [], "id": i}
        for i, t in enumerate(["a", "b", "", "c"])
    ]
    if kind == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path, ["row 3"]


@pytest.mark.parametrize("kind", [".jsonl", ".json", ".csv", ".parquet", "_dir"])
def test_prompts_load_from_every_local_format(tmp_path: Path, kind: str) -> None:
    path, bad = _write_prompts(tmp_path, kind)
    records, stats = load_prompts(str(path), columns={"prompt": "q"}, on_bad_record="skip")
    assert stats.read == 4 and stats.kept == 4 - len(bad) == len(records)
    assert [e[1].split(": field")[0] for kept in stats.examples.values() for e in kept] == [
        f"{path}: {where}" for where in bad
    ]
    assert all(r.origin.startswith(f"{path}:") for r in records)
    if kind == ".jsonl":
        assert records[0].prompt == "Name a colour." and records[1].prompt[-1]["content"] == "Tell me a joke."
        assert stats.skipped == {"empty prompt": 1, "roles out of order": 1}
    same, _ = load_records("prompts", str(path), columns={"prompt": "q"}, on_bad_record="skip")
    assert same == records
    with pytest.raises(
        DataError,
        match=r"field 'columns': unknown field\(s\) \['chosen'\]; expected some of \['prompt', 'answer'\] "
        r"\(fields of pairwise records: set data.format\)",
    ):
        load_prompts(str(path), columns={"chosen": "q"})
