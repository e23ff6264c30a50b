"""Benchmark: align's DPO training path vs TRL 1.16's DPOTrainer (and TRL + Liger), same model, data, settings.

    python bench/dpo_vs_trl.py                                   # embedded SmolLM2-135M-Instruct, CPU, fp32
    python bench/dpo_vs_trl.py --model tiny-smollm2 --steps 2    # smoke run
    python bench/dpo_vs_trl.py --min-prompt-tokens 448 --max-length 512   # ~512-token sequences
    python bench/dpo_vs_trl.py --device cuda --precision bf16 --model /tmp/big   # GPU: memory, MFU
    python bench/dpo_vs_trl.py --write-random-model /tmp/big --shape 1.7b        # a model for that

Each side trains in its own subprocess (so peak memory is per side) and reports JSON to the parent
(bench/peers.py):

* ours: `align.train.run` with a Recipe built in code (the real path: data layer, SequenceScorer with
  the packed-pairs forward unless --layout says otherwise, adapter-off reference, loop, AdamW).
* TRL: `DPOTrainer.train()` with `max_steps`, a callback and a `compute_loss` wrapper recording step
  ends, per-step loss and each step's batch.
* TRL + Liger: the same with `use_liger_kernel=True`, when liger-kernel is installed and the device is
  CUDA (Liger's kernels are Triton); otherwise one line says why the row was skipped.

Made equal on purpose: model, precision (fp32: no autocast on either side, TRL's default bf16 pinned
off; bf16: bf16 autocast with the frozen base stored in bf16 and LoRA weights in fp32 on both sides),
LoRA (r, alpha, all-linear, dropout 0: TRL disables dropout anyway), data (the same records, in our
BatchPlan's epoch-0 order; TRL reads them sequentially), batch size, max_length, steps, AdamW (torch,
no weight decay), constant lr, grad clip 1.0, sigmoid DPO with the same β, no gradient checkpointing
(TRL's DPOConfig defaults it on), no eval, no checkpoints, same torch thread count. The first
`--warmup` steps are excluded from timing. The per-step losses of each TRL peer are checked against
ours at a tolerance for the precision (printed).

Reported per side: pairs/s, real tokens/s, median step, peak memory (RSS on CPU;
`torch.cuda.max_memory_allocated` on CUDA, reset before the first step), model TFLOP/s and MFU (model
FLOPs from the config by one formula for every side, bench/flops.py, over the device's dense peak:
a table for H100/H200/A100, else --peak-tflops), and align / peer ratios.

Not equal, by design of each library (see tests/parity/test_parity_trl_dpo.py): TRL's completions keep
the chat template's "\\n" after <|im_end|> (one more token per row; counted in its real tokens), and TRL
logs extra per-token statistics (entropy, mean logit, top-1) computed in its LM-head pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ modules, also when imported by path

from flops import Shape, Work, mfu, peak_tflops, step_flops  # noqa: E402
from peers import SIDES, BenchConfig, child_main  # noqa: E402
from random_model import SHAPES, with_tokenizer, write_random_model  # noqa: E402
from records import build_records  # noqa: E402

# Max |loss_ours - loss_peer| over every step (warmup included). Seen on SmolLM2-135M, CPU, 5 steps:
# fp32 4.6e-5 (the "\n" TRL also trains on, summation order); bf16 1.5e-2 (bf16 activations, growing
# with the steps as the two trajectories drift apart).
LOSS_TOL = {"fp32": 1e-3, "bf16": 5e-2}


# -- summaries -------------------------------------------------------------------------------------


def model_shape(name: str) -> Shape:
    from align.models.load import TINY_NAME, load_config, tiny_config
    from align.recipe import ModelConfig

    return Shape.from_config(tiny_config() if name == TINY_NAME else load_config(ModelConfig(name)))


def summarize(res: dict[str, Any], cfg: BenchConfig, shape: Shape, peak: float | None) -> dict[str, Any]:
    """Rates over the timed steps (after warmup): pairs/s, real tokens/s, peak memory, model FLOP rate."""
    w, n = cfg.warmup, cfg.steps
    ends, work, losses = res["step_end_times"], res["step_work"], res["step_losses"]
    if min(len(ends), len(work), len(losses)) < w + n:
        raise RuntimeError(
            f"{res['name']}: recorded {len(ends)} steps / {len(work)} / {len(losses)}, expected {w + n}"
        )
    start = ends[w - 1] if w > 0 else ends[0] - (ends[1] - ends[0])
    elapsed = ends[w + n - 1] - start
    step_times = [b - a for a, b in zip([start, *ends[w : w + n - 1]], ends[w : w + n])]
    timed = sum((Work(**x) for x in work[w : w + n]), Work())
    flops = step_flops(shape, shape.lora_params(cfg.lora_r), timed)["total"]
    return {
        "pairs_per_s": n * cfg.batch_size / elapsed,
        "tokens_per_s": timed.tokens / elapsed,
        "tokens_per_pair": timed.tokens / (n * cfg.batch_size),
        "median_step_s": statistics.median(step_times),
        "min_step_s": min(step_times),
        "max_step_s": max(step_times),
        "peak_rss_gib": res["peak_rss_gib"],
        "peak_gpu_gib": res["peak_gpu_gib"],
        "model_tflops_per_s": flops / elapsed / 1e12,
        "mfu": mfu(flops, elapsed, peak),
        "peak_tflops": peak,
        "mean_loss": statistics.fmean(losses[w : w + n]),
        "first_loss": losses[0],
        "setup_s": res["setup_s"],
    }


def loss_check(ours: list[float], peer: list[float], precision: str) -> dict[str, Any]:
    steps = min(len(ours), len(peer))
    diff = max(abs(a - b) for a, b in zip(ours[:steps], peer[:steps])) if steps else float("inf")
    return {
        "steps": steps,
        "max_abs_diff": diff,
        "tol": LOSS_TOL[precision],
        "ok": diff <= LOSS_TOL[precision],
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("torch", "transformers", "peft", "accelerate", "trl", "liger-kernel"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def _fmt(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else fmt.format(x)


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def table(summaries: dict[str, dict[str, Any]], errors: dict[str, str], cuda: bool) -> str:
    """One row per side; the ratio columns are align / that side (pairs/s, peak memory)."""
    mem_key, mem_label = (
        ("peak_gpu_gib", "peak GPU mem (GiB)") if cuda else ("peak_rss_gib", "peak RSS (GiB)")
    )
    cols = [
        ("pairs/s", "pairs_per_s", "{:.3f}"),
        ("real tokens/s", "tokens_per_s", "{:.1f}"),
        ("median step (s)", "median_step_s", "{:.2f}"),
        (mem_label, mem_key, "{:.2f}"),
        ("model TFLOP/s", "model_tflops_per_s", "{:.3f}"),
        ("MFU", "mfu", "{:.1%}"),
        ("mean loss", "mean_loss", "{:.4f}"),
    ]
    head = ["side", *(c[0] for c in cols), "align / side pairs/s", "align / side memory"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    ours = summaries.get("ours")
    for side in (s for s in SIDES if s in summaries or s in errors):
        label = SIDES[side][0]
        if side in errors:
            lines.append(f"| {label} | failed: {errors[side]} |" + " |" * (len(head) - 2))
            continue
        s = summaries[side]
        cells = [_fmt(s[key], fmt) for _, key, fmt in cols]
        if side == "ours" or ours is None:
            ratios = ["", ""]
        else:
            ratios = [_ratio(ours["pairs_per_s"], s["pairs_per_s"]), _ratio(ours[mem_key], s[mem_key])]
        lines.append("| " + " | ".join([label, *cells, *ratios]) + " |")
    return "\n".join(lines)


def failure_reason(stderr: str) -> str:
    """The exception line of a child's traceback (or its last line)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    exc = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b.*", ln)]
    return (exc or lines or ["no output"])[-1][:300]


