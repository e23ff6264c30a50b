"""`align sweep RECIPE --grid beta=0.01,0.1 --grid method=dpo,ipo [key=value ...] [--eval mt-bench ...]`

Trains every combination of the grid (the HF "Preference Tuning LLMs with DPO Methods" study as
one command), evaluates every run and the base model in one eval directory, and writes a
comparison table, PNG plots and a markdown report:

    OUT/sweep.json                 recipe, grid, overrides, runs
    OUT/runs/<name>/               one run directory per combination (align.train.run)
    OUT/eval/                      the mt-bench eval directory of all runs + the base (mt_bench.py)
    OUT/table.{jsonl,csv,md}       one row per run (and the base)
    OUT/plots/*.png                score vs beta, per-category bars, reward margin / KL vs beta, frontier
    OUT/report.md                  the table and the plots

Every recipe of the grid is loaded and validated before anything trains. A finished run
(summary.json with all its steps) is skipped on a re-run; an interrupted one resumes from its last
checkpoint; so a re-run of the same command finishes the sweep. Runs train in this process through
`align.train.run`, one after the other.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from align.evals import plots, report
from align.evals.frontier import RewardFn
from align.evals.mt_bench import EvalConfig, EvalResult, evaluate_runs
from align.evals.policies import read_json
from align.methods import load_recipe
from align.recipe import Recipe, dump_recipe
from align.util.errors import Interrupted, RecipeError
from align.util.files import dumps_json, write_text_atomic

log = logging.getLogger("align.evals")


class SweepInterrupted(Interrupted):
    """A run of the sweep stopped on a signal after writing a checkpoint."""


@dataclass
class SweepRun:
    name: str
    values: dict[str, Any]  # grid key -> the recipe's (typed) value
    recipe: Recipe
    status: str = "pending"

    @property
    def run_dir(self) -> Path:
        return Path(self.recipe.output_dir)


@dataclass
class SweepResult:
    out: Path
    runs: list[SweepRun]
    rows: list[dict[str, Any]]
    markdown: str
    plots: list[Path] = field(default_factory=list)
    eval: EvalResult | None = None


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        vals = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(vals):
            raise RecipeError(f"--grid {item!r}: expected key=v1,v2,... (e.g. beta=0.01,0.1,0.3)")
        if key in (k for k, _ in grid):
            raise RecipeError(f"--grid {key}: given twice; list every value in one --grid")
        if key == "output_dir":
            raise RecipeError("--grid output_dir: the sweep names each run's directory itself")
        grid.append((key, vals))
    if not grid:
        raise RecipeError("align sweep needs at least one --grid key=v1,v2,...")
    return grid


def run_name(combo: dict[str, str]) -> str:
    """dpo-beta0.1 style: the method's name alone, other keys as <last part of key><value>."""
    parts = [combo["method"]] if "method" in combo else []
    parts += [f"{k.rsplit('.', 1)[-1]}{v}" for k, v in combo.items() if k != "method"]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def _value(recipe: Recipe, dotted: str) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def plan(
    recipe_path: str | Path, grid: list[tuple[str, list[str]]], overrides: list[str], out: Path
) -> list[SweepRun]:
    """Every combination's recipe, validated before anything trains."""
    runs = []
    keys = [k for k, _ in grid]
    for values in itertools.product(*(v for _, v in grid)):
        combo = dict(zip(keys, values))
        name = run_name(combo)
        sets = [*overrides, *(f"{k}={v}" for k, v in combo.items()), f"output_dir={out / 'runs' / name}"]
        recipe = load_recipe(recipe_path, sets)
        runs.append(SweepRun(name, {k: _value(recipe, k) for k in keys}, recipe))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise RecipeError(f"--grid values give two runs the same name ({names}); use distinct values")
    return runs


def finished(run_dir: Path, recipe: Recipe) -> bool:
    """The run holds this recipe's finished result: summary.json with every step the run planned
    (manifest.json total_steps), an adapter, and a recipe.yaml equal to `recipe` (so a sweep re-run
    with, say, more steps continues the run instead of skipping it)."""
    summary, manifest = read_json(run_dir / "summary.json"), read_json(run_dir / "manifest.json")
    total = manifest.get("total_steps")
    if not summary or total is None or summary.get("steps", -1) < total or not (run_dir / "adapter").is_dir():
        return False
    saved = run_dir / "recipe.yaml"
    plain = lambda d: {k: v for k, v in (d or {}).items() if k != "resume"}
    return saved.is_file() and plain(yaml.safe_load(saved.read_text())) == plain(
        yaml.safe_load(dump_recipe(recipe))
    )


