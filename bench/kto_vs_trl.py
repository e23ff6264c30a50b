"""Benchmark: align's KTO training path vs TRL 1.16's KTOTrainer, same model, data and settings.

    python bench/kto_vs_trl.py                                  # embedded SmolLM2-135M-Instruct, CPU
    python bench/kto_vs_trl.py --model tiny-smollm2 --steps 2   # smoke run

Each side trains in its own subprocess (peak RSS per side) and reports JSON to the parent.

* ours: `align.train.run` with `method: kto` (the real path: data layer, packed layout,
  adapter-off reference, loop). Step ends are observed by wrapping `align.engine.loop.write_metrics`.
* TRL: `KTOTrainer.train()`, a callback recording step ends, losses and TRL's token counts.

Made equal on purpose: the bundled thumbs data `align_thumbs_v1` (the same records, in our
BatchPlan's epoch-0 order; TRL reads sequentially, as it must for its KL rows), model and fp32,
LoRA (all-linear, dropout 0), batch size, max_length, AdamW at a constant lr, grad clip 1.0, β,
λ_D / λ_U, no gradient checkpointing or autocast, no eval or checkpoints, same thread count; the
first `--warmup` steps are untimed. The KL rows are made equal too: TRL pairs record k of a batch
with record k-1's completion; for the bench only, our fixed partners (align/data/batches.py:
kl_partners) are replaced by that same rotation, so both sides compute the same loss.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpo_vs_trl import run_side


@dataclass
class Config:
    model: str = "smollm2-135m-instruct"
    steps: int = 8
    warmup: int = 1
    batch_size: int = 4
    max_length: int = 512
    lr: float = 5e-4
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.65
    seed: int = 0
    threads: int | None = None
    records: str = ""
    workdir: str = ""


@dataclass
class Side:
    name: str
    ends: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    peak_rss_gib: float = 0.0


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_config(cfg: Config):
    """The DPO bench's settings object for the knobs both benches share (recipe, TRL arguments)."""
    from peers import BenchConfig

    return BenchConfig(
        model=cfg.model,
        steps=cfg.steps,
        warmup=cfg.warmup,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        lr=cfg.lr,
        beta=cfg.beta,
        seed=cfg.seed,
        records=cfg.records,
        workdir=cfg.workdir,
    )


def order(cfg: Config, n: int) -> list[int]:
    from align.data.batches import BatchPlan

    return BatchPlan(n, cfg.batch_size, 1, 1, cfg.seed).order(0)


def build_records(path: Path) -> int:
    from align.data.cards import load_card, load_card_records

    records, _ = load_card_records(load_card("align_thumbs_v1"))
    rows = [{"prompt": list(r.prompt), "completion": list(r.completion), "label": r.label} for r in records]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def run_ours(cfg: Config) -> Side:
    import dataclasses

    from peers import recipe

    import align.engine.loop
    import align.methods.kto
    import align.train
    from align.methods import check_recipe
    from align.recipe import validate

    side = Side("ours")
    dpo = recipe(bench_config(cfg))
    kto = dataclasses.replace(
        dpo,
        method="kto",
        desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
        data=dataclasses.replace(dpo.data, format="unpaired"),
    )
    validate(kto, "bench")
    check_recipe(kto, "bench")

    def rotation(n: int, seed: int) -> list[int]:  # TRL's KL rows: record k of a batch <- record k-1
        o, b = order(cfg, n), cfg.batch_size
        partner = list(range(n))
        for start in range(0, n - n % b, b):
            for k in range(b):
                partner[o[start + k]] = o[start + (k - 1) % b]
        return partner

    collate, write = align.methods.kto.collate_unpaired, align.engine.loop.write_metrics

    def counting(examples, kl, pad, max_length, pack_tokens=None):
        batch = collate(examples, kl, pad, max_length, pack_tokens=pack_tokens)
        side.tokens.append(int(batch.attention_mask[: len(examples)].sum()))  # records' own rows
        return batch

    def timed(parts, step, metrics):
        if "train/loss" in metrics:
            side.ends.append(time.perf_counter())
            side.losses.append(float(metrics["train/loss"]))
        write(parts, step, metrics)

    align.methods.kto.kl_partners, align.methods.kto.collate_unpaired, align.engine.loop.write_metrics = (
        rotation,
        counting,
        timed,
    )
    align.train.run(kto, resume=False)
    side.peak_rss_gib = _rss()
    return side