def liger_skip_reason(device: str) -> str | None:
    """Why the TRL + Liger row cannot run here (None: it can)."""
    from transformers.utils import is_liger_kernel_available

    if not is_liger_kernel_available():
        return "liger-kernel (>= 0.3.0) is not installed"
    if device != "cuda":
        return "Liger's kernels are Triton kernels and need --device cuda"
    return None


# -- parent ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = BenchConfig()
    p.add_argument(
        "--model",
        default=d.model,
        help="smollm2-135m-instruct (embedded), tiny-smollm2, or a local llama-shaped checkpoint directory "
        "(config.json + safetensors; without tokenizer files the embedded SmolLM2 tokenizer is used)",
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
        "--precision",
        choices=["fp32", "bf16"],
        default=d.precision,
        help="fp32 (no autocast) or bf16 (autocast, frozen base stored in bf16, LoRA fp32) on every side",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense peak TFLOP/s for the precision, for MFU (default: known GPUs by name)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads in every child (default: torch's)"
    )
    p.add_argument(
        "--layout",
        choices=["auto", "packed", "shared", "padded"],
        default=d.layout,
        help="ours: train.layout (auto = packed pairs; padded = one row per sequence, like TRL)",
    )
    p.add_argument("--only", choices=list(SIDES), default=None, help="run one side (no ratios)")
    p.add_argument("--json", default=None, help="also write the raw results here")
    p.add_argument(
        "--write-random-model",
        metavar="DIR",
        default=None,
        help="write a random-weight llama with the SmolLM2 tokenizer to DIR (see --shape) and exit",
    )
    p.add_argument("--shape", choices=list(SHAPES), default="135m", help="for --write-random-model")
    p.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
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
        precision=a.precision,
        threads=a.threads,
        layout=a.layout,
    )
    return cfg, a