def train_all(runs: list[SweepRun]) -> None:
    from align.engine.run_dir import is_occupied
    from align.train import run

    for i, r in enumerate(runs, start=1):
        if finished(r.run_dir, r.recipe):
            r.status = "skipped (finished)"
            log.info("sweep %d/%d %s: finished earlier, skipped", i, len(runs), r.name)
            continue
        resume = is_occupied(r.run_dir)
        log.info("sweep %d/%d %s: %s", i, len(runs), r.name, "resuming" if resume else "training")
        try:
            run(r.recipe, resume=resume)
        except Interrupted:
            raise SweepInterrupted(
                f"stopped during run {r.name} (checkpoint written); run the same `align sweep` command "
                "again to resume: finished runs are skipped, this one continues"
            ) from None
        r.status = "resumed" if resume else "trained"


def _normalisation(objective: dict[str, Any]) -> str | None:
    """The log-prob normalisation this run used (IPO's is a choice: `normalize` says which)."""
    chosen = {"mean": "per-token mean", "sum": "sum over completion tokens"}.get(objective.get("normalize"))
    return chosen or objective.get("normalisation")


def _margin(summary: dict[str, Any]) -> float | None:
    after = summary.get("after") or {}
    return after.get("eval/rewards/margins", after.get("eval/reward_gap"))


def sweep_rows(runs: list[SweepRun], ev: EvalResult | None) -> list[dict[str, Any]]:
    """One row per run (then the base models): grid values, objective, training and eval numbers."""
    scores = {r["model"]: r for r in ev.rows} if ev else {}
    rows = []
    for r in runs:
        summary, manifest = read_json(r.run_dir / "summary.json"), read_json(r.run_dir / "manifest.json")
        objective = manifest.get("objective") or {}
        rows.append(
            {
                "name": r.name,
                **r.values,
                "method": r.recipe.method,
                "beta": r.recipe.beta,
                "normalisation": _normalisation(objective),
                "steps": summary.get("steps"),
                "status": r.status,
                "reward_margin": _margin(summary),
                "accuracy": (summary.get("after") or {}).get("eval/policy/accuracy"),
                **_eval_columns(scores.get(r.name)),
            }
        )
    for label, s in scores.items():
        if label.startswith("base:"):
            rows.append(
                {"name": label, "method": None, "beta": None, "status": "baseline", **_eval_columns(s)}
            )
    return rows


def best_run(result: SweepResult) -> SweepRun | None:
    """The trained run with the highest overall MT-Bench mean (base models excluded), or None when
    the sweep was not evaluated or nothing was rated."""
    scored = {
        r["name"]: r["score"]["mean"]
        for r in result.rows
        if r.get("status") != "baseline" and r.get("score") and not math.isnan(r["score"]["mean"])
    }
    if not scored:
        return None
    name = max(scored, key=scored.get)
    return next(r for r in result.runs if r.name == name)


def _eval_columns(s: dict[str, Any] | None) -> dict[str, Any]:
    if s is None:
        return {}
    sc = s["scores"]
    front = s.get("frontier") or {}
    return {
        "score": sc["overall"],
        "turn1": sc.get("turn1"),
        "turn2": sc.get("turn2"),
        "categories": {k: v for k, v in sc.items() if k not in ("overall", "turn1", "turn2")},
        "unparsable": s["unparsable"],
        "best": s.get("best") == s["model"],
        "inside_noise": (s.get("vs_best") or {}).get("inside_noise"),
        "kl": front.get("kl"),
        "reward": front.get("reward"),
    }


def sweep_markdown(rows: list[dict[str, Any]], keys: list[str], judge: str | None) -> str:
    has_eval = any(r.get("score") for r in rows)
    has_reward = any(r.get("reward") for r in rows)
    headers = ["run", *keys, "normalisation", "steps", "status", "reward margin", "pref. acc."]
    if has_eval:
        headers += ["MT-Bench", "95% CI", "turn 1", "turn 2", "vs best", "unparsable", "KL"]
    if has_reward:
        headers.append("reward")
    body = []
    for r in rows:
        cells = [r["name"], *(str(r.get(k, "")) if r.get(k) is not None else "" for k in keys)]
        cells += [r.get("normalisation") or "", str(r.get("steps") or ""), r.get("status", "")]
        cells += [report.num(r.get("reward_margin"), 3), report.num(r.get("accuracy"), 3)]
        if has_eval:
            score = r.get("score") or {}
            mark = "best" if r.get("best") else "≈" if r.get("inside_noise") else ""
            cells += [report.num(score.get("mean")), report.interval(score)]
            cells += [
                report.num((r.get("turn1") or {}).get("mean")),
                report.num((r.get("turn2") or {}).get("mean")),
            ]
            cells += [mark, str(r.get("unparsable", "")), report.sig((r.get("kl") or {}).get("mean"))]
        if has_reward:
            cells.append(report.sig((r.get("reward") or {}).get("mean")))
        body.append(cells)
    head = (
        f"Sweep: MT-Bench-style scores, judge {judge}"
        if has_eval
        else "Sweep (no eval: --eval mt-bench adds scores)"
    )
    notes = "reward margin: held-out implicit-reward margin after training (KTO: the reward gap)."
    if has_eval:
        notes += " KL: KL(policy || reference) per answer on the eval prompts. " + report.NOISE_NOTE
    return f"{head}\n\n{report.md_table(headers, body)}\n\n{notes}"


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not isinstance(v, dict)}
    for key in ("score", "turn1", "turn2", "kl", "reward"):
        out.update(report.flat_ci(key, row.get(key)))
    for cat, ci in (row.get("categories") or {}).items():
        out[cat] = ci.get("mean")
    return out


