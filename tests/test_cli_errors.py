"""Bad input through the CLI: exit code 2 and one line naming file, record and field; no traceback."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

import align.models.load
import align.train
from align.cli import build_parser, main, parse_args

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


class ModelLoaded(BaseException):
    """Raised where the model would load; a BaseException, so the CLI's catch-all (exit 1) lets it through."""


@pytest.fixture
def no_model(monkeypatch):
    """Data errors must surface before the model is loaded."""

    def boom(*args, **kwargs):
        raise ModelLoaded("model loaded before the data was validated")

    monkeypatch.setattr(align.train, "load_model", boom)
    monkeypatch.setattr(align.models.load, "load_model", boom)


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


def test_data_inspect_prompt_only_data(tmp_path, capsys):
    code, out, err = run_cli(capsys, "data", "inspect", "align_prompts_v1", "data.max_prompt_length=96")
    assert code == 0, err
    assert "records: read 120, kept 120, skipped 0" in out and "examples: train 102, held-out 18" in out
    assert re.search(r"^  prompt\s+p50 \d+  p90 \d+  p99 \d+  max 77$", out, re.M)
    assert "prompt+longer" not in out and "loss on" not in out and "⟦masked" not in out
    assert out.count("⟦prompt: <|im_start|>") == 2 and out.count("<|im_start|>assistant\n⟧") == 2
    # a file, under the default recipe's method (dpo, which cannot train on it): inspect shows the data
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Name a colour."}, {"prompt": " "}])
    code, out, err = run_cli(capsys, "data", "inspect", str(data), "data.format=prompts")
    assert code == 0, err
    assert "records: read 2, kept 1, skipped 1 (1 empty prompt)" in out
    assert f"    {data}: line 2: field 'prompt': empty prompt" in out
    assert "⟦prompt: Name a colour.⟧" in out


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


# -- bad recipes: one line naming the key and its range, before any model loads -----------------


@pytest.fixture
def stop_before_training(monkeypatch, no_model):
    """Also no tokenizer and no training: the recipe must be rejected by load_recipe or preflight."""

    def boom(*args, **kwargs):
        raise AssertionError("reached tokenizer/training with a bad recipe")

    monkeypatch.setattr(align.train, "load_tokenizer", boom)
    monkeypatch.setattr(align.models.load, "load_tokenizer", boom)
    monkeypatch.setattr(align.train, "run", boom)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # were tracebacks (most after the model had loaded)
        ("train.log_every=0", "train.log_every: 0 is out of range [1, 2147483647]"),
        ("optim.lr=-1e-3", "optim.lr: -0.001 is out of range (0, 10]"),
        ("lora.r=0", "lora.r: 0 is out of range [1, 65536]"),
        ("lora.dropout=1.5", "lora.dropout: 1.5 is out of range [0, 1)"),
        ("optim.adam_betas=[0.9]", "optim.adam_betas: expected 2 numbers in [0, 1), got [0.9]"),
        ("optim.adam_betas=[1.5, 2]", "optim.adam_betas[0]: 1.5 is out of range [0, 1)"),
        ("seed=-1", "seed: -1 is out of range [0, 4294967295]"),
        ("train.eval_batch_size=0", "train.eval_batch_size: 0 is out of range [1, 65536]"),
        ("train.chunk_tokens=0", "train.chunk_tokens: 0 is out of range [1, 2147483647]"),
        (
            "model.attn_implementation=fast",
            "model.attn_implementation: expected one of ['eager', 'sdpa', 'flash_attention_2', "
            "'flash_attention_3', 'flex_attention'] or null, got 'fast'",
        ),
        ("optim.lr=1e38", "optim.lr: 1e+38 is out of range (0, 10]"),
        # were accepted and silently wrong
        ("beta=.inf", "beta: expected a finite number, got inf"),
        ("optim.lr=.inf", "optim.lr: expected a finite number, got inf"),
        ("train.max_steps=-3", "train.max_steps: -3 is out of range [1, 2147483647]"),
        ("train.max_steps=0", "train.max_steps: 0 is out of range [1, 2147483647]"),
        ("train.epochs=0", "train.epochs: 0.0 is out of range (0, 10000]"),
        ("optim.warmup_ratio=5", "optim.warmup_ratio: 5.0 is out of range [0, 1]"),
        ("data.max_prompt_length=0", "data.max_prompt_length: 0 is out of range [1, 1048576]"),
        ("data.max_prompt_length=-4", "data.max_prompt_length: -4 is out of range [1, 1048576]"),
        ("data.max_train_examples=-1", "data.max_train_examples: -1 is out of range [1, 2147483647]"),
        ("train.save_every=-1", "train.save_every: -1 is out of range [0, 2147483647]"),
        ("output_dir=''", "output_dir: expected a non-empty string without NUL bytes, got ''"),
        ("train.max_bad_steps=0", "train.max_bad_steps: 0 is out of range [1, 2147483647]"),
    ],
)
def test_bad_recipe_value_is_one_line_with_key_and_range(capsys, stop_before_training, override, message):
    code, _, err = run_cli(capsys, "train", TINY, override)
    assert code == 2
    assert error_line(err) == f"align: error: {TINY}: {message}"


