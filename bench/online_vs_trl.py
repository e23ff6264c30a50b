"""Benchmark: align's RLOO and GRPO steps vs TRL 1.16's RLOOTrainer and GRPOTrainer, same prompts, reward, model.

    python bench/online_vs_trl.py --threads 2     # embedded SmolLM2-135M-Instruct, CPU, rloo + grpo, beta 0 and 0.04
    python bench/online_vs_trl.py --steps 4 --prompts-per-step 4 --group-size 4 --max-new-tokens 32 --threads 2
    python bench/online_vs_trl.py --model tiny-smollm2 --steps 1 --max-new-tokens 8 --methods grpo --betas 0  # smoke

Each (method, beta, side) runs in its own process (bench/dpo_vs_trl.py: run_side), so peak RSS is per side;
TRL 1.16 is the one in align's own venv (its RLOO and GRPO trainers are not experimental), so both
sides run under this interpreter:

* ours: `align.train.run` on a `method: rloo` / `method: grpo` recipe written as YAML and loaded by
  `load_recipe` (the user's path, as recipes/smollm2/grpo_math.yaml; `--ours-set` adds dotted
  overrides). Step ends are observed on `align.engine.loop.write_metrics` (log_every=1), generated
  tokens from the step's `train/response_length` x completions.
* TRL: `RLOOTrainer` / `GRPOTrainer(...).train()` with `max_steps`, a callback for step ends
  (`on_step_end`) and the per-step `completions/mean_length` it logs (`logging_steps=1`).

Made equal: the model (the embedded SmolLM2-135M-Instruct, or tiny-smollm2 / a directory), fp32 on the
CPU (TRL's default bf16 and gradient checkpointing pinned off), LoRA (r, alpha, all-linear, dropout 0),
the prompts (the first (warmup + steps) x prompts-per-step records of align_math_v1, file order, chat
format rendered by the model's chat template with the generation prompt), the reward
(`align.rewards:exact_answer`; TRL's `reward_funcs` gets a wrapper `(prompts, completions, answer,
**kwargs)` with the dataset's `answer` column passed through), the group size (TRL's
`num_generations`), prompts per step (TRL: `per_device_train_batch_size` = `generation_batch_size` =
prompts x group size completions, `gradient_accumulation_steps=1`, so `steps_per_generation=1`: one
rollout and one optimizer step per step, as ours with `train.per_device_batch_size` = prompts,
accumulation 1, `online.epochs=1`, `minibatches=1`), max new tokens (TRL's `max_completion_length`),
temperature, top-k off, top-p 1, stop at EOS, beta (0: neither side runs the reference; > 0: the
adapter-off reference on both), clip epsilon 0.2, AdamW (torch, no weight decay), constant lr, grad
clip 1.0, no eval, no checkpoints, no completion logging, the torch thread count (`--threads`). GRPO:
ours `normalisation: sequence` + `scale: group` = TRL `loss_type="grpo"` + `scale_rewards="group"`.
The first `--warmup` steps are untimed.

Not equal, by design of each library: TRL samples with `model.generate` (transformers' generation loop
over the PEFT model: LoRA computed unmerged at every decode step); ours uses its own rollout
(`online.backend: auto`). TRL's RLOO reduces the clipped sequence-level surrogate by a mean over
completions with the KL (k1, beta) in the reward; ours `ratio: sequence`, `reduce: sum` (its
default), also KL in the reward. TRL GRPO's k3 KL term is per token inside its loss, as ours. The
prompt order differs (TRL reads the file in order, ours shuffles with its seed; the same prompts are
used once each). TRL logs extra statistics (entropy, clip ratios) each step; ours its own metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ modules, also when imported by path

from dpo_vs_trl import run_side, versions  # noqa: E402
from ppo_peer_trl import peak_rss_gib  # noqa: E402
from ppo_vs_trl import _fmt, _ratio, _run_recipe, peer_model_dir  # noqa: E402

CARD_FILE = Path(__file__).resolve().parents[1] / "align" / "data" / "bundled" / "align_math_v1.jsonl"
REWARD_FUNCTION = "align.rewards:exact_answer"
METHODS = ("rloo", "grpo")
SIDE_LABELS = {"ours": "align", "trl": "TRL 1.16"}
TRL_TRAINERS = {"rloo": "RLOOTrainer", "grpo": "GRPOTrainer"}


@dataclass
class OnlineBenchConfig:
    """Settings both sides read (the harness writes them as JSON for each child)."""

    method: str = "grpo"
    beta: float = 0.0
    model: str = "smollm2-135m-instruct"  # ours loads this name; TRL loads `model_dir`
    model_dir: str = ""  # set by the harness
    records: str = ""  # set by the harness: the prompts JSONL (prompt messages + answer)
    steps: int = 4  # timed steps per side
    warmup: int = 1  # untimed steps before those
    prompts_per_step: int = 4
    group_size: int = 4
    max_new_tokens: int = 32
    temperature: float = 1.0
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    threads: int | None = None
    workdir: str = ""
    ours_set: list[str] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    @property
    def completions(self) -> int:
        return self.prompts_per_step * self.group_size


@dataclass
class SideResult:
    name: str
    step_end_times: list[float] = field(default_factory=list)  # perf_counter at each step's end
    step_tokens: list[int] = field(default_factory=list)  # completion tokens generated per step
    peak_rss_gib: float = 0.0
    setup_s: float = 0.0
    threads: int = 0
    trainable_params: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def write_records(n: int, path: Path) -> None:
    """The first `n` records of align_math_v1 (file order), as the card ships them."""
    lines = [ln for ln in CARD_FILE.read_text().splitlines() if ln.strip()]
    if len(lines) < n:
        raise ValueError(f"{CARD_FILE}: {len(lines)} records, the bench needs {n} prompts")
    path.write_text("".join(ln + "\n" for ln in lines[:n]))


# -- ours ------------------------------------------------------------------------------------------


def ours_recipe(cfg: OnlineBenchConfig) -> dict[str, Any]:
    """Our RLOO / GRPO recipe for the bench settings (recipes/smollm2/grpo_math.yaml's shape)."""
    online: dict[str, Any] = {
        "reward_function": REWARD_FUNCTION,
        "group_size": cfg.group_size,
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "top_k": 0,
        "top_p": 1.0,
        "clip": 0.2,
        "epochs": 1,
        "minibatches": 1,
        "eval_prompts": 0,
    }
    if cfg.method == "grpo":
        online.update(normalisation="sequence", scale="group")  # = TRL loss_type grpo, scale_rewards group
    return {
        "method": cfg.method,
        "beta": cfg.beta,
        "output_dir": str(Path(cfg.workdir) / "ours"),
        "seed": cfg.seed,
        "cpu": True,
        "precision": "fp32",
        "model": {"name": cfg.model, "dtype": "auto", "gradient_checkpointing": False},
        "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {
            "path": cfg.records,
            "format": "prompts",
            "heldout_fraction": 0.0,
            "max_prompt_length": 96,
            "max_length": 96 + cfg.max_new_tokens,
        },
        "online": online,
        "optim": {
            "lr": cfg.lr,
            "scheduler": "constant",
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "max_grad_norm": 1.0,
        },
        "train": {
            "per_device_batch_size": cfg.prompts_per_step,
            "gradient_accumulation_steps": 1,
            "max_steps": cfg.total_steps,
            "eval_every": 0,
            "save_every": 0,
            "log_every": 1,
            "progress": False,
        },
        "log": {"trackers": []},
        "report": {"eval_before": False},
    }