def axes(grid: list[tuple[str, list[str]]], runs: list[SweepRun]) -> tuple[str | None, str | None]:
    """(x key, series key) for plots: beta (else the first numeric grid key) by method (else the
    first other grid key)."""
    keys = [k for k, _ in grid]
    numeric = [
        k
        for k in keys
        if all(isinstance(r.values[k], int | float) and not isinstance(r.values[k], bool) for r in runs)
    ]
    x = "beta" if "beta" in keys else (numeric[0] if numeric else None)
    others = [k for k in keys if k != x]
    series = "method" if "method" in others else (others[0] if others else None)
    return x, series


def make_plots(
    out: Path, rows: list[dict[str, Any]], x: str | None, series: str | None, judge: str | None
) -> list[Path]:
    if x is None:
        return []
    runs = [r for r in rows if r.get("status") != "baseline"]
    bases = [r for r in rows if r.get("status") == "baseline"]
    base = bases[0] if len(bases) == 1 else None
    made = [
        plots.margin_and_kl(
            out / "margin_kl_vs_beta.png" if x == "beta" else out / f"margin_kl_vs_{x}.png",
            runs,
            x,
            series,
            base,
        )
    ]
    if any(r.get("score") for r in runs):
        made.append(
            plots.score_vs_x(
                out / ("score_vs_beta.png" if x == "beta" else f"score_vs_{x}.png"),
                runs,
                x,
                series,
                base,
                judge or "",
            )
        )
        best: dict[str, dict[str, Any]] = {}
        for r in runs:
            key = str(r.get(series)) if series else "runs"
            if r.get("score") and (key not in best or r["score"]["mean"] > best[key]["score"]["mean"]):
                best[key] = r
        cats = list((runs[0].get("categories") or {}).keys()) if runs else []
        made.append(plots.categories(out / "categories_best.png", best, base, cats))
    if any(r.get("kl") for r in runs):
        made.append(plots.frontier(out / "frontier.png", runs, series, x, base))
    return [p for p in made if p is not None]


def run_sweep(
    recipe_path: str | Path,
    grid_items: list[str],
    overrides: list[str],
    out: str | Path,
    eval_cfg: EvalConfig | None = None,
    reward_fn: RewardFn | None = None,
) -> SweepResult:
    out = Path(out)
    grid = parse_grid(grid_items)
    runs = plan(recipe_path, grid, overrides, out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / "sweep.json",
        dumps_json(
            {
                "recipe": str(recipe_path),
                "grid": dict(grid),
                "overrides": overrides,
                "runs": [r.name for r in runs],
            },
            indent=1,
        ),
    )
    train_all(runs)
    ev = evaluate_runs([r.run_dir for r in runs], out / "eval", eval_cfg, reward_fn) if eval_cfg else None
    rows = sweep_rows(runs, ev)
    keys = [k for k, _ in grid]
    markdown = sweep_markdown(rows, keys, ev.judge if ev else None)
    report.write_tables(out, "table", rows, [_flat(r) for r in rows], markdown)
    x, series = axes(grid, runs)
    made = make_plots(out / "plots", rows, x, series, ev.judge if ev else None)
    write_text_atomic(out / "report.md", _report(recipe_path, grid, overrides, markdown, made, out))
    return SweepResult(out, runs, rows, markdown, made, ev)


def _report(recipe_path, grid, overrides, markdown: str, made: list[Path], out: Path) -> str:
    grid_text = "; ".join(f"`{k}` = {', '.join(v)}" for k, v in grid)
    extra = f", overrides `{' '.join(overrides)}`" if overrides else ""
    lines = ["# Sweep report", "", f"Recipe `{recipe_path}`, grid {grid_text}{extra}.", "", markdown, ""]
    for p in made:
        lines += [f"![{p.stem.replace('_', ' ')}]({p.relative_to(out).as_posix()})", ""]
    return "\n".join(lines)
