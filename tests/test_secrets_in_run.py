"""Planted credentials never reach logs, metrics, manifests, recipe dumps, tensorboard events or
printed text of a whole real run; checkpoints load without pickle."""

from __future__ import annotations

import subprocess
import sys

import torch
from run_helpers import TINY, align_env, run_tiny

TOKEN = "hf_PlantedToken0123456789abcdef"
KEY = "sk-planted-key-9876543210zyxw"


def test_planted_tokens_appear_nowhere(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "align",
        "train",
        str(TINY),
        f"output_dir={out}",
        "train.max_steps=2",
        "train.save_every=1",
        "log.trackers=[tensorboard]",
        f"report.sample_prompts=['Repeat after me: {TOKEN} and {KEY}']",
        "report.max_new_tokens=4",
    ]
    env = align_env(HF_TOKEN=TOKEN, MY_SERVICE_API_KEY=KEY, ALIGN_LOG_LEVEL="DEBUG")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = proc.stdout + proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name.startswith("events.out.tfevents") for p in files)
    for secret in (TOKEN, KEY):
        assert secret not in printed
        for p in files:
            assert secret.encode() not in p.read_bytes(), p
    assert "***" in (out / "recipe.yaml").read_text()  # the value reached the writer and was masked
    assert "Repeat after me: ***" in proc.stdout


def test_resume_loads_checkpoints_without_pickle(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_tiny(out, "train.max_steps=2", "train.save_every=1")
    (out / "summary.json").unlink()
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("rng_rank*.pt"))
    real = torch.load
    calls = []

    def guarded(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "torch.load without weights_only=True"
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", guarded)
    assert run_tiny(out, "train.max_steps=3", "train.save_every=1", resume=True)["steps"] == 3
    assert {p.name for p in calls} == {"optimizer.pt", "scheduler.pt"}
