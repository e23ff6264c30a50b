"""Pairwise mode (`--pairwise`): two runs' answers compared by the judge in both orders.

Each (question, turn) is judged as A-vs-B and as B-vs-A (the MT-Bench pair prompts); a run wins
only when both orders name it, anything else (disagreement, or two ties) is a tie, as in
FastChat's position-swapped grading. A judgment without a verdict after one retry is counted and
the item excluded. The score of run A is (wins + ties / 2) / items, with a bootstrap 95% interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from align.evals import judging, ratings, report, stats
from align.evals.answers import ANSWER_KEY, answer_texts
from align.evals.judges import Judge
from align.evals.policies import ModelRef
from align.evals.questions import Question
from align.evals.store import JsonlStore
from align.util.errors import AlignError

PAIR_KEY = ("judge", "model_a", "model_b", "question_id", "turn", "order")


def outcome(ab: str | None, ba: str | None) -> str | None:
    """'A' / 'B' / 'tie' for run A vs run B from the two orders' verdicts (None: unparsable).
    In the BA order the judge's "A" is run B."""
    if ab is None or ba is None:
        return None
    swapped = {"A": "B", "B": "A", "tie": "tie"}[ba]
    return ab if ab == swapped and ab != "tie" else "tie"


def evaluate_pair(
    judge: Judge, models: list[ModelRef], questions: list[Question], out: Path, counts: judging.JudgeCounts
) -> dict[str, Any]:
    runs = [m for m in models if not m.is_baseline]
    if len(runs) != 2:
        raise AlignError(f"--pairwise compares exactly two run directories; got {len(runs)}")
    a, b = (m.label for m in runs)
    answers = JsonlStore(out / "answers.jsonl", ANSWER_KEY)
    store = JsonlStore(out / "pairwise_judgments.jsonl", PAIR_KEY)
    prompts = ratings.load_judge_prompts()
    items = []
    for q in questions:
        texts = {a: answer_texts(answers, a, q), b: answer_texts(answers, b, q)}
        for turn in range(1, len(q.turns) + 1):
            key = {
                "judge": judge.name,
                "model_a": a,
                "model_b": b,
                "question_id": q.question_id,
                "turn": turn,
            }
            seen = judging.answers_hash(*texts[a][:turn], *texts[b][:turn])
            for order, (first, second) in (("AB", (a, b)), ("BA", (b, a))):
                done = store.get((*key.values(), order))
                if done is not None and done.get("answers_sha") == seen:
                    continue
                name, request = ratings.pair_request(prompts, q, turn, texts[first], texts[second])
                context = {"order": order, "category": q.category, "prompt": name, "answers_sha": seen}
                items.append(judging.Item({**key, **context}, request))
    judging.judge_items(judge, items, ratings.parse_verdict, "verdict", store, counts)

    wins = ties = losses = unparsable = 0
    scores: list[float] = []
    for q in questions:
        for turn in range(1, len(q.turns) + 1):
            key = (judge.name, a, b, q.question_id, turn)
            result = outcome(*(store.get((*key, o))["verdict"] for o in ("AB", "BA")))
            if result is None:
                unparsable += 1
                continue
            wins, ties, losses = wins + (result == "A"), ties + (result == "tie"), losses + (result == "B")
            scores.append({"A": 1.0, "tie": 0.5, "B": 0.0}[result])
    score = stats.mean_ci(scores)
    row = {
        "model_a": a,
        "model_b": b,
        "judge": judge.name,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "unparsable": unparsable,
        "score_a": score,
    }
    flat = {k: v for k, v in row.items() if k != "score_a"} | report.flat_ci("score_a", score)
    md = (
        f"Pairwise, judge {judge.name} (both orders; a win needs both)\n\n"
        + report.md_table(
            ["A", "B", "A wins", "ties", "B wins", "unparsable", "score of A", "95% CI"],
            [
                [
                    a,
                    b,
                    str(wins),
                    str(ties),
                    str(losses),
                    str(unparsable),
                    report.num(score["mean"]),
                    report.interval(score),
                ]
            ],
        )
        + "\n\nscore of A = (wins + ties/2) / items judged; 0.5 is a draw."
    )
    report.write_tables(out, "pairwise", [row], [flat], md)
    return {**row, "markdown": md}
