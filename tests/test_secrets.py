"""A token planted in the environment never reaches the terminal: errors, argparse, tracebacks, logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import align.train
from align.cli import main
from align.util.secrets import redact

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "tiny.yaml")
HF = "hf_planted_abcdef123456"
KEY = "sk-planted-service-key-987"


@pytest.fixture(autouse=True)
def planted(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF)
    monkeypatch.setenv("MY_SERVICE_KEY", KEY)


def _clean(capsys) -> str:
    out, err = capsys.readouterr()
    assert HF not in out + err and KEY not in out + err
    return err


def test_redact_masks_both():
    assert redact(f"a {HF} b {KEY}") == "a *** b ***"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (f"beta={HF}", "beta: expected float, got '***'"),
        (f"model.name=./{KEY}", "model.name: could not load model './***'"),
        (f"data.card={KEY}", None),  # reaches the data loader's error (after preflight)
    ],
)
def test_recipe_values_in_error_lines_are_masked(capsys, monkeypatch, override, expected):
    monkeypatch.setattr(align.train, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["train", TINY, override]) == 2
    err = _clean(capsys)
    assert "***" in err
    if expected is not None:
        assert expected in err


def test_output_dir_path_with_a_token_is_masked(capsys, tmp_path):
    (tmp_path / HF).write_text("")
    assert main(["train", TINY, f"output_dir={tmp_path / HF}"]) == 2
    assert f"output_dir: {tmp_path}/*** exists and is not a directory" in _clean(capsys)


def test_argparse_errors_are_masked(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", TINY, f"--token={HF}"])
    assert e.value.code == 2
    assert "unrecognized arguments: --token=***" in _clean(capsys)


def test_unexpected_exception_traceback_is_masked(capsys, monkeypatch):
    def leak(*args, **kwargs):
        raise RuntimeError(f"upload with {HF} and {KEY} failed")

    monkeypatch.setattr(align.train, "run", leak)
    assert main(["train", TINY]) == 1
    err = _clean(capsys)
    assert (
        "Traceback (most recent call last)" in err and "RuntimeError: upload with *** and *** failed" in err
    )


DRIVER = """
import logging, os, sys
import align.train

def run(recipe, **kwargs):
    logging.getLogger("align.train").warning("connecting with %s", os.environ["HF_TOKEN"])
    logging.getLogger("align.train").warning("key " + os.environ["MY_SERVICE_KEY"])
    raise RuntimeError("failed: " + os.environ["HF_TOKEN"])

align.train.run = run
from align.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_log_records_and_traceback_masked_in_a_real_process(tmp_path):
    """Out of process, so the CLI's own logging set-up (not pytest's capture) writes to stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_TOKEN": HF, "MY_SERVICE_KEY": KEY}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, "train", TINY, f"output_dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    both = proc.stdout + proc.stderr
    assert HF not in both and KEY not in both
    assert "WARNING align.train: connecting with ***" in proc.stderr
    assert "WARNING align.train: key ***" in proc.stderr
    assert "RuntimeError: failed: ***" in proc.stderr
