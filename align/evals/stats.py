"""Scores per model, turn and category with bootstrap 95% intervals, through `evaluate`.

The metrics are `evaluate.Metric` scripts shipped in align/evals/metrics and loaded by path
(`evaluate.load("accuracy")` needs the Hub); results files are written with `evaluate.save`, which
records the time, Python and `evaluate` versions next to the numbers.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

METRICS = Path(__file__).parent / "metrics"
N_BOOT = 2000


@cache
def metric(name: str):
    import evaluate

    return evaluate.load(str(METRICS / name / f"{name}.py"), keep_in_memory=True)


def mean_ci(scores: list[float], seed: int = 0) -> dict[str, Any]:
    """{mean, low, high, n}: the mean and its bootstrap 95% interval (NaN when empty)."""
    return metric("mean_ci").compute(scores=[float(s) for s in scores], n_boot=N_BOOT, seed=seed)


def paired_difference(scores: list[float], baseline: list[float], seed: int = 0) -> dict[str, Any]:
    """{mean_diff, low, high, n, inside_noise}: bootstrap over paired items."""
    return metric("paired_difference").compute(
        scores=[float(s) for s in scores], baseline=[float(b) for b in baseline], n_boot=N_BOOT, seed=seed
    )


Ratings = dict[tuple[Any, int], float]  # (question_id, turn) -> rating


def ratings_by_model(
    judgments: list[dict[str, Any]], judge: str
) -> tuple[dict[str, Ratings], dict[str, int]]:
    """({model: {(qid, turn): rating}}, {model: unparsable count}) for one judge's records."""
    ratings: dict[str, Ratings] = defaultdict(dict)
    failed: dict[str, int] = defaultdict(int)
    for j in judgments:
        if j.get("judge") != judge:
            continue
        if j.get("rating") is None:
            failed[j["model"]] += 1
        else:
            ratings[j["model"]][(j["question_id"], j["turn"])] = float(j["rating"])
    return ratings, failed


def score_rows(
    labels: list[str], ratings: dict[str, Ratings], failed: dict[str, int], categories: dict[Any, str]
) -> list[dict[str, Any]]:
    """One row per model: `scores` holds overall, turn1, turn2 and each category as
    {mean, low, high, n}; `unparsable` counts judgments without a rating (excluded)."""
    cats = sorted(set(categories.values()), key=_category_order)
    rows = []
    for label in labels:
        r = ratings.get(label, {})
        groups: dict[str, list[float]] = {"overall": list(r.values())}
        for t in (1, 2):
            groups[f"turn{t}"] = [v for (_, turn), v in r.items() if turn == t]
        for c in cats:
            groups[c] = [v for (qid, _), v in r.items() if categories.get(qid) == c]
        rows.append(
            {
                "model": label,
                "unparsable": failed.get(label, 0),
                "scores": {name: mean_ci(values) for name, values in groups.items()},
            }
        )
    mark_noise(rows, ratings)
    return rows


def mark_noise(rows: list[dict[str, Any]], ratings: dict[str, Ratings]) -> None:
    """Each row's paired difference to the best row (highest overall mean) on the items both
    have: `vs_best` {mean_diff, low, high, n, inside_noise}; the best row compares with itself."""
    scored = [r for r in rows if not math.isnan(r["scores"]["overall"]["mean"])]
    if not scored:
        return
    best = max(scored, key=lambda r: r["scores"]["overall"]["mean"])["model"]
    for row in rows:
        a, b = ratings.get(row["model"], {}), ratings.get(best, {})
        both = sorted(set(a) & set(b), key=repr)
        row["best"] = best
        row["vs_best"] = paired_difference([a[k] for k in both], [b[k] for k in both])


def _category_order(c: str) -> tuple[int, str]:
    from align.evals.questions import CATEGORIES

    return (CATEGORIES.index(c) if c in CATEGORIES else len(CATEGORIES), c)


def save_results(path: Path, **results: Any) -> Path:
    """`evaluate.save` (numbers + time, versions, interpreter) to `path`, atomically."""
    import evaluate

    tmp_dir = path.parent / f".tmp-{path.name}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    try:
        from align.util.files import finite_json

        written = Path(evaluate.save(str(tmp_dir / path.name), **finite_json(results)))
        os.replace(written, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path
