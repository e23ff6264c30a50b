"""Benchmark: align's PPO step vs TRL 1.12.0's PPOTrainer, same model, prompts, rollout batch, epochs, fp32.

    python bench/ppo_vs_trl.py --threads 2              # embedded SmolLM2-135M-Instruct, CPU, 1 and 4 PPO epochs
    python bench/ppo_vs_trl.py --only trl --epochs 1    # the peer alone
    python bench/ppo_vs_trl.py --model tiny-smollm2 --steps 1 --max-new-tokens 16   # smoke run

Each side runs in its own process (bench/dpo_vs_trl.py: run_side), so peak RSS is per side:

* ours: `align.train.run` on a `method: ppo` recipe written as YAML and loaded by `load_recipe` (the
  user's path; `--ours-set` adds dotted overrides): rollout batch = train.per_device_batch_size
  prompts, `ppo.max_new_tokens`, `ppo.epochs`, one minibatch. By default (`--reward run`) it scores
  with a reward run the harness trains first (one step, its own process, untimed), so ours scores
  with a model forward as TRL does, and its value adapter and head start from that run (ours' real
  setup, recipes/smollm2/ppo.yaml); `--reward function` scores with `--reward-function` instead (no
  reward-model forward: the report says so). The split is read from the run's metrics.jsonl
  (`train/time/rollout_s`, `scoring_s`, `update_s`); step ends from `align.engine.loop.write_metrics`.
* TRL: bench/ppo_peer_trl.py, run by TRL 1.12.0's own venv (`--trl-python`): LoRA policy with the
  adapter-off reference, a full value model and a full reward model (sequence classification heads on
  the same base), its phases timed by wrappers on the trainer module's functions (see that file).

Made equal: the model, fp32 on the CPU, LoRA (r, alpha, all-linear, dropout 0), the prompts (the first
(warmup + steps) x batch records of align_prefs_v1 through our data layer and the chat template; each
side shuffles them into batches its own way), rollout batch, max new tokens, temperature, stop at EOS,
PPO epochs, one minibatch per rollout batch, the KL coefficient, constant lr, no gradient
checkpointing, the torch thread count (pass --threads: on a shared machine, fewer threads than free
cores). The first `--warmup` steps are untimed.

Not equal, by design of each library: TRL holds three models' worth of weights (policy, value and
reward models; the reference is the adapter-off policy) and trains the value model whole; ours keeps
one base with adapters and heads. TRL takes the policy's log-probs from the sampling logits; ours
runs a forward for them (in its scoring phase).

Targets (issue 8): >= 2x TRL's step rate at <= 0.3x its peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ modules, also when imported by path

from dpo_vs_trl import run_side, versions  # noqa: E402
from ppo_peer_trl import PHASES, PeerResult, PPOBenchConfig, StepTimes, peak_rss_gib  # noqa: E402

DEFAULT_TRL_PYTHON = "/work/venvs/trl112/bin/python"
DEFAULT_REWARD_FUNCTION = "align.rewards:brevity"  # for --reward function
TARGET_RATE, TARGET_MEMORY = 2.0, 0.3  # align / TRL: step rate at least, peak memory at most
SIDE_LABELS = {"ours": "align", "trl": "TRL 1.12 PPOTrainer"}
INSTALL = (
    "python3 -m venv /work/venvs/trl112 && /work/venvs/trl112/bin/pip install torch==2.13.0 && "
    "/work/venvs/trl112/bin/pip install trl==1.12.0 peft"
)


def trl_python_problem(python: str) -> str | None:
    """Why `python` cannot run the TRL side (None: it can, as far as a file check tells)."""
    p = Path(python)
    if not p.exists():
        return f"--trl-python {python} does not exist; create TRL 1.12.0's venv with: {INSTALL}"
    if not os.access(p, os.X_OK):
        return f"--trl-python {python} is not executable"
    return None


# -- inputs ----------------------------------------------------------------------------------------


def peer_model_dir(model: str, tmp: Path) -> str:
    """A directory TRL can load `model` from: the embedded model's, a saved tiny model, or `model`
    itself (with the SmolLM2 tokenizer added when it has none)."""
    from random_model import copy_tokenizer, with_tokenizer

    from align.models.embedded import embedded_model_dir
    from align.models.load import EMBEDDED_NAME, TINY_NAME, tiny_model

    if model == EMBEDDED_NAME:
        return str(embedded_model_dir())
    if model == TINY_NAME:
        out = tmp / "tiny-smollm2"
        tiny_model().save_pretrained(out)
        copy_tokenizer(out)
        return str(out)
    return with_tokenizer(model, tmp)


def write_inputs(cfg: PPOBenchConfig, tmp: Path) -> tuple[str, str]:
    """The prompts both sides use, in the same order: token ids for the peer, pairwise records (whose
    prompts PPO takes; the reward run trains on them) for ours. Returns (peer file, ours file)."""
    from records import build_prompts

    prompts = build_prompts(cfg.model, cfg.total_steps * cfg.batch_size)
    ids, records = tmp / "prompt_ids.jsonl", tmp / "records.jsonl"
    ids.write_text("".join(json.dumps({"input_ids": p}) + "\n" for _, p in prompts))
    records.write_text("".join(json.dumps(row) + "\n" for row, _ in prompts))
    return str(ids), str(records)


# -- ours ------------------------------------------------------------------------------------------


def _common(cfg: PPOBenchConfig, name: str) -> dict[str, Any]:
    """The recipe keys our PPO run and its reward run share (as the YAML a user writes)."""
    return {
        "output_dir": str(Path(cfg.workdir) / name),
        "seed": cfg.seed,
        "cpu": cfg.device == "cpu",
        "precision": "fp32",
        "model": {"name": cfg.model, "dtype": "auto", "gradient_checkpointing": False},
        "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"path": cfg.records, "format": "pairwise", "heldout_fraction": 0.0},
        "optim": {"lr": cfg.lr, "scheduler": "constant", "warmup_steps": 0, "weight_decay": 0.0},
        "log": {"trackers": []},
        "report": {"eval_before": False},
    }


def reward_recipe(cfg: PPOBenchConfig) -> dict[str, Any]:
    """A one-step reward run on the bench records: its weights mean little, but PPO then scores with
    a reward adapter + head on the shared base (a full forward, as TRL's reward model) and starts its
    value adapter and head from it, which is how ours runs for real (recipes/smollm2/ppo.yaml)."""
    train = {"per_device_batch_size": cfg.batch_size, "max_steps": 1, "eval_every": 0, "save_every": 0}
    return {"method": "reward", **_common(cfg, "reward_run"), "train": {**train, "progress": False}}


def ours_recipe(cfg: PPOBenchConfig) -> dict[str, Any]:
    """Our PPO recipe for the bench settings: rollout batch = per_device_batch_size prompts, one
    minibatch per batch, no held-out prompts; `beta` is the KL coefficient."""
    source = (
        {"reward_run": cfg.reward_run} if cfg.reward == "run" else {"reward_function": cfg.reward_function}
    )
    ppo = {
        "max_new_tokens": cfg.max_new_tokens,
        "epochs": cfg.epochs,
        "minibatches": 1,
        "temperature": cfg.temperature,
        "eval_prompts": 0,
        **source,
    }
    micro = cfg.ours_micro_batch if cfg.batch_size % cfg.ours_micro_batch == 0 else cfg.batch_size
    train = {  # the rollout batch is sampled whole; updates run `micro` rows per forward (activation memory)
        "per_device_batch_size": micro,
        "gradient_accumulation_steps": cfg.batch_size // micro,
        "max_steps": cfg.total_steps,
        "eval_every": 0,
        "save_every": 0,
        "log_every": 1,
        "progress": False,
    }
    return {
        "method": "ppo",
        "beta": cfg.kl_coef,
        **_common(cfg, f"ours_e{cfg.epochs}"),
        "train": train,
        "ppo": ppo,
    }


def _run_recipe(cfg: PPOBenchConfig, name: str, data: dict[str, Any], overrides: list[str]):
    """Write `data` as YAML, load it with `overrides` as a user's recipe would be, run it."""
    import yaml

    import align.train
    from align.methods import load_recipe

    path = Path(cfg.workdir) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    recipe = load_recipe(path, overrides)
    return recipe, align.train.run(recipe, resume=False)


def run_reward(cfg: PPOBenchConfig, t_start: float) -> dict[str, Any]:
    """The reward run ours scores with (its own process: not in ours' time or memory)."""
    recipe, _ = _run_recipe(cfg, "reward_run", reward_recipe(cfg), [])
    return {"run_dir": recipe.output_dir, "wall_s": time.perf_counter() - t_start}


def ours_steps(rows: list[dict[str, Any]], ends: list[float], batch_size: int) -> list[StepTimes]:
    """Per-step times from our metrics.jsonl rows (those with the rollout time); a step's wall time
    is the gap between step ends when each step's end was observed, else the sum of its phases."""
    rows = sorted((r for r in rows if "train/time/rollout_s" in r), key=lambda r: r["step"])
    out = []
    for i, row in enumerate(rows):
        phases = {p: row.get(f"train/time/{p}") for p in PHASES}
        if any(v is None for v in phases.values()):
            missing = [p for p, v in phases.items() if v is None]
            raise RuntimeError(f"metrics.jsonl step {row['step']}: no train/time/{', '.join(missing)}")
        total = sum(phases.values())
        step_s = ends[i] - ends[i - 1] if len(ends) == len(rows) and i > 0 else total
        length = row.get("train/response_length")
        resp = None if length is None else round(float(length) * batch_size)
        out.append(StepTimes(step_s=step_s, response_tokens=resp, **phases))
    return out


def run_ours(cfg: PPOBenchConfig, t_start: float) -> PeerResult:
    """`align.train.run` on the PPO recipe; step ends observed on `align.engine.loop.write_metrics`."""
    import torch

    import align.engine.loop
    from align.engine.checkpoint import read_metrics

    ends: list[float] = []
    write_metrics = align.engine.loop.write_metrics

    def timed_write_metrics(parts, step, metrics):
        if "train/time/rollout_s" in metrics:
            ends.append(time.perf_counter())
        write_metrics(parts, step, metrics)

    align.engine.loop.write_metrics = timed_write_metrics
    recipe, summary = _run_recipe(cfg, f"ours_e{cfg.epochs}", ours_recipe(cfg), cfg.ours_set)
    res = PeerResult(name="ours", threads=torch.get_num_threads(), versions=versions())
    res.steps = ours_steps(read_metrics(Path(recipe.output_dir) / "metrics.jsonl"), ends, cfg.batch_size)
    res.peak_rss_gib = peak_rss_gib()
    if ends:
        res.setup_s = ends[0] - res.steps[0].step_s - t_start
    if (model := summary.get("peft_model")) is not None:
        res.trainable_params = {
            "LoRA adapters (peft_model)": sum(p.numel() for p in model.parameters() if p.requires_grad)
        }
    n_train = summary.get("examples", {}).get("train")
    if n_train != cfg.total_steps * cfg.batch_size:
        res.notes.append(f"WARNING: ours kept {n_train} prompts of {cfg.total_steps * cfg.batch_size}")
    reward = (
        f"reward run {cfg.reward_run}" if cfg.reward == "run" else f"reward function {cfg.reward_function}"
    )
    res.notes.append(f"{reward}; recipe overrides: {' '.join(cfg.ours_set) or 'none'}")
    return res


# -- summaries -------------------------------------------------------------------------------------


def _mean(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else statistics.fmean(values)


def summarize(res: dict[str, Any], cfg: PPOBenchConfig) -> dict[str, Any]:
    """Means over the timed steps (after warmup) of the step time and its parts; peak memory."""
    steps = res["steps"][cfg.warmup : cfg.warmup + cfg.steps]
    if len(steps) < cfg.steps:
        raise RuntimeError(
            f"{res['name']}: recorded {len(res['steps'])} steps, expected {cfg.warmup} warmup + {cfg.steps}"
        )
    keys = [f.name for f in fields(StepTimes)]
    out = {k: _mean([s[k] for s in steps]) for k in keys}
    parts = [out[p] for p in PHASES]
    out["other_s"] = None if any(p is None for p in parts) else out["step_s"] - sum(parts)
    out["steps_per_s"] = 1.0 / out["step_s"] if out["step_s"] else None
    out["peak_rss_gib"] = res["peak_rss_gib"]
    out["peak_gpu_gib"] = res.get("peak_gpu_gib")
    return out


def _fmt(x: float | None, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def ratios(
    ours: dict[str, Any], trl: dict[str, Any], mem_key: str = "peak_rss_gib"
) -> dict[str, float | None]:
    """align / TRL: step rate (higher is better) and peak memory (lower is better)."""
    return {
        "step_rate": _ratio(ours["steps_per_s"], trl["steps_per_s"]),
        "memory": _ratio(ours[mem_key], trl[mem_key]),
    }


def verdict(r: dict[str, float | None]) -> str:
    """One line: each ratio against its target."""

    def one(name: str, x: float | None, ok: bool, target: str) -> str:
        return f"{name} {_fmt(x, '{:.2f}x')} (target {target}): " + (
            "n/a" if x is None else "met" if ok else "MISSED"
        )

    rate, mem = r["step_rate"], r["memory"]
    return (
        one("step rate", rate, rate is not None and rate >= TARGET_RATE, f">= {TARGET_RATE:g}x")
        + "; "
        + one("peak memory", mem, mem is not None and mem <= TARGET_MEMORY, f"<= {TARGET_MEMORY:g}x")
    )


def table(
    rows: dict[int, dict[str, dict[str, Any]]], errors: dict[tuple[int, str], str], cuda: bool = False
) -> str:
    """One row per (PPO epochs, side); the ratio columns (align / TRL) sit on TRL's row."""
    mem_key, mem_label = (
        ("peak_gpu_gib", "peak GPU mem (GiB)") if cuda else ("peak_rss_gib", "peak RSS (GiB)")
    )
    head = [
        "PPO epochs",
        "side",
        "s/step",
        "rollout s",
        "scoring s",
        "(ref / value / reward s)",
        "update s",
        "other s",
        "response tokens/step",
        mem_label,
        "align / TRL step rate",
        "align / TRL memory",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---:|---|" + "---:|" * (len(head) - 2)]
    for epochs in sorted({e for e in rows} | {e for e, _ in errors}):
        for side, label in SIDE_LABELS.items():
            if (epochs, side) in errors:
                lines.append(
                    f"| {epochs} | {label} | failed: {errors[epochs, side]} |" + " |" * (len(head) - 3)
                )
                continue
            s = rows.get(epochs, {}).get(side)
            if s is None:
                continue
            split = " / ".join(_fmt(s[k]) for k in ("ref_s", "value_s", "reward_s"))
            cells = [_fmt(s[k]) for k in ("step_s", "rollout_s", "scoring_s")]
            cells += [split, _fmt(s["update_s"]), _fmt(s["other_s"]), _fmt(s["response_tokens"], "{:.0f}")]
            cells.append(_fmt(s[mem_key]))
            ours = rows[epochs].get("ours")
            if side == "trl" and ours is not None:
                r = ratios(ours, s, mem_key)
                cells += [_fmt(r["step_rate"], "{:.2f}x"), _fmt(r["memory"], "{:.2f}x")]
            else:
                cells += ["", ""]
            lines.append("| " + " | ".join([str(epochs), label, *cells]) + " |")
    return "\n".join(lines)


# -- parent ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[PPOBenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = PPOBenchConfig()
    p.add_argument(
        "--model", default=d.model, help="smollm2-135m-instruct (embedded), tiny-smollm2, or a directory"
    )
    p.add_argument("--steps", type=int, default=d.steps, help="timed PPO steps per side")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed PPO steps before the timed ones")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="prompts per rollout batch")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument(
        "--epochs", type=int, nargs="+", default=[1, 4], help="PPO epochs per rollout batch, each a run"
    )
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument(
        "--kl-coef", type=float, default=d.kl_coef, help="TRL's kl_coef (ours: its recipe default)"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", choices=["cpu", "cuda"], default=d.device)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every child")
    p.add_argument("--trl-python", default=DEFAULT_TRL_PYTHON, help="the python of TRL 1.12.0's venv")
    p.add_argument(
        "--reward",
        choices=["run", "function"],
        default=d.reward,
        help="ours: score with a reward run trained first (untimed, 1 step; default: a model forward, as "
        "TRL) or with --reward-function (no reward-model forward)",
    )
    p.add_argument("--reward-function", default=DEFAULT_REWARD_FUNCTION, help="ours: ppo.reward_function")
    p.add_argument(
        "--ours-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dotted override of our recipe (repeatable), e.g. ppo.temperature=0.7",
    )
    p.add_argument(
        "--ours-micro-batch",
        type=int,
        default=2,
        help="ours: rows per update forward (the rollout batch is sampled whole); 2 keeps activations small",
    )
    p.add_argument("--only", choices=list(SIDE_LABELS), default=None, help="run one side (no ratios)")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--child", choices=["ours", "reward"], help=argparse.SUPPRESS)
    p.add_argument("--child-config", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 0 or any(e < 1 for e in a.epochs):
        p.error("--steps and --epochs must be >= 1, --warmup >= 0")
    cfg = PPOBenchConfig(
        model=a.model,
        steps=a.steps,
        warmup=a.warmup,
        batch_size=a.batch_size,
        max_new_tokens=a.max_new_tokens,
        lr=a.lr,
        lora_r=a.lora_r,
        lora_alpha=a.lora_alpha,
        temperature=a.temperature,
        kl_coef=a.kl_coef,
        seed=a.seed,
        device=a.device,
        threads=a.threads,
        reward=a.reward,
        reward_function=a.reward_function,
        ours_set=a.ours_set,
        ours_micro_batch=a.ours_micro_batch,
    )
    return cfg, a


def canonical(cfg: PPOBenchConfig, a: argparse.Namespace) -> str:
    return (
        f"python bench/ppo_vs_trl.py --model {cfg.model} --steps {cfg.steps} --warmup {cfg.warmup} "
        f"--batch-size {cfg.batch_size} --max-new-tokens {cfg.max_new_tokens} --epochs {' '.join(map(str, a.epochs))} "
        f"--lr {cfg.lr} --temperature {cfg.temperature} --kl-coef {cfg.kl_coef} --device {cfg.device}"
        + (f" --threads {cfg.threads}" if cfg.threads else "")
        + f" --reward {cfg.reward}"
        + (f" --reward-function {cfg.reward_function}" if cfg.reward == "function" else "")
        + "".join(f" --ours-set {shlex.quote(s)}" for s in cfg.ours_set)
        + (f" --only {a.only}" if a.only else "")
    )


def main(argv: list[str] | None = None) -> int:
    cfg, a = parse_args(argv)
    if a.child:  # ours and its reward run (the peer runs bench/ppo_peer_trl.py)
        t_start = time.perf_counter()
        cfg = PPOBenchConfig(**json.loads(Path(a.child_config).read_text()))
        import torch

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        out = asdict(run_ours(cfg, t_start)) if a.child == "ours" else run_reward(cfg, t_start)
        Path(a.child_out).write_text(json.dumps(out))
        return 0
    sides = [a.only] if a.only else list(SIDE_LABELS)
    if "trl" in sides and (why := trl_python_problem(a.trl_python)):
        print(f"[bench] {why}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results: dict[int, dict[str, dict[str, Any]]] = {}
    errors: dict[tuple[int, str], str] = {}
    peer = str(Path(__file__).resolve().parent / "ppo_peer_trl.py")
    with tempfile.TemporaryDirectory(prefix="ppo-bench-") as tmp_name:
        tmp = Path(tmp_name)
        cfg.model_dir = peer_model_dir(cfg.model, tmp)
        cfg.prompts, cfg.records = write_inputs(cfg, tmp)
        if "ours" in sides and cfg.reward == "run":
            cfg.workdir = str(tmp)
            (tmp / "reward.json").write_text(json.dumps(asdict(cfg)))
            res, err = run_side("reward", tmp / "reward.json", tmp, script=__file__)
            if res is None:
                sides.remove("ours")
                errors.update({(e, "ours"): f"reward run: {err}" for e in a.epochs})
            else:
                cfg.reward_run = res["run_dir"]
                print(f"[bench] reward run {res['run_dir']} ({res['wall_s']:.0f}s, untimed)", file=sys.stderr)
        for epochs in a.epochs:
            run_dir = tmp / f"e{epochs}"
            run_dir.mkdir()
            cfg.epochs, cfg.workdir = epochs, str(run_dir)
            cfg_path = run_dir / "config.json"
            cfg_path.write_text(json.dumps(asdict(cfg)))
            for side in sides:
                script, python = (peer, a.trl_python) if side == "trl" else (__file__, None)
                res, err = run_side(side, cfg_path, run_dir, script=script, python=python)
                if res is None:
                    errors[epochs, side] = err or "failed"
                else:
                    results.setdefault(epochs, {})[side] = res
    summaries = {e: {side: summarize(res, cfg) for side, res in by.items()} for e, by in results.items()}
    print_report(cfg, a, results, summaries, errors)
    print(f"\n(total bench wall time {time.perf_counter() - t0:.0f}s)")
    if a.json:
        payload = {"config": asdict(cfg), "epochs": a.epochs, "results": results, "summary": summaries}
        Path(a.json).write_text(
            json.dumps({**payload, "errors": {f"{e}/{s}": v for (e, s), v in errors.items()}})
        )
    return 1 if errors else 0


def print_report(cfg, a, results, summaries, errors) -> None:
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"equivalent: {canonical(cfg, a)}")
    print(
        f"setup: {cfg.model}, LoRA r={cfg.lora_r} alpha={cfg.lora_alpha} all-linear, fp32, {cfg.device} "
        f"({os.cpu_count()} CPUs), rollout batch {cfg.batch_size} prompts x {cfg.max_new_tokens} new tokens "
        f"(temperature {cfg.temperature}, stop at EOS), one minibatch per batch, {cfg.warmup} warmup + "
        f"{cfg.steps} timed steps, lr {cfg.lr} constant, prompts: align_prefs_v1 (chat template)"
    )
    print(
        "versions (align side): "
        + ", ".join(f"{k} {v}" for k, v in versions().items() if k != "liger-kernel")
    )
    for epochs, by in results.items():
        for side, res in by.items():
            params = ", ".join(f"{k} {v:,}" for k, v in res["trainable_params"].items()) or "n/a"
            print(
                f"{SIDE_LABELS[side]}, {epochs} epoch(s): {res['threads']} torch threads, setup {res['setup_s']:.1f}s, "
                f"trainable {params}, step times {[round(s['step_s'], 1) for s in res['steps']]}"
                + (f", versions {res['versions']}" if side == "trl" else "")
                + "".join(f"; {n}" for n in res["notes"])
            )
    if "ours" in {s for by in results.values() for s in by} and cfg.reward == "function":
        print(
            f"note: ours scores with a Python function ({cfg.reward_function}); TRL's scoring includes a "
            "reward-model forward (its reward column) that ours does not run"
        )
    print()
    print(table(summaries, errors, cfg.device == "cuda"))
    for epochs, by in summaries.items():
        if "ours" in by and "trl" in by:
            mem_key = "peak_gpu_gib" if cfg.device == "cuda" else "peak_rss_gib"
            print(f"{epochs} PPO epoch(s): {verdict(ratios(by['ours'], by['trl'], mem_key))}")


if __name__ == "__main__":
    sys.exit(main())
