"""PNG plots of a sweep (matplotlib's object API with the Agg canvas: no display, no global state).

Every plot labels its axes and has one legend entry per method (series); the base model, when
evaluated, is a dashed line or a grey point.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def axis_name(key: str) -> str:
    return "β" if key == "beta" else key


def _figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def save_png(fig, path: Path) -> Path:
    """Render to a temp sibling and rename: a reader never sees half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _by_series(rows: list[Row], series: str | None) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[str(r.get(series)) if series else "runs"].append(r)
    return dict(groups)


def _log_x(ax, xs: list[float]) -> None:
    positive = [x for x in xs if x is not None and x > 0]
    if positive and len(positive) == len(xs) and max(positive) / min(positive) >= 10:
        ax.set_xscale("log")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def metric_vs_x(
    ax,
    rows: list[Row],
    x: str,
    series: str | None,
    value: str,
    base: Row | None = None,
    base_label: str = "base",
) -> bool:
    """Lines of rows[value] = {mean, low, high} (or a number) against rows[x], one per series."""
    drawn = False
    xs_all: list[float] = []
    for name, group in sorted(_by_series(rows, series).items()):
        pts = sorted((r[x], r.get(value)) for r in group if _finite(r.get(x)))
        pts = [(px, v) for px, v in pts if v is not None and _finite(v["mean"] if isinstance(v, dict) else v)]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ys = [v["mean"] if isinstance(v, dict) else v for _, v in pts]
        if all(isinstance(v, dict) and _finite(v.get("low")) for _, v in pts):
            err = [
                [y - v["low"] for y, (_, v) in zip(ys, pts)],
                [v["high"] - y for y, (_, v) in zip(ys, pts)],
            ]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
        else:
            ax.plot(xs, ys, marker="o", label=name)
        xs_all += xs
        drawn = True
    b = base.get(value) if base else None
    if b is not None and _finite(b["mean"] if isinstance(b, dict) else b):
        ax.axhline(b["mean"] if isinstance(b, dict) else b, color="grey", linestyle="--", label=base_label)
    _log_x(ax, xs_all)
    return drawn


def score_vs_x(
    path: Path, rows: list[Row], x: str, series: str | None, base: Row | None, judge: str
) -> Path | None:
    fig = _figure()
    ax = fig.add_subplot()
    if not metric_vs_x(ax, rows, x, series, "score", base, base.get("name", "base") if base else "base"):
        return None
    ax.set_xlabel(axis_name(x))
    ax.set_ylabel("MT-Bench score (1-10, 95% CI)")
    ax.set_title(f"score vs {axis_name(x)} (judge {judge})")
    ax.legend(title=series)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def categories(path: Path, best: dict[str, Row], base: Row | None, cats: list[str]) -> Path | None:
    """Grouped bars: per category, the best run of each series (and the base)."""
    bars = {f"{name} ({r['name']})": r for name, r in sorted(best.items())}
    if base is not None:
        bars[base["name"]] = base
    if not bars or not cats:
        return None
    fig = _figure(max(7.0, 1.1 * len(cats) + 2), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(bars)
    for i, (label, r) in enumerate(bars.items()):
        ys = [(r.get("categories") or {}).get(c, {}).get("mean", float("nan")) for c in cats]
        ax.bar([j + i * width - 0.4 + width / 2 for j in range(len(cats))], ys, width, label=label)
    ax.set_xticks(range(len(cats)), cats, rotation=20)
    ax.set_xlabel("category")
    ax.set_ylabel("MT-Bench score (1-10)")
    ax.set_ylim(0, 10)
    ax.set_title("per-category scores of the best run of each method")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)


def margin_and_kl(path: Path, rows: list[Row], x: str, series: str | None, base: Row | None) -> Path | None:
    """Two panels against x: the held-out reward margin from training, and the KL to the reference."""
    fig = _figure(11.0, 4.5)
    left, right = fig.subplots(1, 2)
    drew_margin = metric_vs_x(left, rows, x, series, "reward_margin")
    drew_kl = metric_vs_x(right, rows, x, series, "kl", base, base.get("name", "base") if base else "base")
    if not (drew_margin or drew_kl):
        return None
    left.set_xlabel(axis_name(x))
    left.set_ylabel("held-out reward margin (after training)")
    left.set_title(f"reward margin vs {axis_name(x)}")
    right.set_xlabel(axis_name(x))
    right.set_ylabel("KL(policy || reference), nats per answer")
    right.set_title(f"KL to the reference vs {axis_name(x)}")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    handles, labels = (left if drew_margin else right).get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=max(1, len(labels)), title=series)
    return save_png(fig, path)


def frontier(path: Path, rows: list[Row], series: str | None, x: str, base: Row | None) -> Path | None:
    """Reward (or, without a reward model, the judge's score) against KL: the DPO paper's Fig. 2."""
    y = "reward" if any(r.get("reward") for r in rows) else "score"
    fig = _figure()
    ax = fig.add_subplot()
    drawn = False
    for name, group in sorted(_by_series(rows, series).items()):
        pts = [(r["kl"]["mean"], r[y]["mean"], r.get(x)) for r in group if r.get("kl") and r.get(y)]
        pts = [p for p in pts if _finite(p[0]) and _finite(p[1])]
        if not pts:
            continue
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=name)
        for px, py, xv in pts:
            ax.annotate(
                f"{axis_name(x)}={xv:g}" if _finite(xv) else "",
                (px, py),
                fontsize="x-small",
                xytext=(3, 3),
                textcoords="offset points",
            )
        drawn = True
    if not drawn:
        return None
    if base is not None and base.get("kl") and base.get(y) and _finite(base[y]["mean"]):
        ax.scatter([base["kl"]["mean"]], [base[y]["mean"]], color="grey", marker="s", label=base["name"])
    ax.set_xlabel("KL(policy || reference), nats per answer")
    ax.set_ylabel("mean reward-model score" if y == "reward" else "MT-Bench score (1-10)")
    ax.set_title(f"{'reward' if y == 'reward' else 'score'} vs KL frontier")
    ax.legend(title=series)
    ax.grid(alpha=0.3)
    return save_png(fig, path)
