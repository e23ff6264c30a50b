"""Bad input through the CLI: exit code 2 and one line naming file, record and field; no traceback."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

import align.models
import align.train
from align.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "tiny.yaml")


def good(i: int) -> dict:
    return {
        "prompt": [{"role": "user", "content": f"What is {i} plus 1?"}],
        "chosen": [{"role": "assistant", "content": f"It is {i + 1}."}],
        "rejected": [{"role": "assistant", "content": f"It is {i + 2}."}],
    }


MISSING_REJECTED = {"prompt": "What is 2 plus 2?", "chosen": "4"}
SAME = {"prompt": "What is 2 plus 2?", "chosen": "4", "rejected": "4"}
EMPTY = {
    "prompt": [{"role": "user", "content": "Say something."}],
    "chosen": [{"role": "assistant", "content": "  "}],
    "rejected": [{"role": "assistant", "content": "No."}],
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The CLI's one error line; anything else on stderr would be log output, never a traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("align: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Data errors must surface before the model is loaded."""

    def boom(*args, **kwargs):
        raise AssertionError("model loaded before the data was validated")

    monkeypatch.setattr(align.train, "load_model", boom)
    monkeypatch.setattr(align.models, "load_model", boom)


def train_args(tmp_path: Path, data: Path | str, *extra: str) -> list[str]:
    return ["train", TINY, "data.card=", f"data.path={data}", f"output_dir={tmp_path / 'run'}", *extra]


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        (MISSING_REJECTED, "rejected", "missing field"),
        (SAME, "chosen", "chosen == rejected"),
        (EMPTY, "chosen", "empty completion"),
    ],
    ids=["missing-rejected", "chosen-equals-rejected", "empty-completion"],
)
def test_bad_record_names_file_line_and_field(tmp_path, capsys, no_model, bad, field, reason):
    data = write_jsonl(tmp_path / "prefs.jsonl", [good(0), good(1), bad, good(3)])
    code, out, err = run_cli(capsys, *train_args(tmp_path, data))
    assert code == 2
    line = error_line(err)
    assert line == (
        f"align: error: {data}: 1 bad record of 4 (1 {reason}); fix it, or set data.on_bad_record=skip "
        "to skip and count bad records:"
    )
    assert f"\n  {data}: line 3: field '{field}': {reason}" in err
    assert "run directory" not in out


def test_skip_mode_trains_and_reports_skipped(tmp_path, capsys, caplog):
    rows = [good(i) for i in range(12)]
    rows.insert(2, MISSING_REJECTED)  # line 3
    rows.insert(5, SAME)  # line 6
    rows.insert(8, EMPTY)  # line 9
    data = write_jsonl(tmp_path / "prefs.jsonl", rows)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="align"):
        code, out, err = run_cli(
            capsys, *train_args(tmp_path, data, "data.on_bad_record=skip", "train.max_steps=1", "cpu=true")
        )
    assert code == 0, err
    assert "Traceback" not in err and "align: error" not in err
    assert f"run directory: {run_dir}  (1 steps" in out
    # the log says what was skipped and why
    assert (
        "read 15, kept 12, skipped 1 chosen == rejected, 1 empty completion, 1 missing field" in caplog.text
    )
    manifest = json.loads((run_dir / "manifest.json").read_text())
    load = manifest["data"]["load"]
    assert load["read"] == 15 and load["kept"] == 12
    assert load["skipped"] == {"missing field": 1, "chosen == rejected": 1, "empty completion": 1}
    assert manifest["data"]["train_examples"] + manifest["data"]["eval_examples"] == 12
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 1


def test_missing_data_file(tmp_path, capsys, no_model):
    missing = tmp_path / "nope.jsonl"
    code, _, err = run_cli(capsys, *train_args(tmp_path, missing))
    assert code == 2
    assert error_line(err) == f"align: error: {missing}: file not found: {missing}"


def test_missing_local_model_dir(tmp_path, capsys):
    data = write_jsonl(tmp_path / "prefs.jsonl", [good(i) for i in range(4)])
    code, _, err = run_cli(capsys, *train_args(tmp_path, data, "model.name=./nope"))
    assert code == 2
    line = error_line(err)
    assert "'./nope'" in line and "does not exist" in line


def test_missing_local_model_dir_mentions_offline_alternatives(tmp_path, capsys):
    data = write_jsonl(tmp_path / "prefs.jsonl", [good(i) for i in range(4)])
    code, _, err = run_cli(capsys, *train_args(tmp_path, data, "model.name=./nope"))
    assert code == 2
    line = error_line(err)
    assert "offline alternatives" in line.lower()
    assert "smollm2-135m-instruct" in line and "tiny-smollm2" in line


def test_bad_recipe_override_through_cli(tmp_path, capsys, no_model):
    code, _, err = run_cli(capsys, "train", TINY, "train.per_device_batch_size=four")
    assert code == 2
    assert error_line(err) == (f"align: error: {TINY}: train.per_device_batch_size: expected int, got 'four'")


# -- align data inspect ------------------------------------------------------------------------


