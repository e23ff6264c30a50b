"""`align train RECIPE [key=value ...] [--resume] [--overwrite]`, `align push RUN_DIR --repo-id NS/NAME`,
`align data inspect CARD_OR_PATH`, `align eval mt-bench RUN_DIR ...` and `align sweep RECIPE --grid
key=v1,v2 ...` (the last two in align/evals/cli.py).

Works as `align ...`, `python -m align ...` and `accelerate launch -m align ...`. User errors
(bad recipe, bad record, unreachable model) print one clear line and exit 2, no traceback; Ctrl-C
prints `align: interrupted` and exits 130; anything else is a bug: its traceback, exit 1.
Everything printed passes through `align.util.secrets.redact`, so a token never reaches the terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from typing import NoReturn

from align import __version__
from align.util.errors import AlignError, Interrupted
from align.util.secrets import install_log_filter, redact


def _train(args: argparse.Namespace) -> int:
    from align.engine import preflight
    from align.methods import load_recipe

    t0 = time.perf_counter()
    recipe = load_recipe(args.recipe, args.overrides)  # validated before any model loads
    if args.resume:
        recipe.resume = True
    preflight.check(recipe)  # what needs the model's config (not its weights): target modules, ...
    from align.engine.report import generate, metrics_table
    from align.train import run

    summary = run(recipe, overwrite=args.overwrite)
    _leave_group()
    if not summary["accelerator"].is_main_process:
        return 0
    say = lambda text: print(redact(text))
    took = f"{summary['steps']} steps, {time.perf_counter() - t0:.0f} s"
    if summary.get("complete"):
        say(
            f"\nrun directory: {recipe.output_dir}  (already complete: {summary['steps']} steps; nothing to do)"
        )
    else:
        say(f"\nrun directory: {recipe.output_dir}  ({took})")
    say(metrics_table(summary["before"], summary["after"]))
    prompts = recipe.report.sample_prompts if "peft_model" in summary else []
    if prompts and _sharded(summary["peft_model"]):
        say(
            f"\n(samples skipped: the model is sharded; load {recipe.output_dir}/adapter with PEFT to generate)"
        )
        prompts = []
    for prompt in prompts:
        say(f"\nprompt: {prompt}")
        for label, on in (("before", False), ("after ", True)):
            text = generate(
                summary["peft_model"], summary["tokenizer"], prompt, recipe.report.max_new_tokens, on
            )
            say(f"  {label}: {text!r}")
    if recipe.hub.push:  # after the final save, main process only
        from align.hub.push import describe, push_from_recipe

        say(describe(push_from_recipe(recipe.output_dir, recipe.hub)))
    return 0


def _sharded(model) -> bool:
    """FSDP2 leaves parameters as DTensor shards: generating would need the (now closed) group."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


_EXIT_HARD = False  # set once this process has been part of a process group


def _leave_group() -> None:
    """Every rank leaves the process group together, then the main one reports. Without this the
    other ranks exit while the main one still generates its samples, and a rank's teardown can
    race its peers' (a launcher of several machines waits for every rank to exit)."""
    global _EXIT_HARD
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        _EXIT_HARD = True
        dist.barrier()
        dist.destroy_process_group()


def _push(args: argparse.Namespace) -> int:
    from align.hub.push import describe, push_run

    result = push_run(
        args.run_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        include_checkpoints=args.include_checkpoints,
        endpoint=args.endpoint,
    )
    print(redact(describe(result)))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from align.data.inspect import inspect
    from align.models import load as models

    print(inspect(args.source, args.recipe, args.overrides, lambda spec: models.load_tokenizer(spec)))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its error messages (which quote the arguments) redacted."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="align", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"align {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a LoRA adapter from a YAML recipe")
    t.add_argument("recipe", help="path to a recipe YAML (see recipes/)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. beta=0.2 optim.lr=1e-5")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    t.add_argument(
        "--overwrite", action="store_true", help="start afresh even if output_dir holds an earlier run"
    )
    t.set_defaults(fn=_train)
    h = sub.add_parser(
        "push", help="push a finished run's adapter and model card to a Hugging Face-compatible hub"
    )
    h.add_argument("run_dir", help="the run directory (output_dir of `align train`)")
    h.add_argument("--repo-id", required=True, help="namespace/name; created if missing")
    h.add_argument(
        "--private", action="store_true", help="create the repo private (an existing repo keeps its own)"
    )
    h.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    h.add_argument("--commit-message", default=None, help="default: align: METHOD adapter from RUN (N steps)")
    h.add_argument(
        "--include-checkpoints", action="store_true", help="also push checkpoints/ (optimizer state included)"
    )
    h.add_argument(
        "--endpoint", default=None, help="hub URL (default: HF_ENDPOINT, else https://huggingface.co)"
    )
    h.set_defaults(fn=_push)
    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    i = dsub.add_parser("inspect", help="counts, token lengths, truncation and rendered examples")
    i.add_argument("source", help="a data card name/path or a data file/directory")
    i.add_argument("--recipe", default=None, help="recipe whose model and data settings to use")
    i.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.max_length=256")
    i.set_defaults(fn=_inspect)
    from align.evals.cli import register

    register(sub)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Like `parse_args`, but `key=value` overrides may also follow options (`RECIPE --resume k=v`).

    argparse fills a `nargs="*"` positional once, before the first option, and its intermixed mode
    does not support subcommands; so overrides left over after an option are appended here.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(a.startswith("-") for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def _setup_logging() -> None:
    level = os.environ.get("ALIGN_LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise AlignError(f"ALIGN_LOG_LEVEL={level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_filter()  # after basicConfig: the filter goes on the handlers it created
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if _EXIT_HARD:
        # A worker of a multi-process run, everything written and the group left: skip the
        # interpreter's teardown. There, DDP's reducer destroys the gloo process group, whose
        # destructor joins a gloo thread while holding the GIL that thread waits for (seen as a
        # rank that never exits, once in a few full-suite runs; torch 2.13).
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    global _EXIT_HARD
    args = parse_args(argv)
    try:
        _setup_logging()
        return args.fn(args)
    except AlignError as e:
        if not isinstance(e, Interrupted):
            print(f"align: error: {redact(str(e))}", file=sys.stderr)
        elif os.environ.get("RANK", "0") == "0":  # every rank stopped at the same step: say it once
            print(f"align: {redact(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("align: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print(redact(traceback.format_exc()).rstrip(), file=sys.stderr)
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # a rank that failed or stopped early
            _EXIT_HARD = True
