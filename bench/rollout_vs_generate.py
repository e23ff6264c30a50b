"""Benchmark: sampling tokens/s of `align.models.rollout.sample` (both backends: the HF forward and
the lean static-cache path of align/models/decode.py) against plain `model.generate`, same model and batch.

    python bench/rollout_vs_generate.py                     # embedded SmolLM2-135M-Instruct, 8 x 64, CPU
    python bench/rollout_vs_generate.py --only generate     # the generate side alone
    python bench/rollout_vs_generate.py --only rollout      # both rollout backends, no generate
    python bench/rollout_vs_generate.py --model tiny-smollm2 --repeats 2   # smoke run
    python bench/rollout_vs_generate.py --compile           # + the fast side with its decode step compiled

Both sides sample the same batch (the first `--batch-size` prompts of align_prefs_v1 through the chat
template, left-padded) with the same settings (temperature, top-k = 0: off, top-p = 1: off), from the
same model object in one process, fp32, no gradients. Both produce exactly batch x max_new_tokens
tokens: `generate` with `min_new_tokens = max_new_tokens` (EOS masked), `sample` with an EOS id that
cannot be sampled (-1), so neither stops early and the token counts are equal by construction. Each
side runs `--warmup` untimed calls, then `--repeats` timed calls; the median call time gives tokens/s.

Targets: rollout-hf >= 0.9x generate's tokens/s (issue 8), rollout-fast >= 2.5x. Until
align.models.rollout exists, the generate side runs alone and a line says why. The fast side's first
(warmup) call also merges and packs the weights; the timed calls reuse them, as rollouts between
optimizer steps that touch only the LoRA linears re-merge those alone. With `--compile` a fourth side,
rollout-fast-compiled, runs the fast backend with `compile=True` (align/models/decode_compile.py);
its warmup call also compiles (untimed; the line "compile warmup" gives its time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ modules, also when imported by path

TARGETS = {
    "rollout-hf": 0.9,
    "rollout-fast": 2.5,
    "rollout-fast-compiled": 2.5,
}  # side / generate tokens/s, at least
NEVER_SAMPLED = -1  # an EOS id for `sample` that no sampled token can equal: every row runs to the end


@dataclass
class Timing:
    side: str
    call_s: list[float]
    tokens_per_call: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.call_s)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_call / self.median_s


def left_pad(prompts: list[list[int]], pad_id: int):
    """[B, L] input ids and attention mask, prompts right-aligned (mask from lengths, not from pad)."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids, mask


def time_calls(
    side: str, call: Callable[[], int], warmup: int, repeats: int, sync: Callable[[], None]
) -> Timing:
    """Run `call` (returns the tokens it generated) warmup + repeats times; time the repeats."""
    for _ in range(warmup):
        call()
    times, counts = [], set()
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        counts.add(call())
        sync()
        times.append(time.perf_counter() - t)
    if len(counts) != 1:
        raise RuntimeError(f"{side}: calls generated different token counts {sorted(counts)}")
    return Timing(side, times, counts.pop())


def generate_call(model, prompts: list[list[int]], a: argparse.Namespace, pad_id: int) -> Callable[[], int]:
    import torch

    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(model.device), mask.to(model.device)

    def call() -> int:
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                max_new_tokens=a.max_new_tokens,
                min_new_tokens=a.max_new_tokens,
                temperature=a.temperature,
                top_k=a.top_k,
                top_p=a.top_p,
                pad_token_id=pad_id,
                use_cache=True,
            )
        return int(out[:, ids.shape[1] :].numel())

    return call


def sampling_settings(sample: Callable, a: argparse.Namespace):
    """The `sampling` argument of `align.models.rollout.sample`, built from its own annotation."""
    cls = typing.get_type_hints(sample)["sampling"]
    return cls(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p)


def rollout_call(
    model,
    prompts: list[list[int]],
    a: argparse.Namespace,
    pad_id: int,
    backend: str = "hf",
    compile: bool = False,
) -> Callable[[], int]:
    """`align.models.rollout.sample` on `backend` (ImportError until it exists). The count is batch x
    max_new_tokens: no row can stop early (EOS id -1)."""
    import torch

    from align.models.rollout import sample

    sampling = sampling_settings(sample, a)
    generator = torch.Generator(device=model.device).manual_seed(a.seed)

    def call() -> int:
        with torch.no_grad():
            sample(
                model,
                prompts,
                sampling,
                NEVER_SAMPLED,
                pad_id,
                generator=generator,
                backend=backend,
                compile=compile,
            )
        return len(prompts) * a.max_new_tokens

    return call


