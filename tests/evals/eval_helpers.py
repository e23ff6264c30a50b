"""Helpers of the eval tests: a few shipped questions, cheap eval settings against a live server."""

from __future__ import annotations

import json
from pathlib import Path

from judge_server import JudgeServer

SHARED = (
    Path(__file__).resolve().parent / "fastchat_mt_bench"
)  # FastChat's MT-Bench files (Apache-2.0, see NOTICE.md)


def write_questions(path: Path, n_per_category: int = 1, categories=("writing", "math", "stem")) -> Path:
    """A few questions of the shipped set (two turns each; math ones have references)."""
    from align.evals.questions import DEFAULT_QUESTIONS

    rows = [json.loads(line) for line in DEFAULT_QUESTIONS.read_text().splitlines()]
    keep, seen = [], {}
    for r in rows:
        if r["category"] in categories and seen.get(r["category"], 0) < n_per_category:
            seen[r["category"]] = seen.get(r["category"], 0) + 1
            keep.append(r)
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return path


def eval_config(server: JudgeServer | None, questions: Path, **kw):
    """Cheap settings: few tokens, fast retries, one judge worker (scripted replies stay in order)."""
    from align.evals.mt_bench import EvalConfig

    settings = dict(
        judge="openai:judge-test",
        judge_base_url=server.url if server else None,
        questions=str(questions),
        max_new_tokens=6,
        batch_size=4,
        judge_workers=1,
        judge_backoff=0.01,
        judge_timeout=5.0,
    )
    return EvalConfig(**{**settings, **kw})
