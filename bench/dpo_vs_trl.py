"""Benchmark: align's DPO training path vs TRL 1.16's DPOTrainer, same model, data and settings.

    python bench/dpo_vs_trl.py                                   # embedded SmolLM2-135M-Instruct, CPU
    python bench/dpo_vs_trl.py --model tiny-smollm2 --steps 2    # smoke run
    python bench/dpo_vs_trl.py --min-prompt-tokens 448 --max-length 512   # ~512-token sequences

Each side trains in its own subprocess (so peak RSS is per side) and reports JSON to the parent:

* ours: `align.train.run` with a Recipe built in code (the real path: data layer, SequenceScorer with
  the packed-pairs forward unless --layout says otherwise, adapter-off reference, loop, AdamW). Step boundaries and real-token counts are observed by wrapping
  `align.loop.write_metrics` (called once per optimizer step) and `align.train.collate_pairs`.
* TRL: `DPOTrainer.train()` with `max_steps`, a callback recording step-end times, per-step loss and
  TRL's own real-token count (`num_tokens`, the attention-mask sum).

Made equal on purpose: model and dtype (fp32), LoRA (r, alpha, all-linear, dropout 0: TRL disables
dropout anyway), data (the same records, in our BatchPlan's epoch-0 order; TRL reads them sequentially),
batch size, max_length, steps, AdamW (torch, no weight decay), constant lr, grad clip 1.0, sigmoid DPO with
the same β, no gradient checkpointing, no bf16 autocast (TRL's DPOConfig defaults both on), no eval,
no checkpoints, same torch thread count. The first `--warmup` steps are excluded from timing.

Not equal, by design of each library (see tests/parity/test_parity_trl_dpo.py): TRL's completions keep
the chat template's "\\n" after <|im_end|> (one more token per row; counted in its real tokens), and TRL
logs extra per-token statistics (entropy, mean logit, top-1) computed in its LM-head pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILLER_TEXT = (
    "Background notes for the assistant: the quick brown fox jumps over the lazy dog while a calm river "
    "flows past green hills under a clear blue sky, and the village market opens early every morning."
)
FILLER = FILLER_TEXT.split(" ")


@dataclass
class BenchConfig:
    model: str = "smollm2-135m-instruct"
    steps: int = 8
    warmup: int = 1
    batch_size: int = 4
    max_length: int = 512
    max_prompt_length: int | None = None  # ours only; None: max_length - 1 (TRL has no prompt limit)
    min_prompt_tokens: int = 0
    lr: float = 5e-4
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    layout: str = "auto"  # ours: train.layout (auto = packed pairs under a block mask)
    records: str = ""  # set by the parent: the JSONL both sides train on
    workdir: str = ""


@dataclass
class SideResult:
    name: str
    step_end_times: list[float] = field(default_factory=list)  # perf_counter at the end of each step
    step_tokens: list[int] = field(default_factory=list)  # real (attention-mask) tokens per step
    step_losses: list[float] = field(default_factory=list)
    n_train: int = 0
    trainable_params: int = 0
    threads: int = 0
    peak_rss_gib: float = 0.0
    setup_s: float = 0.0  # process start to first step start (imports, loading, tokenization)


# -- records ---------------------------------------------------------------------------------------


def build_records(cfg: BenchConfig, path: Path) -> int:
    """Load align_prefs_v1 through our data layer, lengthen prompts if asked, write JSONL; returns count."""
    from align.data.cards import load_card, load_card_records
    from align.models import load_tokenizer
    from align.recipe import ModelConfig

    records, _ = load_card_records(load_card("align_prefs_v1"), role="train")
    tok = load_tokenizer(ModelConfig(cfg.model))
    rows = []
    for rec in records:
        assert rec.conversational, "align_prefs_v1 is conversational"
        prompt = [dict(m) for m in rec.prompt]
        if cfg.min_prompt_tokens > 0:
            prompt = _lengthen(tok, prompt, cfg.min_prompt_tokens)
        rows.append({"prompt": prompt, "chosen": rec.chosen, "rejected": rec.rejected})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def _prompt_len(tok, prompt: list[dict[str, str]]) -> int:
    return len(
        tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )


def _lengthen(tok, prompt: list[dict[str, str]], target: int) -> list[dict[str, str]]:
    """Prepend (or extend) a system message with filler until the rendered prompt has >= target tokens."""
    if _prompt_len(tok, prompt) >= target:
        return prompt
    base = prompt[0]["content"] + "\n" if prompt[0]["role"] == "system" else ""
    rest = prompt[1:] if prompt[0]["role"] == "system" else prompt
    n_words = max(target - _prompt_len(tok, prompt), 0)
    while True:
        words = [FILLER[i % len(FILLER)] for i in range(n_words)]
        candidate = [{"role": "system", "content": base + " ".join(words)}, *rest]
        missing = target - _prompt_len(tok, candidate)
        if missing <= 0:
            return candidate
        n_words += missing


# -- children --------------------------------------------------------------------------------------


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def run_ours(cfg: BenchConfig, t_start: float) -> SideResult:
    import torch

    import align.loop
    import align.train
    from align.recipe import (
        DataConfig,
        LogConfig,
        LoraConfig,
        ModelConfig,
        OptimConfig,
        Recipe,
        ReportConfig,
        TrainConfig,
        validate,
    )

    res = SideResult("ours", threads=torch.get_num_threads())
    recipe = Recipe(
        method="dpo",
        beta=cfg.beta,
        output_dir=str(Path(cfg.workdir) / "ours"),
        seed=cfg.seed,
        cpu=cfg.device == "cpu",
        model=ModelConfig(name=cfg.model, dtype="float32", gradient_checkpointing=False),
        lora=LoraConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=0.0, target_modules="all-linear"),
        data=DataConfig(
            path=cfg.records,
            heldout_fraction=0.0,
            max_length=cfg.max_length,
            max_prompt_length=cfg.max_prompt_length or cfg.max_length - 1,
        ),
        optim=OptimConfig(
            lr=cfg.lr, scheduler="constant", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0
        ),
        train=TrainConfig(
            per_device_batch_size=cfg.batch_size,
            max_steps=cfg.warmup + cfg.steps,
            eval_every=0,
            save_every=0,
            log_every=1,
            progress=False,
            layout=cfg.layout,
        ),
        log=LogConfig(trackers=[]),
        report=ReportConfig(eval_before=False),
    )
    validate(recipe, "bench")

    collate, write_metrics = align.train.collate_pairs, align.loop.write_metrics

    def counting_collate(examples, pad_id, **kw):
        batch = collate(examples, pad_id, **kw)
        if not res.step_tokens:
            res.setup_s = time.perf_counter() - t_start
        res.step_tokens.append(int(batch.attention_mask.sum()))
        return batch

    def timed_write_metrics(parts, step, metrics):
        if "train/loss" in metrics:  # one call per optimizer step (log_every=1)
            res.step_end_times.append(time.perf_counter())
            res.step_losses.append(float(metrics["train/loss"]))
        write_metrics(parts, step, metrics)

    align.train.collate_pairs = counting_collate
    align.loop.write_metrics = timed_write_metrics
    summary = align.train.run(recipe, resume=False)
    res.n_train = summary["examples"]["train"]
    res.trainable_params = sum(p.numel() for p in summary["peft_model"].parameters() if p.requires_grad)
    res.peak_rss_gib = _peak_rss_gib()
    return res


def run_trl(cfg: BenchConfig, t_start: float) -> SideResult:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from align.data.batches import BatchPlan
    from align.models import load_model, load_tokenizer
    from align.recipe import ModelConfig

    res = SideResult("trl", threads=torch.get_num_threads())
    spec = ModelConfig(cfg.model, "float32")
    tok = load_tokenizer(spec)
    model = load_model(spec, seed=cfg.seed)
    rows = [json.loads(line) for line in Path(cfg.records).read_text().splitlines()]
    # Our loop's epoch-0 order (BatchPlan), read sequentially by TRL: both sides see the same batches.
    order = BatchPlan(len(rows), cfg.batch_size, 1, 1, cfg.seed).order(0)
    dataset = Dataset.from_list([rows[i] for i in order])

    class Recorder(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0 and not res.setup_s:
                res.setup_s = time.perf_counter() - t_start

        def on_step_end(self, args, state, control, **kwargs):
            res.step_end_times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                res.step_losses.append(float(logs["loss"]))
                res.step_tokens.append(int(logs["num_tokens"]))  # cumulative; differenced by the parent

    args = DPOConfig(
        output_dir=str(Path(cfg.workdir) / "trl"),
        report_to="none",
        use_cpu=cfg.device == "cpu",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=cfg.seed,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        max_steps=cfg.warmup + cfg.steps,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=cfg.beta,
        loss_type="sigmoid",
        max_length=cfg.max_length,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        train_sampling_strategy="sequential",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=lora,
        callbacks=[Recorder()],
    )
    res.n_train = len(trainer.train_dataset)
    res.trainable_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.train()
    cumulative = res.step_tokens
    res.step_tokens = [b - a for a, b in zip([0, *cumulative[:-1]], cumulative)]
    res.peak_rss_gib = _peak_rss_gib()
    return res


def child_main(side: str, cfg_path: str, out_path: str) -> None:
    t_start = time.perf_counter()
    cfg = BenchConfig(**json.loads(Path(cfg_path).read_text()))
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    res = run_ours(cfg, t_start) if side == "ours" else run_trl(cfg, t_start)
    Path(out_path).write_text(json.dumps(asdict(res)))


# -- parent ----------------------------------------------------------------------------------------


def summarize(res: dict[str, Any], cfg: BenchConfig) -> dict[str, float]:
    """Rates over the timed steps (after warmup): pairs/s, real tokens/s, peak RSS, mean loss."""
    w, n = cfg.warmup, cfg.steps
    ends, tokens, losses = res["step_end_times"], res["step_tokens"], res["step_losses"]
    if len(ends) < w + n or len(tokens) < w + n or len(losses) < w + n:
        raise RuntimeError(
            f"{res['name']}: recorded {len(ends)} steps / {len(tokens)} / {len(losses)}, expected {w + n}"
        )
    start = ends[w - 1] if w > 0 else ends[0] - (ends[1] - ends[0])
    elapsed = ends[w + n - 1] - start
    step_times = [b - a for a, b in zip([start, *ends[w : w + n - 1]], ends[w : w + n])]
    return {
        "pairs_per_s": n * cfg.batch_size / elapsed,
        "tokens_per_s": sum(tokens[w : w + n]) / elapsed,
        "tokens_per_pair": sum(tokens[w : w + n]) / (n * cfg.batch_size),
        "median_step_s": statistics.median(step_times),
        "min_step_s": min(step_times),
        "max_step_s": max(step_times),
        "peak_rss_gib": res["peak_rss_gib"],
        "mean_loss": statistics.fmean(losses[w : w + n]),
        "first_loss": losses[0],
        "setup_s": res["setup_s"],
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "accelerate", "trl")}


def table(ours: dict[str, float], theirs: dict[str, float]) -> str:
    rows = [
        ("pairs/s", "pairs_per_s", "{:.3f}"),
        ("real tokens/s", "tokens_per_s", "{:.1f}"),
        ("real tokens/pair", "tokens_per_pair", "{:.1f}"),
        ("median step (s)", "median_step_s", "{:.2f}"),
        ("slowest step (s)", "max_step_s", "{:.2f}"),
        ("peak RSS (GiB)", "peak_rss_gib", "{:.2f}"),
        ("mean loss (timed steps)", "mean_loss", "{:.4f}"),
    ]
    lines = ["| | align | TRL DPOTrainer | align / TRL |", "|---|---:|---:|---:|"]
    for label, key, fmt in rows:
        lines.append(
            f"| {label} | {fmt.format(ours[key])} | {fmt.format(theirs[key])} | {ours[key] / theirs[key]:.2f}x |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = BenchConfig()
    p.add_argument(
        "--model", default=d.model, help="smollm2-135m-instruct (embedded), tiny-smollm2, or a local dir"
    )
    p.add_argument("--steps", type=int, default=d.steps, help="timed optimizer steps per side")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps before the timed ones")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per step (per device)")
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--max-prompt-length", type=int, default=None, help="ours only (default max-length - 1)")
    p.add_argument(
        "--min-prompt-tokens",
        type=int,
        default=d.min_prompt_tokens,
        help="lengthen each prompt to at least this many tokens with a filler system message",
    )
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--beta", type=float, default=d.beta)
    p.add_argument("--lora-r", type=int, default=d.lora_r)
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", choices=["cpu", "cuda"], default=d.device)
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads in both children (default: torch's)"
    )
    p.add_argument(
        "--layout",
        choices=["auto", "packed", "shared", "padded"],
        default=d.layout,
        help="ours: train.layout (auto = packed pairs; padded = one row per sequence, like TRL)",
    )
    p.add_argument("--only", choices=["ours", "trl"], default=None, help="run one side (no ratios)")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--child-config", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.min_prompt_tokens >= a.max_length:
        p.error("--min-prompt-tokens must be smaller than --max-length")
    if a.steps < 2 and a.warmup == 0:
        p.error("need --steps >= 2 when --warmup is 0")
    cfg = BenchConfig(
        model=a.model,
        steps=a.steps,
        warmup=a.warmup,
        batch_size=a.batch_size,
        max_length=a.max_length,
        max_prompt_length=a.max_prompt_length,
        min_prompt_tokens=a.min_prompt_tokens,
        lr=a.lr,
        beta=a.beta,
        lora_r=a.lora_r,
        lora_alpha=a.lora_alpha,
        seed=a.seed,
        device=a.device,
        threads=a.threads,
        layout=a.layout,
    )
    return cfg, a


def main(argv: list[str] | None = None) -> None:
    cfg, a = parse_args(argv)
    if a.child:
        child_main(a.child, a.child_config, a.child_out)
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        cfg.workdir = tmp
        cfg.records = str(Path(tmp) / "records.jsonl")
        n = build_records(cfg, Path(cfg.records))
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(asdict(cfg)))
        results: dict[str, dict[str, Any]] = {}
        for side in [a.only] if a.only else ["ours", "trl"]:
            out = Path(tmp) / f"{side}.json"
            cmd = [
                sys.executable,
                __file__,
                "--child",
                side,
                "--child-config",
                str(cfg_path),
                "--child-out",
                str(out),
            ]
            env = {**os.environ, "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
            print(f"[bench] {side}: running ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
                raise SystemExit(f"[bench] {side} failed (exit {proc.returncode})")
            results[side] = json.loads(out.read_text())
    summaries = {side: summarize(res, cfg) for side, res in results.items()}
    canonical = (
        f"python bench/dpo_vs_trl.py --model {cfg.model} --steps {cfg.steps} --warmup {cfg.warmup} "
        f"--batch-size {cfg.batch_size} --max-length {cfg.max_length} --min-prompt-tokens {cfg.min_prompt_tokens} "
        f"--lr {cfg.lr} --beta {cfg.beta} --device {cfg.device}"
        + (f" --threads {cfg.threads}" if cfg.threads else "")
        + (f" --max-prompt-length {cfg.max_prompt_length}" if cfg.max_prompt_length else "")
        + ("" if cfg.layout == "auto" else f" --layout {cfg.layout}")
    )
    v = versions()
    any_res = next(iter(results.values()))
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"equivalent: {canonical}")
    print(
        f"setup: {cfg.model}, LoRA r={cfg.lora_r} alpha={cfg.lora_alpha} all-linear, fp32, {cfg.device}, "
        f"{any_res['threads']} torch threads ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}), "
        f"batch {cfg.batch_size} pairs, max_length {cfg.max_length}, {n} records "
        f"(min prompt tokens {cfg.min_prompt_tokens}), {cfg.warmup} warmup + {cfg.steps} timed steps, "
        f"sigmoid DPO beta={cfg.beta}, AdamW lr={cfg.lr} constant, ours layout={cfg.layout}"
    )
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    for side, res in results.items():
        s = summaries[side]
        print(
            f"{side}: train examples {res['n_train']}, trainable params {res['trainable_params']:,}, "
            f"setup {s['setup_s']:.1f}s, first-step loss {s['first_loss']:.4f}, "
            f"step losses {[round(x, 4) for x in res['step_losses']]}"
        )
    for side, s in summaries.items():
        if s["max_step_s"] > 2 * s["median_step_s"]:
            print(
                f"WARNING: {side}: slowest timed step {s['max_step_s']:.1f}s > 2x the median "
                f"{s['median_step_s']:.1f}s; other load on this machine? (threads oversubscribed)",
                file=sys.stderr,
            )
    if len(summaries) == 2:
        if results["ours"]["n_train"] != results["trl"]["n_train"]:
            print(
                "WARNING: the two sides kept different numbers of examples; batches differ", file=sys.stderr
            )
        print()
        print(table(summaries["ours"], summaries["trl"]))
    else:
        print(json.dumps(summaries, indent=1))
    print(f"\n(total bench wall time {time.perf_counter() - t0:.0f}s)")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"config": asdict(cfg), "versions": v, "results": results, "summary": summaries}, indent=1
            )
        )


if __name__ == "__main__":
    main()
