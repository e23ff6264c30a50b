"""`align eval accuracy RUN_DIR...`: held-out greedy accuracy of each run and of its base model on
the run's own held-out prompts with checkable answers, with bootstrap 95% intervals.

The in-training eval (`eval/accuracy` in metrics.jsonl) gives the two means; whether the change is
more than noise needs the per-prompt outcomes of both models on the same prompts, paired: that is
what this command adds (`paired_difference`, a bootstrap over prompts). Greedy decoding, the run's
chat template and its `max_new_tokens`, so the numbers are the training eval's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.evals import stats
from align.evals.policies import baseline_of, describe_run, load, read_recipe
from align.models.load import load_tokenizer
from align.util.errors import AlignError


@dataclass
class AccuracyResult:
    rows: list[dict[str, Any]]
    markdown: str


def heldout(run_dir: Path, tokenizer) -> tuple[list[list[int]], list[str], int]:
    """(prompt ids, answers, max_new_tokens) of a run's held-out prompts, prepared as it trained."""
    from align.data.prepare import prepare
    from align.methods.accuracy import answers_of
    from align.methods.rollout_phase import unique_prompts

    recipe = read_recipe(run_dir)
    section = recipe.online if recipe.method in ("rloo", "grpo") else recipe.ppo
    data = prepare(recipe.data, tokenizer, want="prompts")
    examples = unique_prompts(data.eval)
    answers = answers_of(examples)
    if not examples or answers is None or any(a is None for a in answers):
        raise AlignError(
            f"{run_dir}: its held-out prompts ({len(examples)}) do not all have an `answer`; "
            "accuracy needs a prompt set with checkable answers (e.g. data.card: align_math_v1)"
        )
    return [ex["prompt_ids"] for ex in examples], answers, section.max_new_tokens


def _accuracy(ref, prompts, answers, max_new_tokens: int, batch_size: int) -> list[float]:
    from align.methods.accuracy import greedy_accuracy

    model, tok = load(ref)
    out: list[float] = []
    for s in range(0, len(prompts), batch_size):
        chunk = slice(s, s + batch_size)
        out += greedy_accuracy(model, prompts[chunk], answers[chunk], tok, max_new_tokens).tolist()
    return out


def evaluate_accuracy(run_dirs: list[str], batch_size: int = 25, save: bool = True) -> AccuracyResult:
    """Each run and its base (computed once per distinct base and prompt set) on the run's held-out
    prompts; results.json beside the run (RUN_DIR/evals/accuracy) when `save`."""
    rows: list[dict[str, Any]] = []
    bases: dict[tuple, list[float]] = {}
    for run_dir in map(Path, run_dirs):
        ref = describe_run(run_dir)
        base = baseline_of(ref)
        prompts, answers, n_new = heldout(run_dir, load_tokenizer(base.base))
        key = (base.identity().__repr__(), tuple(map(tuple, prompts)), n_new)
        if key not in bases:
            bases[key] = _accuracy(base, prompts, answers, n_new, batch_size)
        before = bases[key]
        after = _accuracy(ref, prompts, answers, n_new, batch_size)
        row = {
            "run": str(run_dir),
            "base": base.label,
            "n": len(prompts),
            "base_accuracy": stats.mean_ci(before),
            "accuracy": stats.mean_ci(after),
            "difference": stats.paired_difference(after, before),
            "per_prompt": {"base": before, "run": after},
        }
        rows.append(row)
        if save:
            out = run_dir / "evals" / "accuracy"
            out.mkdir(parents=True, exist_ok=True)
            stats.save_results(out / "results.json", **row)
    return AccuracyResult(rows, markdown(rows))


def _ci(d: dict[str, Any], key: str = "mean") -> str:
    return f"{d[key]:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| run | n | base accuracy [95% CI] | run accuracy [95% CI] | difference [95% CI] | beyond noise |",
        "|---|---:|---|---|---|---|",
    ]
    for r in rows:
        d = r["difference"]
        lines.append(
            f"| {r['run']} | {r['n']} | {_ci(r['base_accuracy'])} | {_ci(r['accuracy'])} | "
            f"{d['mean_diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] | {'no' if d['inside_noise'] else 'yes'} |"
        )
    return "\n".join(lines)