def run_ours(cfg: OnlineBenchConfig, t_start: float) -> SideResult:
    import torch

    import align.engine.loop
    import align.train

    res = SideResult("ours", threads=torch.get_num_threads(), versions=versions())
    loop_train, write_metrics = align.train.train, align.engine.loop.write_metrics

    def bench_train(parts, state):  # the loop's entry: setup ends here (as bench/peers.py)
        res.setup_s = time.perf_counter() - t_start
        return loop_train(parts, state)

    def timed_write_metrics(parts, step, metrics):
        if "train/response_length" in metrics:
            res.step_end_times.append(time.perf_counter())
            res.step_tokens.append(round(float(metrics["train/response_length"]) * cfg.completions))
        write_metrics(parts, step, metrics)

    align.train.train, align.engine.loop.write_metrics = bench_train, timed_write_metrics
    _, summary = _run_recipe(cfg, f"ours_{cfg.method}", ours_recipe(cfg), cfg.ours_set)
    res.peak_rss_gib = peak_rss_gib()
    if (model := summary.get("peft_model")) is not None:
        res.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_train = summary.get("examples", {}).get("train")
    if n_train != cfg.total_steps * cfg.prompts_per_step:
        res.notes.append(f"WARNING: ours kept {n_train} prompts of {cfg.total_steps * cfg.prompts_per_step}")
    res.notes.append(f"recipe overrides: {' '.join(cfg.ours_set) or 'none'}")
    return res


