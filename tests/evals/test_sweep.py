"""`align sweep`: 2 betas x 2 methods of the tiny model, evaluated against a live judge server."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from eval_helpers import eval_config, write_questions
from PIL import Image
from run_helpers import TINY, metric_steps

from align.cli import main
from align.evals.sweep import parse_grid, plan, run_name, run_sweep
from align.util.errors import RecipeError

GRID = ["beta=0.1,0.5", "method=dpo,ipo"]
SMALL = ["train.max_steps=2", "train.save_every=1", "data.max_eval_examples=4", "data.max_train_examples=16"]
NAMES = ["dpo-beta0.1", "ipo-beta0.1", "dpo-beta0.5", "ipo-beta0.5"]


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def interrupted_run(out: Path, name: str) -> None:
    """The state a run is left in when killed after its step-1 checkpoint: trained with the
    sweep's own recipe, then its final outputs and later checkpoint removed."""
    from align.train import run

    (recipe,) = [r.recipe for r in plan(TINY, parse_grid(GRID), SMALL, out) if r.name == name]
    run(recipe)
    run_dir = Path(recipe.output_dir)
    for p in ("summary.json", "adapter", "checkpoints/step-0000002"):
        shutil.rmtree(run_dir / p) if (run_dir / p).is_dir() else (run_dir / p).unlink()


def assert_png(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= 400 and im.height >= 300
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert len(colours) >= 20, f"{path.name}: {len(colours)} colours"  # lines, text, markers
        white = max(count for count, c in colours if c == (255, 255, 255))
        assert white < 0.97 * im.width * im.height  # something is drawn


def test_sweep_table_plots_resume_and_skip(judge_server, tmp_path, capsys, monkeypatch):
    out = tmp_path / "sweep"
    interrupted_run(out, "dpo-beta0.1")
    questions = write_questions(tmp_path / "q.jsonl", categories=("writing", "math"))
    cfg = eval_config(judge_server, questions)
    result = run_sweep(TINY, GRID, SMALL, out, cfg)

    status = {r.name: r.status for r in result.runs}
    assert status == {"dpo-beta0.1": "resumed", **{n: "trained" for n in NAMES[1:]}}
    train_steps, _ = metric_steps(out / "runs" / "dpo-beta0.1")
    assert train_steps == [1, 2]  # the resumed run logged every step once
    for name in NAMES:
        assert json.loads((out / "runs" / name / "summary.json").read_text())["steps"] == 2
        manifest = json.loads((out / "runs" / name / "manifest.json").read_text())
        assert manifest["method"] == name.split("-")[0]
        assert manifest["objective"]["beta"] == float(name.split("beta")[1])

    # the table's numbers are the eval files' numbers
    table = rows_of(out / "table.jsonl")
    assert [r["name"] for r in table] == [*NAMES, "base:tiny-smollm2"]
    judgments = rows_of(out / "eval" / "judgments.jsonl")
    scores = {r["model"]: r for r in rows_of(out / "eval" / "scores.jsonl")}
    csv_rows = {r["name"]: r for r in csv.DictReader((out / "table.csv").open())}
    for row in table:
        ratings = [j["rating"] for j in judgments if j["model"] == row["name"]]
        assert len(ratings) == 4
        assert (
            row["score"]["mean"]
            == pytest.approx(sum(ratings) / 4)
            == scores[row["name"]]["scores"]["overall"]["mean"]
        )
        assert float(csv_rows[row["name"]]["score"]) == pytest.approx(row["score"]["mean"])
        assert row["kl"]["mean"] == scores[row["name"]]["frontier"]["kl"]["mean"]
        if row["status"] != "baseline":
            summary = json.loads((out / "runs" / row["name"] / "summary.json").read_text())
            assert row["reward_margin"] == summary["after"]["eval/rewards/margins"]
            assert row["normalisation"] in ("sum over completion tokens", "per-token mean")
            assert row["kl"]["mean"] > 0
    md = (out / "table.md").read_text()
    for row in table:
        assert f"| {row['name']} |" in md and f"{row['score']['mean']:.2f}" in md

    # plots: valid PNGs with content, embedded in the report
    names = sorted(p.name for p in result.plots)
    assert names == ["categories_best.png", "frontier.png", "margin_kl_vs_beta.png", "score_vs_beta.png"]
    report = (out / "report.md").read_text()
    for p in result.plots:
        assert_png(p)
        assert f"]({p.relative_to(out).as_posix()})" in report
    assert md.strip() in report

    # a re-run (through the CLI) trains nothing, generates nothing, asks the judge nothing
    before = judge_server.count()
    stamps = {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in NAMES}
    argv = ["sweep", str(TINY), *sum((["--grid", g] for g in GRID), []), *SMALL, "--out", str(out)]
    argv += ["--eval", "mt-bench", "--judge", "openai:judge-test", "--judge-base-url", judge_server.url]
    argv += ["--questions", str(questions), "--max-new-tokens", "6", "--batch-size", "4"]
    from hub_helpers import hub_server, isolate_hub

    isolate_hub(monkeypatch, tmp_path / "hf-cache")
    monkeypatch.setenv("HF_TOKEN", "hf_sweeptoken")
    with hub_server("hf_sweeptoken") as hub:  # --push-best publishes the best-scored run
        assert main([*argv, "--push-best", "alice/best", "--hub-endpoint", hub.endpoint]) == 0
        pushed = hub.files("alice/best")
    printed = capsys.readouterr().out
    best = max((r for r in table if r["status"] != "baseline"), key=lambda r: r["score"]["mean"])
    assert f"best run: {best['name']}" in printed
    assert (
        pushed["adapter_model.safetensors"]
        == (out / "runs" / best["name"] / "adapter" / "adapter_model.safetensors").read_bytes()
    )
    assert judge_server.count() == before
    assert stamps == {n: (out / "runs" / n / "summary.json").stat().st_mtime_ns for n in NAMES}
    assert printed.count("skipped (finished)") == 4 and "plot: " in printed


def test_grid_errors_and_names():
    assert run_name({"beta": "0.1", "method": "kto"}) == "kto-beta0.1"
    assert run_name({"optim.lr": "1e-5"}) == "lr1e-5"
    assert parse_grid(["beta=0.1, 0.2"]) == [("beta", ["0.1", "0.2"])]
    for bad, match in [
        (["beta"], "expected key=v1,v2"),
        (["beta=0.1,"], "expected key=v1,v2"),
        (["beta=1", "beta=2"], "given twice"),
        (["output_dir=a,b"], "names each run"),
    ]:
        with pytest.raises(RecipeError, match=match):
            parse_grid(bad)


def test_every_recipe_is_checked_before_training(tmp_path, capsys):
    code = main(["sweep", str(TINY), "--grid", "beta=0.1,-1", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "beta: -1.0 is out of range [0, 1000]" in err and "Traceback" not in err
    assert not (tmp_path / "s" / "runs").exists()  # nothing trained
    code = main(
        ["sweep", str(TINY), "--grid", "method=dpo,kto", "--eval", "mt-bench", "--out", str(tmp_path / "s")]
    )
    assert code == 2 and "--eval mt-bench needs --judge" in capsys.readouterr().err


def test_refused_under_a_multi_process_launch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["sweep", str(TINY), "--grid", "beta=0.1,0.2", "--out", str(tmp_path / "s")]) == 2
    assert main(["eval", "mt-bench", str(tmp_path), "--judge", "hf:tiny-smollm2"]) == 2
    err = capsys.readouterr().err
    assert "align sweep runs as one process" in err and "align eval runs as one process" in err
    assert not (tmp_path / "s").exists()