def run_side(
    side: str, cfg_path: Path, tmp: Path, script: str = __file__, python: str | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """One side in its own process (`python script --child SIDE`; python: this interpreter unless
    given): (result, None) or (None, the reason it failed). bench/kto_vs_trl.py and
    bench/ppo_vs_trl.py (whose TRL side runs in TRL 1.12's own venv) run their sides through this too."""
    out = tmp / f"{side}.json"
    cmd = [
        python or sys.executable,
        script,
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
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-6000:])
        reason = failure_reason(proc.stderr)
        print(f"[bench] {side} failed (exit {proc.returncode}): {reason}", file=sys.stderr, flush=True)
        return None, reason
    return json.loads(out.read_text()), None


def canonical(cfg: BenchConfig, peak_flag: float | None) -> str:
    return (
        f"python bench/dpo_vs_trl.py --model {cfg.model} --steps {cfg.steps} --warmup {cfg.warmup} "
        f"--batch-size {cfg.batch_size} --max-length {cfg.max_length} --min-prompt-tokens {cfg.min_prompt_tokens} "
        f"--lr {cfg.lr} --beta {cfg.beta} --device {cfg.device} --precision {cfg.precision}"
        + (f" --threads {cfg.threads}" if cfg.threads else "")
        + (f" --max-prompt-length {cfg.max_prompt_length}" if cfg.max_prompt_length else "")
        + ("" if cfg.layout == "auto" else f" --layout {cfg.layout}")
        + (f" --peak-tflops {peak_flag}" if peak_flag else "")
    )


def main(argv: list[str] | None = None) -> int:
    cfg, a = parse_args(argv)
    if a.child:
        child_main(a.child, a.child_config, a.child_out)
        return 0
    if a.write_random_model:
        n = write_random_model(Path(a.write_random_model), a.shape, seed=cfg.seed)
        print(f"{a.write_random_model}: {a.shape} llama shape, {n / 1e6:.0f}M parameters, random weights")
        return 0
    t0 = time.perf_counter()
    sides = [a.only] if a.only else list(SIDES)
    skipped = {}
    if "trl_liger" in sides and (why := liger_skip_reason(cfg.device)):
        skipped["trl_liger"] = why
        sides.remove("trl_liger")
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        cfg.workdir = tmp
        cfg.model_path = with_tokenizer(cfg.model, Path(tmp))
        cfg.records = str(Path(tmp) / "records.jsonl")
        n = build_records(cfg, Path(cfg.records))
        shape = model_shape(cfg.load_name)
        cfg_path = Path(tmp) / "config.json"
        cfg_path.write_text(json.dumps(asdict(cfg)))
        for side in sides:
            res, err = run_side(side, cfg_path, Path(tmp))
            if res is None:
                errors[side] = err or "failed"
            else:
                results[side] = res
    device_name = next((r["device_name"] for r in results.values()), cfg.device)
    peak = a.peak_tflops or (peak_tflops(device_name, cfg.precision) if cfg.device == "cuda" else None)
    summaries = {side: summarize(res, cfg, shape, peak) for side, res in results.items()}
    checks = {
        side: loss_check(results["ours"]["step_losses"], res["step_losses"], cfg.precision)
        for side, res in results.items()
        if side != "ours" and "ours" in results
    }
    print_report(cfg, a, results, summaries, errors, skipped, checks, shape, n, peak, device_name)
    print(f"\n(total bench wall time {time.perf_counter() - t0:.0f}s)")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "config": asdict(cfg),
                    "versions": versions(),
                    "shape": asdict(shape),
                    "results": results,
                    "summary": summaries,
                    "loss_checks": checks,
                    "errors": errors,
                    "skipped": skipped,
                },
                indent=1,
            )
        )
    return 1 if errors or not all(c["ok"] for c in checks.values()) else 0


