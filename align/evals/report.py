"""Tables of eval and sweep results, each written three ways: jsonl (every number), csv (flat
columns for spreadsheets) and markdown (what is printed and embedded in reports). Written
atomically, like every file of a run directory."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.util.files import dumps_json, write_text_atomic

GROUP_TITLES = {"overall": "overall", "turn1": "turn 1", "turn2": "turn 2"}
NOISE_NOTE = (
    "≈: the paired bootstrap 95% interval of the difference to the best row contains 0 "
    "(inside the noise); every mean excludes unparsable judgments, counted in their own column."
)


def num(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def interval(ci: dict[str, Any] | None, digits: int = 2) -> str:
    if not ci or ci.get("n", 0) == 0:
        return "-"
    return f"[{num(ci['low'], digits)}, {num(ci['high'], digits)}]"


def sig(x: Any, digits: int = 3) -> str:
    """Significant digits, for quantities whose scale varies (KL of a tiny run is ~1e-4)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


def _numeric(cell: str) -> bool:
    try:
        float(cell.strip("[]").split(",")[0])
        return True
    except ValueError:
        return cell in ("-", "")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Numeric columns (numbers, intervals, '-') right-aligned, the others left-aligned."""
    escape = lambda cell: str(cell).replace("|", "\\|")
    right = [i > 0 and all(_numeric(str(r[i])) for r in rows) for i in range(len(headers))]
    lines = ["| " + " | ".join(map(escape, headers)) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(map(escape, r)) + " |" for r in rows]
    return "\n".join(lines)


def csv_text(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()}
        )
    return buf.getvalue()


def write_tables(
    out: Path, stem: str, rows: list[dict[str, Any]], flat: list[dict[str, Any]], markdown: str
) -> list[Path]:
    """out/stem.jsonl (rows, nested), out/stem.csv (flat), out/stem.md (markdown)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.jsonl", out / f"{stem}.csv", out / f"{stem}.md"]
    write_text_atomic(paths[0], "".join(dumps_json(r) + "\n" for r in rows))
    write_text_atomic(paths[1], csv_text(flat))
    write_text_atomic(paths[2], markdown + "\n")
    return paths


def flat_ci(prefix: str, ci: dict[str, Any] | None) -> dict[str, Any]:
    ci = ci or {}
    return {
        prefix: ci.get("mean"),
        f"{prefix}_low": ci.get("low"),
        f"{prefix}_high": ci.get("high"),
        f"{prefix}_n": ci.get("n"),
    }


def noise_mark(row: dict[str, Any]) -> str:
    vs = row.get("vs_best")
    if row.get("best") == row["model"]:
        return "best"
    return "≈" if vs and vs.get("inside_noise") else ""


def score_flat(row: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One csv row of an eval score row (every group's mean, interval and count)."""
    out: dict[str, Any] = {"model": row["model"]}
    for name, ci in row["scores"].items():
        out.update(flat_ci(name, ci))
    vs = row.get("vs_best") or {}
    out.update(
        unparsable=row["unparsable"],
        vs_best=vs.get("mean_diff"),
        vs_best_low=vs.get("low"),
        vs_best_high=vs.get("high"),
        inside_noise=vs.get("inside_noise"),
    )
    return {**out, **(extra or {})}


def scores_markdown(rows: list[dict[str, Any]], judge: str) -> str:
    """model | overall | 95% CI | turn 1 | turn 2 | categories... | rated | unparsable | vs best
    (| KL | reward, when the rows have frontier numbers)."""
    groups = list(rows[0]["scores"]) if rows else ["overall"]
    front = lambda r, key: ((r.get("frontier") or {}).get(key) or {}).get("mean")
    extra = [k for k in ("kl", "reward") if any(front(r, k) is not None for r in rows)]
    headers = ["model", "overall", "95% CI", *(GROUP_TITLES.get(g, g) for g in groups[1:])]
    headers += ["rated", "unparsable", "vs best", *(k.upper() if k == "kl" else k for k in extra)]
    body = []
    for r in rows:
        s = r["scores"]
        body.append(
            [
                r["model"],
                num(s["overall"]["mean"]),
                interval(s["overall"]),
                *(num(s[g]["mean"]) for g in groups[1:]),
                str(s["overall"]["n"]),
                str(r["unparsable"]),
                noise_mark(r),
                *(sig(front(r, k)) for k in extra),
            ]
        )
    notes = NOISE_NOTE + (" KL: KL(policy || reference) per answer on the eval prompts." if extra else "")
    return f"MT-Bench-style scores (1-10), judge {judge}\n\n{md_table(headers, body)}\n\n{notes}"