def test_unknown_lora_target_lists_the_model_linear_modules(capsys, stop_before_training):
    code, _, err = run_cli(capsys, "train", TINY, "lora.target_modules=[q_proj, qkv_proj]")
    assert code == 2
    assert error_line(err) == (
        "align: error: lora.target_modules: ['qkv_proj']: no module of this model has that name; "
        "available linear module names: down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"
    )


def test_output_dir_naming_a_file(tmp_path, capsys, stop_before_training):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    code, _, err = run_cli(capsys, "train", TINY, f"output_dir={f}")
    assert code == 2
    assert error_line(err) == f"align: error: output_dir: {f} exists and is not a directory"
    code, _, err = run_cli(capsys, "train", TINY, f"output_dir={f}/run")
    assert error_line(err) == f"align: error: output_dir: {f} is a file, so {f}/run cannot be created"


# -- the command line itself -------------------------------------------------------------------


def test_version(capsys):
    import tomllib

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out == f"align {version}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "r.yaml", "--resume", "beta=0.2", "seed=3"],
        ["train", "r.yaml", "beta=0.2", "--resume", "seed=3"],
        ["train", "r.yaml", "beta=0.2", "seed=3", "--resume"],
        ["train", "--resume", "r.yaml", "beta=0.2", "seed=3"],
    ],
)
def test_overrides_before_and_after_options(argv):
    args = parse_args(argv)
    assert (args.recipe, args.overrides, args.resume, args.overwrite) == (
        "r.yaml",
        ["beta=0.2", "seed=3"],
        True,
        False,
    )


def test_data_inspect_overrides_around_options():
    args = parse_args(["data", "inspect", "src", "a=1", "--recipe", "r.yaml", "b=2"])
    assert (args.source, args.recipe, args.overrides) == ("src", "r.yaml", ["a=1", "b=2"])


def test_unknown_options_are_still_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["train", "r.yaml", "--resume", "--resme"])
    assert e.value.code == 2
    assert "unrecognized arguments: --resme" in capsys.readouterr().err


def test_overwrite_flag():
    assert build_parser().parse_args(["train", "r.yaml", "--overwrite"]).overwrite is True
    assert build_parser().parse_args(["train", "r.yaml"]).overwrite is False


def test_cli_passes_overrides_after_resume_and_overwrite_to_run(monkeypatch, capsys):
    seen = []

    def record(recipe, **kwargs):
        seen.append((recipe, kwargs))
        raise KeyboardInterrupt  # stop here: nothing to print

    monkeypatch.setattr(align.train, "run", record)
    assert main(["train", TINY, "--resume", "beta=0.25", "--overwrite", "seed=7"]) == 130
    ((recipe, kwargs),) = seen
    assert (recipe.beta, recipe.seed, recipe.resume, kwargs) == (0.25, 7, True, {"overwrite": True})


@pytest.mark.parametrize("where", ["align.engine.preflight.check", "align.train.run"])
def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys, where):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupted)
    code, out, err = run_cli(capsys, "train", TINY)
    assert (code, err) == (130, "align: interrupted\n")


def test_unexpected_exception_prints_traceback_and_exits_1(monkeypatch, capsys):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug, not a user error")

    monkeypatch.setattr(align.train, "run", bug)
    code, _, err = run_cli(capsys, "train", TINY)
    assert code == 1
    assert err.startswith("Traceback (most recent call last):")
    assert err.rstrip().endswith("ZeroDivisionError: a bug, not a user error")


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
    with caplog.at_level(logging.INFO, logger="align"), pytest.raises(ModelLoaded, match="model loaded"):
        main(train_args(tmp_path, data, "data.on_bad_record=skip"))
    assert f"{data}: read 20, kept 12, skipped 7 empty completion, 1 missing field" in caplog.text