def print_report(cfg, a, results, summaries, errors, skipped, checks, shape, n, peak, device_name) -> None:
    any_res = next(iter(results.values()), {"threads": "?"})
    where = f"{device_name}" if cfg.device == "cuda" else f"{platform.processor() or platform.machine()}"
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(f"equivalent: {canonical(cfg, a.peak_tflops)}")
    print(
        f"setup: {cfg.model}, LoRA r={cfg.lora_r} alpha={cfg.lora_alpha} all-linear, {cfg.precision}, "
        f"{cfg.device} ({where}), {any_res['threads']} torch threads ({os.cpu_count()} CPUs), "
        f"batch {cfg.batch_size} pairs, max_length {cfg.max_length}, {n} records "
        f"(min prompt tokens {cfg.min_prompt_tokens}), {cfg.warmup} warmup + {cfg.steps} timed steps, "
        f"sigmoid DPO beta={cfg.beta}, AdamW lr={cfg.lr} constant, ours layout={cfg.layout}"
    )
    print(
        f"model: {shape.layers} layers, hidden {shape.hidden}, {shape.decoder_params() / 1e6:.1f}M decoder "
        f"matmul params, LoRA {shape.lora_params(cfg.lora_r):,}; MFU peak "
        + (f"{peak:g} TFLOP/s ({cfg.precision})" if peak else "unknown (CUDA table or --peak-tflops)")
    )
    print("versions: " + ", ".join(f"{k} {val}" for k, val in versions().items()))
    for side, res in results.items():
        s = summaries[side]
        print(
            f"{side}: train examples {res['n_train']}, trainable params {res['trainable_params']:,}, "
            f"{res['numerics']}, setup {s['setup_s']:.1f}s, tokens/pair {s['tokens_per_pair']:.1f}, slowest step "
            f"{s['max_step_s']:.2f}s, peak RSS {s['peak_rss_gib']:.2f} GiB, step losses "
            f"{[round(x, 4) for x in res['step_losses']]}"
        )
        if res["trainable_params"] != shape.lora_params(cfg.lora_r):
            print(
                f"WARNING: {side}: trainable params differ from the FLOPs formula's LoRA count",
                file=sys.stderr,
            )
        if s["max_step_s"] > 2 * s["median_step_s"]:
            print(
                f"WARNING: {side}: slowest timed step {s['max_step_s']:.1f}s > 2x the median "
                f"{s['median_step_s']:.1f}s; other load on this machine? (threads oversubscribed)",
                file=sys.stderr,
            )
    for side, why in skipped.items():
        print(f"{SIDES[side][0]}: row skipped: {why}")
    for side, c in checks.items():
        verdict = "OK" if c["ok"] else "MISMATCH"
        print(
            f"loss check, align vs {SIDES[side][0]}: max |diff| {c['max_abs_diff']:.2e} over {c['steps']} steps "
            f"(tolerance {c['tol']:g} for {cfg.precision}): {verdict}"
        )
        if results["ours"]["n_train"] != results[side]["n_train"]:
            print(
                f"WARNING: ours and {side} kept different numbers of examples; batches differ",
                file=sys.stderr,
            )
    print()
    print(table(summaries, errors, cfg.device == "cuda"))


if __name__ == "__main__":
    sys.exit(main())
