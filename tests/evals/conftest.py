"""Fixtures of the eval tests: a live judge server on 127.0.0.1 and tiny trained runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from judge_server import JudgeServer


@pytest.fixture
def judge_server():
    server = JudgeServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """A 2-step DPO run and a 2-step KTO run of the tiny model (trained once per session)."""
    from run_helpers import run_tiny

    root = tmp_path_factory.mktemp("runs")
    small = ("train.max_steps=2", "data.max_eval_examples=4", "data.max_train_examples=16")
    run_tiny(root / "dpo", *small)
    run_tiny(root / "kto", "method=kto", *small)
    return {"dpo": root / "dpo", "kto": root / "kto"}
