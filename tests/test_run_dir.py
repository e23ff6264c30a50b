"""The run directory: no silent overwrite, resume without side effects, finished runs skipped,
window-mean train metrics."""

from __future__ import annotations

import json

import pytest
from run_helpers import TINY, adapter, max_abs_diff, metric_steps, run_tiny

from align.cli import main
from align.engine.run_dir import RunDirError


def _snapshot(run_dir) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_fresh_run_refuses_a_used_directory_and_overwrite_sets_it_aside(tmp_path, capsys):
    out = tmp_path / "run"
    run_tiny(out, "train.max_steps=2")
    before = _snapshot(out)
    with pytest.raises(RunDirError, match="--resume.*--overwrite"):
        run_tiny(out, "train.max_steps=2")
    assert _snapshot(out) == before  # nothing touched
    code = main(["train", str(TINY), f"output_dir={out}", "train.max_steps=2"])
    assert code == 2 and "already holds a run" in capsys.readouterr().err

    from align.methods import load_recipe
    from align.train import run

    run(load_recipe(TINY, [f"output_dir={out}", "train.max_steps=3"]), overwrite=True)
    (prev,) = tmp_path.glob("run.prev-*")
    assert _snapshot(prev) == before  # the earlier run, whole, with the recipe that made it
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    assert metric_steps(out) == ([1, 2, 3], [0, 3])


def test_resume_keeps_before_metrics_and_logs_the_final_eval_once(tmp_path):
    out = tmp_path / "run"
    args = ("train.max_steps=4", "train.save_every=2", "optim.lr=1e-2")
    first = run_tiny(out, *args)
    # killed after the final eval line was written, before the adapter and summary
    (out / "summary.json").unlink()
    import shutil

    shutil.rmtree(out / "adapter")
    again = run_tiny(out, *args, resume=True)
    assert again["before"] == first["before"] and again["before"]
    assert again["after"] == pytest.approx(first["after"], abs=1e-6)
    assert metric_steps(out) == ([1, 2, 3, 4], [0, 4])
    assert json.loads((out / "summary.json").read_text())["before"] == first["before"]


def test_resuming_a_finished_run_does_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    run_tiny(out, "train.max_steps=2")
    before = _snapshot(out)
    summary = run_tiny(out, "train.max_steps=2", resume=True)
    assert summary["complete"] and summary["steps"] == 2
    assert _snapshot(out) == before
    code = main(["train", str(TINY), f"output_dir={out}", "train.max_steps=2", "--resume"])
    assert code == 0 and "already complete" in capsys.readouterr().out


def test_logged_train_metrics_are_the_window_mean(tmp_path):
    args = ("train.max_steps=4", "optim.lr=1e-2")
    run_tiny(tmp_path / "every", *args, "train.log_every=1")
    run_tiny(tmp_path / "window", *args, "train.log_every=2")
    assert max_abs_diff(adapter(tmp_path / "every"), adapter(tmp_path / "window")) == 0

    def train_rows(name):
        rows = [json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r for r in rows if "train/loss" in r}

    every, window = train_rows("every"), train_rows("window")
    assert sorted(window) == [2, 4]
    for end in (2, 4):
        for key in ("train/loss", "train/rewards/margins", "train/grad_norm"):
            mean = (every[end - 1][key] + every[end][key]) / 2
            assert window[end][key] == pytest.approx(mean, rel=1e-6), key
        assert window[end]["train/loss"] != pytest.approx(every[end]["train/loss"], rel=1e-6)
