"""The `align eval mt-bench`, `align eval heldout` and `align sweep` subcommands (registered by align/cli.py)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from align.util.errors import AlignError
from align.util.secrets import redact


def add_eval_options(p: argparse.ArgumentParser, judge_required: bool) -> None:
    g = p.add_argument_group("evaluation (MT-Bench style)")
    g.add_argument(
        "--judge",
        required=judge_required,
        help="openai:MODEL (an OpenAI-compatible endpoint) or hf:NAME_OR_PATH (a local model, e.g. "
        "hf:smollm2-135m-instruct)",
    )
    g.add_argument(
        "--questions", default=None, help="MT-Bench question jsonl (default: the shipped set of 24)"
    )
    g.add_argument("--references", default=None, help="reference answers (FastChat answer jsonl)")
    g.add_argument("--judge-base-url", default=None, help="chat-completions base URL (default OpenAI's)")
    g.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    g.add_argument("--judge-workers", type=int, default=4, help="concurrent judge requests")
    g.add_argument("--judge-timeout", type=float, default=120.0, help="seconds per judge request")
    g.add_argument("--judge-retries", type=int, default=5, help="retries of a transient judge error")
    g.add_argument(
        "--judge-max-new-tokens",
        type=int,
        default=None,
        help="judgment length, local or served (default: 512 for hf:, 2048 for openai:)",
    )
    g.add_argument(
        "--judge-token-param",
        choices=("auto", "max_tokens", "max_completion_tokens"),
        default="auto",
        help="request field that bounds a served judge's reply (auto: max_tokens, switching to "
        "max_completion_tokens when the server asks for it)",
    )
    g.add_argument(
        "--judge-prefill",
        default=None,
        help='start of a local (hf:) judge\'s reply, e.g. "Rating: [[" so a small model rates first',
    )
    g.add_argument(
        "--greedy", action="store_true", help="greedy answers everywhere (default: MT-Bench temperatures)"
    )
    g.add_argument("--max-new-tokens", type=int, default=512, help="answer length per turn")
    g.add_argument("--batch-size", type=int, default=8, help="questions generated together")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--no-baseline", action="store_true", help="do not evaluate the base model")
    g.add_argument("--no-kl", action="store_true", help="skip the KL-to-reference samples")
    g.add_argument(
        "--reward-run",
        default=None,
        help="a `method: reward` run directory: its mean score of each model's samples goes beside the KL "
        "(the reward-vs-KL frontier)",
    )


def eval_config(args: argparse.Namespace):
    from align.evals.mt_bench import EvalConfig

    for name in ("judge_workers", "judge_retries", "max_new_tokens", "batch_size", "judge_max_new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < (0 if name == "judge_retries" else 1):
            raise AlignError(
                f"--{name.replace('_', '-')}: must be at least {0 if name == 'judge_retries' else 1}"
            )
    if args.judge_timeout <= 0:
        raise AlignError("--judge-timeout: must be positive")
    return EvalConfig(
        judge=args.judge,
        questions=args.questions,
        references=args.references,
        judge_base_url=args.judge_base_url,
        judge_key_env=args.judge_key_env,
        judge_workers=args.judge_workers,
        judge_timeout=args.judge_timeout,
        judge_retries=args.judge_retries,
        judge_max_new_tokens=args.judge_max_new_tokens,
        judge_token_param=args.judge_token_param,
        judge_prefill=args.judge_prefill,
        greedy=args.greedy,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        baseline=not args.no_baseline,
        kl=not args.no_kl,
        pairwise=getattr(args, "pairwise", False),
    )


def _one_process(command: str) -> None:
    """Evals and sweeps run as one process (a sweep's runs train one after the other in it)."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        raise AlignError(
            f"align {command} runs as one process, not under a {world}-process launch; run it as "
            "`align ...` (multi-GPU training of single runs: accelerate launch -m align train ...)"
        )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())


def _reward(args: argparse.Namespace):
    """(score function, its name) from --reward-run, or (None, "reward")."""
    if not getattr(args, "reward_run", None):
        return None, "reward"
    from align.models.reward_model import reward_function
    from align.util.errors import RecipeError

    try:
        return reward_function(args.reward_run), Path(args.reward_run).name
    except RecipeError as e:
        raise AlignError(str(e)) from None


def _eval_mt_bench(args: argparse.Namespace) -> int:
    from align.evals.mt_bench import evaluate_runs

    _one_process("eval")
    t0 = time.perf_counter()
    out = args.out
    if out is None:  # one run: beside it, where `align push` finds its evals; several: a shared dir
        out = (
            Path(args.run_dirs[0]) / "evals" / "mt_bench"
            if len(args.run_dirs) == 1
            else Path("evals/mt_bench")
        )
    cfg = eval_config(args)
    reward_fn, reward_name = _reward(args)
    result = evaluate_runs(args.run_dirs, out, cfg, reward_fn, reward_name)
    print(redact(result.markdown))
    if result.pairwise:
        print("\n" + redact(result.pairwise["markdown"]))
    took = time.perf_counter() - t0
    print(f"\neval directory: {result.out}  ({took:.0f} s; this call: {_counts(result.counts)})")
    return 0