def report(timings: list[Timing]) -> str:
    """A table of the sides and, where generate ran, each side's tokens/s ratio to it and target."""
    by = {t.side: t for t in timings}
    gen = by.get("generate")
    lines = [
        "| side | tokens/call | median call (s) | tokens/s | x generate | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    verdicts = []
    for t in timings:
        ratio = t.tokens_per_s / gen.tokens_per_s if gen else None
        target = TARGETS.get(t.side)
        mark = (
            ""
            if ratio is None or target is None
            else f">= {target:g}x: {'met' if ratio >= target else 'MISSED'}"
        )
        lines.append(
            f"| {t.side} | {t.tokens_per_call} | {t.median_s:.3f} | {t.tokens_per_s:.1f} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} | {mark} |"
        )
        if mark:
            verdicts.append(f"{t.side} / generate tokens/s: {ratio:.2f}x (target {mark})")
    return "\n".join(lines + ([""] + verdicts if verdicts else []))


def streamed_bytes(model) -> int:
    """Bytes of weights one decode step must read: every parameter once (a tied embedding is the
    lm_head), less an untied input embedding (a step gathers only its batch's rows of it)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total - (0 if emb.data_ptr() == head.data_ptr() else emb.numel() * emb.element_size())


def median_s(call: Callable[[], object], repeats: int = 5) -> float:
    """Median seconds of `repeats` calls of `call`, after one untimed call."""
    call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_bandwidth(mb: int = 512) -> float:
    """This machine's read rate in bytes/s: summing an `mb` MB fp32 tensor."""
    import torch

    buf = torch.ones(mb * 2**20 // 4)
    return buf.numel() * 4 / median_s(buf.sum)


def gemm_rate(n: int = 2048) -> float:
    """This machine's fp32 GEMM rate in FLOP/s: an n x n x n matmul."""
    import torch

    x, y = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_s(lambda: x @ y)


def ceiling(weight_bytes: int, bandwidth: float, flops: float, batch: int, generate: Timing | None) -> str:
    """Two lower bounds on any fp32 decode step (prefill and sampling not counted): it reads every
    weight once (bytes / bandwidth) and multiplies each by every row (2 x weights x batch FLOPs at
    a large GEMM's rate). The larger one bounds the tokens/s a decode loop could reach here."""
    flop = 2 * (weight_bytes / 4) * batch  # fp32: 4 bytes a weight, a multiply-add per row
    read_s, math_s = weight_bytes / bandwidth, flop / flops
    floor_s = max(read_s, math_s)
    line = (
        f"ceiling: a decode step reads {weight_bytes / 1e6:.0f} MB of weights ({bandwidth / 1e9:.1f} GB/s "
        f"here: a 512 MB sum, {read_s * 1e3:.1f} ms) and does {flop / 1e9:.2f} GFLOP "
        f"({flops / 1e9:.0f} GFLOP/s here: a 2048^3 matmul, {math_s * 1e3:.1f} ms): every step >= "
        f"{floor_s * 1e3:.1f} ms, <= {batch / floor_s:.0f} tokens/s at batch {batch} before prefill"
    )
    if generate is not None:
        line += f" ({batch / floor_s / generate.tokens_per_s:.2f}x this run's generate)"
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-k", type=int, default=0, help="0: off")
    p.add_argument("--top-p", type=float, default=1.0, help="1.0: off")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per side")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--compile", action="store_true", help="also time the fast side with its decode step compiled"
    )
    p.add_argument(
        "--only",
        choices=["generate", "rollout", "rollout-hf", "rollout-fast"],
        default=None,
        help="rollout: both rollout backends",
    )
    a = p.parse_args(argv)
    import torch
    from records import build_prompts

    from align.models.load import load_model, load_tokenizer
    from align.recipe import ModelConfig

    if a.threads:
        torch.set_num_threads(a.threads)
    spec = ModelConfig(a.model, "float32")
    tok = load_tokenizer(spec)
    model = load_model(spec, seed=a.seed).to(a.device).eval()
    prompts = [ids for _, ids in build_prompts(a.model, a.batch_size)]
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    timings = []
    missing = None
    sides = {None: ["generate", "rollout-hf", "rollout-fast"], "rollout": ["rollout-hf", "rollout-fast"]}
    chosen = sides.get(a.only, [a.only])
    if a.compile and "rollout-fast" in chosen:
        chosen = [*chosen, "rollout-fast-compiled"]
    notes = []
    for side in chosen:
        try:
            if side == "generate":
                call = generate_call(model, prompts, a, tok.pad_token_id)
            else:
                backend = "fast" if side == "rollout-fast-compiled" else side.removeprefix("rollout-")
                call = rollout_call(
                    model, prompts, a, tok.pad_token_id, backend=backend, compile=side.endswith("compiled")
                )
        except ImportError as e:
            missing = (
                f"align.models.rollout is not importable yet ({type(e).__name__}: {e}); only generate ran"
            )
            continue
        torch.manual_seed(a.seed)
        if side == "rollout-fast-compiled":  # the first call compiles: untimed, reported
            t = time.perf_counter()
            call()
            notes.append(f"compile warmup (first compiled call, untimed): {time.perf_counter() - t:.1f} s")
        timings.append(time_calls(side, call, a.warmup, a.repeats, sync))
    lens = [len(p) for p in prompts]
    print(
        f"command: python bench/rollout_vs_generate.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    print(
        f"setup: {a.model}, fp32, {a.device}, {torch.get_num_threads()} torch threads, batch {a.batch_size} "
        f"prompts ({min(lens)}-{max(lens)} tokens, left-padded) x {a.max_new_tokens} new tokens, temperature "
        f"{a.temperature}, top-k {a.top_k}, top-p {a.top_p}, {a.warmup} warmup + {a.repeats} timed calls, torch "
        f"{torch.__version__}"
    )
    print()
    print(report(timings))
    if a.device == "cpu":
        gen = next((t for t in timings if t.side == "generate"), None)
        notes.append(ceiling(streamed_bytes(model), read_bandwidth(), gemm_rate(), a.batch_size, gen))
    for note in notes:
        print(note)
    if missing:
        print(missing)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
