"""`align train RECIPE [key=value ...] [--resume]` and `align data inspect CARD_OR_PATH`.

Works as `align ...`, `python -m align ...` and `accelerate launch -m align ...`. User errors
(bad recipe, bad record, unreachable model) print one clear line and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from align.errors import AlignError, Interrupted


def _train(args: argparse.Namespace) -> int:
    from align.recipe import load_recipe

    t0 = time.perf_counter()
    recipe = load_recipe(args.recipe, args.overrides)  # validated before any model loads
    if args.resume:
        recipe.resume = True
    from align.report import generate, metrics_table
    from align.train import run

    summary = run(recipe)
    acc = summary["accelerator"]
    if acc.is_main_process:
        print(
            f"\nrun directory: {recipe.output_dir}  ({summary['steps']} steps, {time.perf_counter() - t0:.0f} s)"
        )
        print(metrics_table(summary["before"], summary["after"]))
        for prompt in recipe.report.sample_prompts:
            print(f"\nprompt: {prompt}")
            for label, on in (("before", False), ("after ", True)):
                text = generate(
                    summary["peft_model"], summary["tokenizer"], prompt, recipe.report.max_new_tokens, on
                )
                print(f"  {label}: {text!r}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from align.inspect import inspect

    print(inspect(args.source, args.recipe, args.overrides))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="align", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a LoRA adapter from a YAML recipe")
    t.add_argument("recipe", help="path to a recipe YAML (see recipes/)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. beta=0.2 optim.lr=1e-5")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    t.set_defaults(fn=_train)
    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    i = dsub.add_parser("inspect", help="counts, token lengths, truncation and rendered examples")
    i.add_argument("source", help="a data card name/path or a data file/directory")
    i.add_argument("--recipe", default=None, help="recipe whose model and data settings to use")
    i.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.max_length=256")
    i.set_defaults(fn=_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("ALIGN_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.fn(args)
    except AlignError as e:
        label = "" if isinstance(e, Interrupted) else "error: "
        print(f"align: {label}{e}", file=sys.stderr)
        return e.exit_code