# -- TRL -------------------------------------------------------------------------------------------


def trl_exact_answer(prompts, completions, answer, **kwargs) -> list[float]:
    """`align.rewards:exact_answer` in TRL's reward_funcs signature (conversational completions:
    the assistant message's text; `answer`: the dataset column TRL passes through)."""
    from align.rewards import exact_answer

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return exact_answer(list(prompts), texts, list(answer))


def trl_args(cfg: OnlineBenchConfig) -> dict[str, Any]:
    """RLOOConfig / GRPOConfig keyword arguments (both default bf16 on and gradient checkpointing on)."""
    n = cfg.completions
    kw: dict[str, Any] = dict(
        output_dir=str(Path(cfg.workdir) / f"trl_{cfg.method}"),
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        tf32=False,
        gradient_checkpointing=False,
        seed=cfg.seed,
        per_device_train_batch_size=n,  # completions, in TRL
        gradient_accumulation_steps=1,
        generation_batch_size=n,  # one rollout per optimizer step
        num_generations=cfg.group_size,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=0,
        top_p=1.0,
        num_iterations=1,
        epsilon=0.2,
        beta=cfg.beta,
        use_vllm=False,
        shuffle_dataset=False,
        max_steps=cfg.total_steps,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        log_completions=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if cfg.method == "grpo":
        kw.update(loss_type="grpo", scale_rewards="group")
    return kw


def run_trl(cfg: OnlineBenchConfig, t_start: float) -> SideResult:
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    res = SideResult("trl", threads=torch.get_num_threads(), versions=versions())
    config_cls = trl.RLOOConfig if cfg.method == "rloo" else trl.GRPOConfig
    trainer_cls = getattr(trl, TRL_TRAINERS[cfg.method])
    rows = [json.loads(ln) for ln in Path(cfg.records).read_text().splitlines() if ln.strip()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
    tok = AutoTokenizer.from_pretrained(cfg.model_dir)
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(cfg.model_dir, dtype=torch.float32, use_safetensors=True)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            res.setup_s = time.perf_counter() - t_start

        def on_step_end(self, args, state, control, **kwargs):
            res.step_end_times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                res.step_tokens.append(round(float(logs["completions/mean_length"]) * cfg.completions))

    trainer = trainer_cls(
        model=model,
        reward_funcs=trl_exact_answer,
        args=config_cls(**trl_args(cfg)),
        train_dataset=dataset,
        processing_class=tok,
        peft_config=lora,
        callbacks=[Recorder()],
    )
    res.trainable_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.train()
    res.peak_rss_gib = peak_rss_gib()
    return res


SIDES = {"ours": run_ours, "trl": run_trl}


# -- summaries -------------------------------------------------------------------------------------


def summarize(res: dict[str, Any], cfg: OnlineBenchConfig) -> dict[str, Any]:
    """Rates over the timed steps (from the end of the last warm-up step): steps/s, generated
    completion tokens/s; peak RSS."""
    w, n = cfg.warmup, cfg.steps
    ends, tokens = res["step_end_times"], res["step_tokens"]
    if min(len(ends), len(tokens)) < w + n:
        raise RuntimeError(
            f"{res['name']}: recorded {len(ends)} step ends / {len(tokens)} token counts, expected {w} warmup + {n}"
        )
    if w < 1:
        raise RuntimeError("the bench needs --warmup >= 1 (timing starts at the end of a warm-up step)")
    elapsed = ends[w + n - 1] - ends[w - 1]
    timed_tokens = sum(tokens[w : w + n])
    return {
        "step_s": elapsed / n,
        "steps_per_s": n / elapsed,
        "tokens_per_step": timed_tokens / n,
        "tokens_per_s": timed_tokens / elapsed,
        "peak_rss_gib": res["peak_rss_gib"],
        "setup_s": res["setup_s"],
    }


def ratios(ours: dict[str, Any], trl: dict[str, Any]) -> dict[str, float | None]:
    """align / TRL: step rate and generated tokens/s (higher is better), peak RSS (lower is better)."""
    return {
        "step_rate": _ratio(ours["steps_per_s"], trl["steps_per_s"]),
        "tokens_rate": _ratio(ours["tokens_per_s"], trl["tokens_per_s"]),
        "memory": _ratio(ours["peak_rss_gib"], trl["peak_rss_gib"]),
    }


Key = tuple[str, float]  # (method, beta)


def table(rows: dict[Key, dict[str, dict[str, Any]]], errors: dict[tuple[str, float, str], str]) -> str:
    """One row per (method, beta, side); the align / TRL ratio columns sit on TRL's row."""
    head = [
        "method",
        "beta",
        "side",
        "s/step",
        "steps/s",
        "gen tokens/step",
        "gen tokens/s",
        "peak RSS (GiB)",
        "align / TRL steps/s",
        "align / TRL tokens/s",
        "align / TRL RSS",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|" + "---:|" * (len(head) - 3)]
    keys = sorted(set(rows) | {(m, b) for m, b, _ in errors}, key=lambda k: (METHODS.index(k[0]), k[1]))
    for method, beta in keys:
        for side, label in SIDE_LABELS.items():
            label = f"{label} {TRL_TRAINERS[method]}" if side == "trl" else label
            lead = [method, f"{beta:g}", label]
            if (method, beta, side) in errors:
                lines.append(
                    "| "
                    + " | ".join([*lead, f"failed: {errors[method, beta, side]}"])
                    + " |" * (len(head) - 3)
                )
                continue
            s = rows.get((method, beta), {}).get(side)
            if s is None:
                continue
            cells = [
                _fmt(s["step_s"]),
                _fmt(s["steps_per_s"], "{:.3f}"),
                _fmt(s["tokens_per_step"], "{:.0f}"),
                _fmt(s["tokens_per_s"], "{:.1f}"),
                _fmt(s["peak_rss_gib"]),
            ]
            ours = rows[method, beta].get("ours")
            if side == "trl" and ours is not None:
                r = ratios(ours, s)
                cells += [_fmt(r[k], "{:.2f}x") for k in ("step_rate", "tokens_rate", "memory")]
            else:
                cells += ["", "", ""]
            lines.append("| " + " | ".join([*lead, *cells]) + " |")
    return "\n".join(lines)


# -- parent ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[OnlineBenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = OnlineBenchConfig()
    p.add_argument(
        "--model", default=d.model, help="smollm2-135m-instruct (embedded), tiny-smollm2, or a directory"
    )
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.04], help="KL coefficients, each a run")
    p.add_argument("--steps", type=int, default=d.steps, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps before the timed ones (>= 1)")
    p.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step)
    p.add_argument("--group-size", type=int, default=d.group_size, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every child")
    p.add_argument(
        "--ours-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dotted override of our recipe (repeatable), e.g. online.backend=hf",
    )
    p.add_argument("--only", choices=list(SIDE_LABELS), default=None, help="run one side (no ratios)")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--child-config", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 1 or a.prompts_per_step < 1 or a.group_size < 2:
        p.error("--steps, --warmup and --prompts-per-step must be >= 1, --group-size >= 2")
    cfg = OnlineBenchConfig(
        model=a.model,
        steps=a.steps,
        warmup=a.warmup,
        prompts_per_step=a.prompts_per_step,
        group_size=a.group_size,
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature,
        lr=a.lr,
        lora_r=a.lora_r,
        lora_alpha=a.lora_alpha,
        seed=a.seed,
        threads=a.threads,
        ours_set=a.ours_set,
    )
    return cfg, a


def canonical(cfg: OnlineBenchConfig, a: argparse.Namespace) -> str:
    return (
        f"python bench/online_vs_trl.py --model {cfg.model} --methods {' '.join(a.methods)} "
        f"--betas {' '.join(f'{b:g}' for b in a.betas)} --steps {cfg.steps} --warmup {cfg.warmup} "
        f"--prompts-per-step {cfg.prompts_per_step} --group-size {cfg.group_size} "
        f"--max-new-tokens {cfg.max_new_tokens} --temperature {cfg.temperature} --lr {cfg.lr}"
        + (f" --threads {cfg.threads}" if cfg.threads else "")
        + "".join(f" --ours-set {shlex.quote(s)}" for s in cfg.ours_set)
        + (f" --only {a.only}" if a.only else "")
    )


def main(argv: list[str] | None = None) -> int:
    cfg, a = parse_args(argv)
    if a.child:
        t_start = time.perf_counter()
        cfg = OnlineBenchConfig(**json.loads(Path(a.child_config).read_text()))
        import torch

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        Path(a.child_out).write_text(json.dumps(asdict(SIDES[a.child](cfg, t_start))))
        return 0
    sides = [a.only] if a.only else list(SIDE_LABELS)
    t0 = time.perf_counter()
    results: dict[Key, dict[str, dict[str, Any]]] = {}
    errors: dict[tuple[str, float, str], str] = {}
    with tempfile.TemporaryDirectory(prefix="online-bench-") as tmp_name:
        tmp = Path(tmp_name)
        cfg.model_dir = peer_model_dir(cfg.model, tmp)
        cfg.records = str(tmp / "prompts.jsonl")
        write_records(cfg.total_steps * cfg.prompts_per_step, Path(cfg.records))
        for method in a.methods:
            for beta in a.betas:
                run_dir = tmp / f"{method}_b{beta:g}"
                run_dir.mkdir()
                cfg.method, cfg.beta, cfg.workdir = method, beta, str(run_dir)
                cfg_path = run_dir / "config.json"
                cfg_path.write_text(json.dumps(asdict(cfg)))
                for side in sides:
                    res, err = run_side(side, cfg_path, run_dir, script=__file__)
                    if res is None:
                        errors[method, beta, side] = err or "failed"
                    else:
                        results.setdefault((method, beta), {})[side] = res
    summaries = {k: {side: summarize(res, cfg) for side, res in by.items()} for k, by in results.items()}
    print_report(cfg, a, results, summaries, errors)
    print(f"\n(total bench wall time {time.perf_counter() - t0:.0f}s)")
    if a.json:
        payload = {
            "config": asdict(cfg),
            "results": {f"{m}/{b:g}": by for (m, b), by in results.items()},
            "summary": {f"{m}/{b:g}": by for (m, b), by in summaries.items()},
            "errors": {f"{m}/{b:g}/{s}": v for (m, b, s), v in errors.items()},
        }
        Path(a.json).write_text(json.dumps(payload))
    return 1 if errors else 0


def print_report(cfg, a, results, summaries, errors) -> None:
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"equivalent: {canonical(cfg, a)}")
    print(
        f"setup: {cfg.model}, LoRA r={cfg.lora_r} alpha={cfg.lora_alpha} all-linear, fp32, cpu "
        f"({os.cpu_count()} CPUs), {cfg.prompts_per_step} prompts x {cfg.group_size} completions per step, "
        f"{cfg.max_new_tokens} max new tokens (temperature {cfg.temperature}, stop at EOS), one optimizer "
        f"step per rollout, {cfg.warmup} warmup + {cfg.steps} timed steps, lr {cfg.lr} constant, prompts: "
        f"align_math_v1 (first {cfg.total_steps * cfg.prompts_per_step}, chat template), reward {REWARD_FUNCTION}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items() if k != "liger-kernel"))
    for (method, beta), by in results.items():
        for side, res in by.items():
            ends = res["step_end_times"]
            steps = [round(b - a, 2) for a, b in zip(ends, ends[1:])]
            print(
                f"{method} beta={beta:g} {SIDE_LABELS[side]}: {res['threads']} torch threads, setup "
                f"{res['setup_s']:.1f}s, trainable {res['trainable_params']:,}, step gaps {steps}, "
                f"tokens/step {res['step_tokens']}" + "".join(f"; {n}" for n in res["notes"])
            )
    print()
    print(table(summaries, errors))


if __name__ == "__main__":
    sys.exit(main())
