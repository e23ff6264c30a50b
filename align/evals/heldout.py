"""`align eval heldout RUN_DIR...`: a sampling run (ppo, rloo, grpo) and its base model on the run's
own held-out prompts, paired per prompt, with bootstrap 95% intervals.

The in-training eval (metrics.jsonl) gives means of one sample per prompt; whether a change is more
than noise needs per-prompt outcomes of both models on the same prompts, paired, which is what this
adds (`paired_difference`, a bootstrap over prompts). Two measures, each where it applies:

* accuracy: the greedy reply's final answer against the prompt's `answer` (prompts with answers);
* reward: the mean score of `--samples` sampled replies per prompt (the run's sampling settings,
  the same seeds for base and run; a seed per sample and batch, so `--batch-size` changes which
  samples are drawn) by a reward run: `--reward-run`, else the run's own
  `reward_run`. Scores are the reward model's raw output (no missing-EOS penalty, no KL term).

Greedy / sampled with the run's chat template and `max_new_tokens`, as the training eval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from align.evals import stats
from align.evals.policies import baseline_of, describe_run, load, read_recipe
from align.models.load import load_tokenizer
from align.util.errors import AlignError


@dataclass
class HeldoutResult:
    rows: list[dict[str, Any]]
    markdown: str


@dataclass
class Heldout:
    """What a run's held-out prompts are and how the run sampled."""

    prompts: list[list[int]]
    answers: list[str] | None
    section: Any  # the recipe's ppo: / online: section
    reward_run: str | None


def heldout(run_dir: Path, tokenizer, reward_run: str | None, prompts: int | None = None) -> Heldout:
    """The first `prompts` distinct held-out prompts (default: the run's `eval_prompts`, as its eval)."""
    from align.data.prepare import prepare
    from align.methods.accuracy import answers_of
    from align.methods.rollout_phase import unique_prompts

    recipe = read_recipe(run_dir)
    if recipe.method not in ("ppo", "rloo", "grpo"):
        raise AlignError(f"{run_dir}: a '{recipe.method}' run; eval heldout reads ppo, rloo and grpo runs")
    section = recipe.online if recipe.method in ("rloo", "grpo") else recipe.ppo
    examples = unique_prompts(prepare(recipe.data, tokenizer, want="prompts").eval)
    examples = examples[: prompts or section.eval_prompts or None]
    answers = answers_of(examples)
    if answers is not None and any(a is None for a in answers):
        answers = None
    reward_run = reward_run or section.reward_run
    if not examples or (answers is None and reward_run is None):
        raise AlignError(
            f"{run_dir}: its held-out prompts ({len(examples)}) do not all have an `answer` and no reward "
            "run scores them; give --reward-run DIR, or train on prompts with answers (data.card: align_math_v1)"
        )
    return Heldout([ex["prompt_ids"] for ex in examples], answers, section, reward_run)


def _chunks(n: int, size: int):
    return (slice(s, s + size) for s in range(0, n, size))


def outcomes(ref, h: Heldout, reward, samples: int, batch_size: int, seed: int) -> dict[str, list[float]]:
    """Per-prompt accuracy (greedy) and mean reward over `samples` seeded samples of one model."""
    from align.methods.accuracy import greedy_accuracy
    from align.models.rollout import Sampling, sample

    model, tok = load(ref)
    out: dict[str, list[float]] = {}
    n, c = len(h.prompts), h.section
    if h.answers is not None:
        out["accuracy"] = []
        for part in _chunks(n, batch_size):
            acc = greedy_accuracy(model, h.prompts[part], h.answers[part], tok, c.max_new_tokens)
            out["accuracy"] += acc.tolist()
    if reward is not None:
        sampling = Sampling(c.max_new_tokens, c.temperature, c.top_k, c.top_p)
        totals = [0.0] * n
        for s in range(samples):
            for part in _chunks(n, batch_size):
                g = torch.Generator(device=next(model.parameters()).device).manual_seed(
                    seed * 100003 + s * 1009 + part.start
                )
                with torch.no_grad():
                    r = sample(model, h.prompts[part], sampling, tok.eos_token_id, tok.pad_token_id, g)
                lens = r.response_len.tolist()
                replies = [row[:k] for row, k in zip(r.response_ids.tolist(), lens, strict=True)]
                for i, v in enumerate(reward(h.prompts[part], replies), start=part.start):
                    totals[i] += v / samples
        out["reward"] = totals
    return out


def evaluate_heldout(
    run_dirs: list[str],
    batch_size: int = 25,
    samples: int = 4,
    reward_run: str | None = None,
    seed: int = 0,
    prompts: int | None = None,
    save: bool = True,
) -> HeldoutResult:
    """Each run and its base (computed once per distinct base, prompts and reward); results.json
    beside each run (RUN_DIR/evals/heldout) when `save`."""
    from align.models.reward_model import reward_ids_function
    from align.util.errors import RecipeError

    rows: list[dict[str, Any]] = []
    bases: dict[tuple, dict[str, list[float]]] = {}
    scorers: dict[str, Any] = {}
    for run_dir in map(Path, run_dirs):
        ref = describe_run(run_dir)
        base = baseline_of(ref)
        h = heldout(run_dir, load_tokenizer(base.base), reward_run, prompts)
        if h.reward_run and h.reward_run not in scorers:
            try:
                scorers[h.reward_run] = reward_ids_function(h.reward_run)
            except RecipeError as e:
                raise AlignError(str(e)) from None
        reward = scorers.get(h.reward_run) if h.reward_run else None
        key = (repr(base.identity()), tuple(map(tuple, h.prompts)), repr(h.section), h.reward_run)
        if key not in bases:
            bases[key] = outcomes(base, h, reward, samples, batch_size, seed)
        before, after = bases[key], outcomes(ref, h, reward, samples, batch_size, seed)
        row: dict[str, Any] = {"run": str(run_dir), "base": base.label, "n": len(h.prompts)}
        row["reward_run"], row["samples"] = h.reward_run, samples
        for measure in after:
            b, a = before[measure], after[measure]
            row[measure] = {
                "base": stats.mean_ci(b),
                "run": stats.mean_ci(a),
                "difference": stats.paired_difference(a, b),
                "per_prompt": {"base": b, "run": a},
            }
        rows.append(row)
        if save:
            out = run_dir / "evals" / "heldout"
            out.mkdir(parents=True, exist_ok=True)
            stats.save_results(out / "results.json", **row)
    return HeldoutResult(rows, markdown(rows))


def _ci(d: dict[str, Any], key: str = "mean", fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(d[key])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| run | measure | n | base [95% CI] | run [95% CI] | difference [95% CI] | beyond noise |",
        "|---|---|---:|---|---|---|---|",
    ]
    names = {"accuracy": "accuracy (greedy)", "reward": "reward (mean of {samples} samples)"}
    for r in rows:
        for measure in ("accuracy", "reward"):
            if measure not in r:
                continue
            m, d = r[measure], r[measure]["difference"]
            lines.append(
                f"| {r['run']} | {names[measure].format(samples=r['samples'])} | {r['n']} | {_ci(m['base'])} | "
                f"{_ci(m['run'])} | {_ci(d, 'mean_diff', '{:+.3f}')} | {'no' if d['inside_noise'] else 'yes'} |"
            )
    return "\n".join(lines)