def run_trl(cfg: Config) -> Side:
    from datasets import Dataset
    from peers import trl_args
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import KTOConfig, KTOTrainer

    from align.models.load import load_model, load_tokenizer
    from align.recipe import ModelConfig

    side = Side("trl")
    spec = ModelConfig(cfg.model, "float32")
    rows = [json.loads(line) for line in Path(cfg.records).read_text().splitlines()]
    dataset = Dataset.from_list([rows[i] for i in order(cfg, len(rows))])

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            side.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                side.losses.append(float(logs["loss"]))
                side.tokens.append(int(logs.get("num_tokens", 0)))

    shared = trl_args(bench_config(cfg))  # the DPO bench's TrainingArguments, precision pinned
    shared.pop("loss_type")  # DPO's; KTO's default "kto" is the one compared
    args = KTOConfig(
        **shared, desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = KTOTrainer(
        model=load_model(spec, seed=cfg.seed),
        args=args,
        train_dataset=dataset,
        processing_class=load_tokenizer(spec),
        peft_config=lora,
        callbacks=[Recorder()],
    )
    trainer.train()
    side.tokens = [b - a for a, b in zip([0, *side.tokens[:-1]], side.tokens)]  # TRL's count is cumulative
    side.peak_rss_gib = _rss()
    return side


def summarize(s: dict[str, Any], cfg: Config) -> dict[str, float]:
    w, n = cfg.warmup, cfg.steps
    ends = s["ends"]
    if len(ends) < w + n or len(s["losses"]) < w + n:
        raise RuntimeError(f"{s['name']}: recorded {len(ends)} steps, expected {w + n}")
    start = ends[w - 1] if w else ends[0] - (ends[1] - ends[0])
    elapsed = ends[w + n - 1] - start
    steps = [b - a for a, b in zip([start, *ends[w : w + n - 1]], ends[w : w + n])]
    return {
        "records_per_s": n * cfg.batch_size / elapsed,
        "tokens_per_s": sum(s["tokens"][w : w + n]) / elapsed,
        "median_step_s": statistics.median(steps),
        "peak_rss_gib": s["peak_rss_gib"],
        "mean_loss": statistics.fmean(s["losses"][w : w + n]),
    }


def table(ours: dict[str, float], trl: dict[str, float]) -> str:
    rows = [
        ("records/s", "records_per_s", "{:.3f}"),
        ("real tokens/s (records' own rows)", "tokens_per_s", "{:.1f}"),
        ("median step (s)", "median_step_s", "{:.2f}"),
        ("peak RSS (GiB)", "peak_rss_gib", "{:.2f}"),
        ("mean loss (timed steps)", "mean_loss", "{:.4f}"),
    ]
    lines = ["| | align | TRL KTOTrainer | align / TRL |", "|---|---:|---:|---:|"]
    for label, key, fmt in rows:
        ratio = ours[key] / trl[key] if trl[key] else float("nan")
        lines.append(f"| {label} | {fmt.format(ours[key])} | {fmt.format(trl[key])} | {ratio:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--model", default=d.model)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--child-config", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        cfg = Config(**json.loads(Path(a.child_config).read_text()))
        import torch

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        side = run_ours(cfg) if a.child == "ours" else run_trl(cfg)
        Path(a.child_out).write_text(json.dumps(asdict(side)))
        return
    cfg = Config(a.model, a.steps, a.warmup, a.batch_size, a.max_length, threads=a.threads)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kto-bench-") as tmp:
        cfg.workdir, cfg.records = tmp, str(Path(tmp) / "records.jsonl")
        n = build_records(Path(cfg.records))
        (Path(tmp) / "cfg.json").write_text(json.dumps(asdict(cfg)))
        for side in ("ours", "trl"):
            res, err = run_side(side, Path(tmp) / "cfg.json", Path(tmp), script=__file__)
            if res is None:
                raise SystemExit(f"[bench] {side} failed: {err}")
            results[side] = res
    s = {k: summarize(v, cfg) for k, v in results.items()}
    print(f"command: python bench/kto_vs_trl.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"setup: {cfg.model}, LoRA r=16 all-linear, fp32, cpu, batch {cfg.batch_size} records, max_length "
        f"{cfg.max_length}, {n} records (align_thumbs_v1), {cfg.warmup} warmup + {cfg.steps} timed steps, "
        f"beta={cfg.beta}, lambda_D={cfg.desirable_weight}, lambda_U={cfg.undesirable_weight}"
    )
    for k, v in results.items():
        print(f"{k}: step losses {[round(x, 4) for x in v['losses']]}")
    print()
    print(table(s["ours"], s["trl"]))


if __name__ == "__main__":
    main()