def test_data_inspect_card(capsys):
    code, out, err = run_cli(
        capsys, "data", "inspect", "align_prefs_v1", "data.max_length=64", "data.max_prompt_length=40"
    )
    assert code == 0, err
    assert "source: " in out and "align_prefs_v1.md" in out
    assert "records: read 500, kept 500, skipped 0" in out
    m = re.search(r"examples: train (\d+), held-out (\d+)", out)
    assert m and int(m[1]) + int(m[2]) == 500 and int(m[2]) == 75  # heldout_fraction 0.15
    m = re.search(
        r"max_length 64, max_prompt_length 40: 500 records: (\d+) chat prompts lost older turns, (\d+) chat "
        r"prompts had a turn's text cut, 0 plain prompts cut, (\d+) completions truncated; 0 dropped$",
        out,
        re.M,
    )
    assert m, out
    assert int(m[1]) > 0 and int(m[2]) > 0 and int(m[3]) > 0
    for name in ("prompt", "chosen", "rejected", "prompt+longer"):
        assert re.search(rf"^  {re.escape(name)}\s+p50 \d+  p90 \d+  p99 \d+  max \d+$", out, re.M), name
    assert re.search(r"prompt\s+p50 \d+  p90 \d+  p99 \d+  max 40$", out, re.M)  # truncated to 40
    assert re.search(r"prompt\+longer\s+.*max 64$", out, re.M)
    # two rendered examples, prompt marked as masked, completions with their loss-token counts
    assert len(re.findall(r"^example .*align_prefs_v1\.jsonl:line \d+:$", out, re.M)) == 2
    assert out.count("⟦masked: <|im_start|>") == 2
    assert out.count("<|im_start|>assistant\n⟧") == 2  # the generation prompt is the masked part's end
    assert len(re.findall(r"^  chosen   \(loss on \d+ tokens\): '.*'$", out, re.M)) == 2
    assert len(re.findall(r"^  rejected \(loss on \d+ tokens\): '.*'$", out, re.M)) == 2


def test_data_inspect_file_with_skips(tmp_path, capsys):
    rows = [good(i) for i in range(6)] + [SAME]
    data = write_jsonl(tmp_path / "prefs.jsonl", rows)
    code, out, err = run_cli(capsys, "data", "inspect", str(data), "data.on_bad_record=skip")
    assert code == 0, err
    assert f"source: {data}" in out
    assert "records: read 7, kept 6, skipped 1 (1 chosen == rejected)" in out
    assert "bad records: 1, skipped (data.on_bad_record: skip):\n  1 chosen == rejected:\n" in out
    assert f"    {data}: line 7: field 'chosen': chosen == rejected" in out
    assert "0 plain prompts cut, 0 completions truncated; 0 dropped" in out


def test_data_inspect_missing_file_is_not_called_an_unknown_card(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    code, _, err = run_cli(capsys, "data", "inspect", str(missing))
    assert code == 2
    assert error_line(err) == f"align: error: {missing}: file not found: {missing}"


def test_data_inspect_unknown_card_suggests(capsys):
    code, _, err = run_cli(capsys, "data", "inspect", "align_prefs_v2")
    assert code == 2
    line = error_line(err)
    assert "unknown data card" in line and "did you mean 'align_prefs_v1'" in line


# -- every bad record at once (issue 5, item 4) -------------------------------------------------


def hh(i: int, answer: str) -> dict:
    """Anthropic HH-RLHF style: whole transcripts, no prompt column; some final answers are empty."""
    head = f"\n\nHuman: What is {i} plus 1?\n\nAssistant:"
    return {"chosen": f"{head} It is {i + 1}.", "rejected": f"{head}{answer}"}


def hh_corpus(tmp_path: Path) -> tuple[Path, list[int]]:
    rows = [hh(i, "" if i % 3 == 1 else f" It is {i}.") for i in range(20)]
    rows[2] = {"chosen": "It is 3.", "rejected": "It is 4."}  # not a transcript: no prompt at all
    empty = [i + 1 for i in range(20) if i % 3 == 1]
    return write_jsonl(tmp_path / "hh.jsonl", rows), empty


def test_error_mode_scans_everything_then_reports_counts_and_first_places(tmp_path, capsys, no_model):
    data, empty = hh_corpus(tmp_path)
    code, out, err = run_cli(capsys, *train_args(tmp_path, data))
    assert code == 2 and "Traceback" not in err
    line = error_line(err)
    assert line == (
        f"align: error: {data}: 8 bad records of 20 (7 empty completion, 1 missing field); fix them, or set "
        "data.on_bad_record=skip to skip and count bad records; the first 5:"
    )
    places = err[err.index(line) + len(line) :].strip("\n").splitlines()
    missing = (
        f"  {data}: line 3: field 'prompt': missing field: no prompt, and chosen/rejected are not "
        "implicit-prompt transcripts (those need '\\n\\nAssistant:' turns)"
    )
    rejected = [f"  {data}: line {n}: field 'rejected': empty completion" for n in empty]
    assert places[:5] == [rejected[0], missing, *rejected[1:4]]
    assert places[5] == "  … and 3 more"


def test_data_inspect_lists_every_bad_record_and_still_shows_the_good_ones(tmp_path, capsys):
    data, empty = hh_corpus(tmp_path)
    code, out, err = run_cli(capsys, "data", "inspect", str(data), "--recipe", TINY)
    assert code == 0, err
    assert "records: read 20, kept 12, skipped 8 (7 empty completion, 1 missing field)" in out
    assert (
        "bad records: 8, a training run stops on these (data.on_bad_record=skip skips and counts them):"
        in out
    )
    assert "\n  7 empty completion:\n" in out and "\n  1 missing field:\n" in out
    for n in empty[:5]:
        assert f"\n    {data}: line {n}: field 'rejected': empty completion\n" in out
    assert "\n    … and 2 more\n" in out
    assert re.search(r"^examples: train \d+, held-out \d+", out, re.M)
    assert "12 records: " in out and out.count("⟦masked: ") == 2


def test_skip_mode_logs_counts_by_reason(tmp_path, capsys, caplog, no_model):
    data, _ = hh_corpus(tmp_path)
    with caplog.at_level(logging.INFO, logger="align"), pytest.raises(AssertionError, match="model loaded"):
        main(train_args(tmp_path, data, "data.on_bad_record=skip"))
    assert f"{data}: read 20, kept 12, skipped 7 empty completion, 1 missing field" in caplog.text