def _eval_heldout(args: argparse.Namespace) -> int:
    from align.evals.heldout import evaluate_heldout

    _one_process("eval")
    for name in ("batch_size", "samples", "prompts"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise AlignError(f"--{name.replace('_', '-')}: must be at least 1")
    t0 = time.perf_counter()
    result = evaluate_heldout(
        args.run_dirs,
        batch_size=args.batch_size,
        samples=args.samples,
        reward_run=args.reward_run,
        seed=args.seed,
        prompts=args.prompts,
    )
    print(result.markdown)
    print(f"\nresults: RUN_DIR/evals/heldout/results.json  ({time.perf_counter() - t0:.0f} s)")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from align.evals.sweep import run_sweep

    _one_process("sweep")
    if args.eval is None and args.judge is not None:
        raise AlignError("--judge applies with --eval mt-bench")
    if args.push_best and args.eval is None:
        raise AlignError("--push-best picks the run by its MT-Bench score: add --eval mt-bench --judge ...")
    if args.eval is not None and args.judge is None:
        raise AlignError("--eval mt-bench needs --judge (openai:MODEL or hf:NAME_OR_PATH)")
    t0 = time.perf_counter()
    out = args.out or str(Path("sweeps") / Path(args.recipe).stem)
    cfg = eval_config(args) if args.eval else None
    reward_fn, _ = _reward(args) if args.eval else (None, "")
    result = run_sweep(args.recipe, args.grid, args.overrides, out, cfg, reward_fn)
    print(redact(result.markdown))
    print(f"\nsweep directory: {result.out}  ({time.perf_counter() - t0:.0f} s)")
    for p in result.plots:
        print(f"  plot: {p}")
    print(f"  report: {result.out / 'report.md'}")
    if args.push_best:
        _push_best(result, args)
    return 0


def _push_best(result, args: argparse.Namespace) -> None:
    """Publish the sweep's best run (highest MT-Bench mean) with `align push`'s code."""
    from align.evals.sweep import best_run
    from align.hub.push import describe, push_run

    best = best_run(result)
    if best is None:
        raise AlignError("--push-best: no run has an MT-Bench score (run the sweep with --eval mt-bench)")
    print(f"best run: {best.name} ({best.run_dir}); pushing to {args.push_best}")
    pushed = push_run(best.run_dir, args.push_best, private=args.push_private, endpoint=args.hub_endpoint)
    print(redact(describe(pushed)))


def register(sub) -> None:
    """Add `eval mt-bench`, `eval heldout` and `sweep` to align's subcommands."""
    e = sub.add_parser("eval", help="evaluate run directories")
    esub = e.add_subparsers(dest="eval_command", required=True)
    m = esub.add_parser("mt-bench", help="MT-Bench-style answers, LLM-judge ratings, score table")
    m.add_argument("run_dirs", nargs="+", help="run directories (the base model is added as a baseline)")
    m.add_argument(
        "--out",
        default=None,
        help="eval directory, resumed if it holds one (default: RUN_DIR/evals/mt_bench for one run, "
        "where align push finds it; evals/mt_bench for several)",
    )
    m.add_argument("--pairwise", action="store_true", help="also judge two runs against each other")
    add_eval_options(m, judge_required=True)
    m.set_defaults(fn=_eval_mt_bench)
    a = esub.add_parser(
        "heldout",
        help="a ppo/rloo/grpo run against its base on its held-out prompts: accuracy and reward, paired 95% CIs",
    )
    a.add_argument("run_dirs", nargs="+", help="run directories of method ppo, rloo or grpo")
    a.add_argument(
        "--reward-run", default=None, help="score samples with this reward run (default: the run's own)"
    )
    a.add_argument(
        "--prompts",
        type=int,
        default=None,
        help="the first N held-out prompts (default: the run's eval_prompts)",
    )
    a.add_argument("--samples", type=int, default=4, help="sampled replies per prompt for the reward")
    a.add_argument("--batch-size", type=int, default=25, help="prompts decoded together")
    a.add_argument("--seed", type=int, default=0, help="sampling seed (the same for base and run)")
    a.set_defaults(fn=_eval_heldout)
    s = sub.add_parser("sweep", help="train a grid of recipes, evaluate, compare (table, plots, report)")
    s.add_argument("recipe", help="the recipe every run starts from")
    s.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    s.add_argument(
        "--grid", action="append", required=True, help="key=v1,v2,... (repeat: every combination trains)"
    )
    s.add_argument("--out", default=None, help="sweep directory (default sweeps/<recipe name>)")
    s.add_argument("--eval", choices=["mt-bench"], default=None, help="evaluate every run and the base")
    s.add_argument(
        "--push-best", default=None, metavar="REPO_ID", help="push the best run (by MT-Bench score) to a hub"
    )
    s.add_argument("--push-private", action="store_true", help="with --push-best: a private repo")
    s.add_argument("--hub-endpoint", default=None, help="with --push-best: the hub URL (default HF_ENDPOINT)")
    add_eval_options(s, judge_required=False)
    s.set_defaults(fn=_sweep)
