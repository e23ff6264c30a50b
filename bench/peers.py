"""The sides of bench/dpo_vs_trl.py, each run in its own child process: ours, TRL, TRL + Liger.

Each side records, per optimizer step: the step's end time, its loss and its work (real sequence
lengths and scored completion tokens, from the step's own batch: see bench/flops.py), then peak
memory (RSS; on CUDA also `torch.cuda.max_memory_allocated`, its counter reset just before the first
step). On CUDA step ends are taken after a device synchronize.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flops import Work


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
    precision: str = "fp32"  # fp32 | bf16: ours `precision:`, TRL `bf16=`; bf16 stores the base in bf16
    threads: int | None = None
    layout: str = "auto"  # ours: train.layout (auto = packed pairs under a block mask)
    records: str = ""  # set by the parent: the JSONL both sides train on
    model_path: str = ""  # set by the parent: `model`, or a view of it with the SmolLM2 tokenizer added
    workdir: str = ""

    @property
    def load_name(self) -> str:
        return self.model_path or self.model


@dataclass
class SideResult:
    name: str
    step_end_times: list[float] = field(default_factory=list)  # perf_counter at the end of each step
    step_work: list[dict[str, int]] = field(default_factory=list)  # flops.Work of each step's batch
    step_losses: list[float] = field(default_factory=list)
    n_train: int = 0
    trainable_params: int = 0
    threads: int = 0
    peak_rss_gib: float = 0.0
    peak_gpu_gib: float | None = None  # CUDA only
    device_name: str = "cpu"
    numerics: str = ""  # what actually ran: autocast, base and LoRA weight dtypes
    setup_s: float = 0.0  # process start to first step start (imports, loading, tokenization)

    def tokens(self) -> list[int]:
        return [w["tokens"] for w in self.step_work]


# -- device helpers --------------------------------------------------------------------------------


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _on_cuda(cfg: BenchConfig) -> bool:
    return cfg.device == "cuda"


def _reset_peak(cfg: BenchConfig) -> None:
    if _on_cuda(cfg):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _sync(cfg: BenchConfig) -> None:
    if _on_cuda(cfg):
        import torch

        torch.cuda.synchronize()


def _finish(res: SideResult, cfg: BenchConfig) -> SideResult:
    res.peak_rss_gib = _peak_rss_gib()
    if _on_cuda(cfg):
        import torch

        res.peak_gpu_gib = torch.cuda.max_memory_allocated() / 2**30
        res.device_name = torch.cuda.get_device_name()
    return res


def _numerics(model, mixed_precision: str) -> str:
    """Autocast and stored dtypes as they are in the trained model (not as configured)."""
    dtypes = lambda lora: sorted(
        {str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters() if ("lora_" in n) == lora}
    )
    return f"autocast {mixed_precision}, base {'/'.join(dtypes(False))}, LoRA {'/'.join(dtypes(True))}"


def _work(attention_mask, completion_mask) -> dict[str, int]:
    """The Work of a batch of right-padded rows (one sequence per row), computed on the host."""
    lengths = attention_mask.sum(dim=1).tolist()
    return asdict(Work.of([int(n) for n in lengths], int(completion_mask.sum())))


# -- ours ------------------------------------------------------------------------------------------


def recipe(cfg: BenchConfig):
    """Our Recipe for the bench settings (validated)."""
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

    r = Recipe(
        method="dpo",
        beta=cfg.beta,
        output_dir=str(Path(cfg.workdir) / "ours"),
        seed=cfg.seed,
        cpu=cfg.device == "cpu",
        precision=cfg.precision,
        # dtype auto: the precision decides the frozen base's storage (bf16 -> bfloat16)
        model=ModelConfig(name=cfg.load_name, dtype="auto", gradient_checkpointing=False),
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
    validate(r, "bench")
    return r


def run_ours(cfg: BenchConfig, t_start: float) -> SideResult:
    """`align.train.run`, observed through two wrappers: the loop entry (start of step 1: setup time,
    peak-memory reset, and a counting wrapper on the loop's collate) and `align.engine.loop.write_metrics`
    (called once per optimizer step with log_every=1: step end, loss, the step's work)."""
    import torch

    import align.engine.loop
    import align.train

    res = SideResult("ours", threads=torch.get_num_threads())
    loop_train, write_metrics = align.train.train, align.engine.loop.write_metrics
    pending: list[dict[str, int]] = []

    def bench_train(parts, state):
        collate = parts.collate

        def counting_collate(idx):
            batch = collate(idx)
            pending.append(_work(batch.attention_mask, batch.loss_mask))
            return batch

        parts.collate = counting_collate
        _reset_peak(cfg)
        res.setup_s = time.perf_counter() - t_start
        return loop_train(parts, state)

    def timed_write_metrics(parts, step, metrics):
        if "train/loss" in metrics:
            _sync(cfg)
            res.step_end_times.append(time.perf_counter())
            res.step_losses.append(float(metrics["train/loss"]))
            res.step_work.append({k: sum(w[k] for w in pending) for k in ("tokens", "attn_pairs", "scored")})
            pending.clear()
        write_metrics(parts, step, metrics)

    align.train.train = bench_train
    align.engine.loop.write_metrics = timed_write_metrics
    summary = align.train.run(recipe(cfg), resume=False)
    res.n_train = summary["examples"]["train"]
    res.trainable_params = sum(p.numel() for p in summary["peft_model"].parameters() if p.requires_grad)
    res.numerics = _numerics(summary["peft_model"], summary["accelerator"].mixed_precision)
    return _finish(res, cfg)


# -- TRL -------------------------------------------------------------------------------------------


def trl_args(cfg: BenchConfig, liger: bool = False) -> dict[str, Any]:
    """DPOConfig keyword arguments. Precision is pinned both ways: TRL 1.16 defaults `bf16=True`
    (transformers then refuses it on a CPU-only machine unless `use_cpu`, and silently autocasts on a GPU).
    Liger (deprecated in TRL 1.16 but still honoured) patches the decoder layers' RMSNorm, RoPE and
    SwiGLU when training starts; TRL forces its fused-linear cross-entropy off, keeping its own LM head."""
    return dict(
        output_dir=str(Path(cfg.workdir) / ("trl_liger" if liger else "trl")),
        report_to="none",
        use_cpu=cfg.device == "cpu",
        bf16=cfg.precision == "bf16",
        fp16=False,
        tf32=False,  # torch's default for fp32 matmuls, stated: both sides run true fp32
        use_liger_kernel=liger,
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


def run_trl(cfg: BenchConfig, t_start: float, liger: bool = False) -> SideResult:
    """`DPOTrainer.train()` with a callback (setup time, peak-memory reset, step ends, losses) and a
    wrapper on `compute_loss` that reads each step's batch. The base is loaded in the compute dtype
    (bf16 for bf16: PEFT keeps the LoRA weights in fp32), as ours stores it."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from align.data.batches import BatchPlan
    from align.models.load import load_model, load_tokenizer
    from align.recipe import ModelConfig

    res = SideResult("trl_liger" if liger else "trl", threads=torch.get_num_threads())
    spec = ModelConfig(cfg.load_name, "bfloat16" if cfg.precision == "bf16" else "float32")
    tok = load_tokenizer(spec)
    model = load_model(spec, seed=cfg.seed)
    rows = [json.loads(line) for line in Path(cfg.records).read_text().splitlines()]
    # Our loop's epoch-0 order (BatchPlan), read sequentially by TRL: both sides see the same batches.
    order = BatchPlan(len(rows), cfg.batch_size, 1, 1, cfg.seed).order(0)
    dataset = Dataset.from_list([rows[i] for i in order])

    class Recorder(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0 and not res.setup_s:
                _reset_peak(cfg)
                res.setup_s = time.perf_counter() - t_start

        def on_step_end(self, args, state, control, **kwargs):
            _sync(cfg)
            res.step_end_times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                res.step_losses.append(float(logs["loss"]))

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=DPOConfig(**trl_args(cfg, liger)),
        train_dataset=dataset,
        processing_class=tok,
        peft_config=lora,
        callbacks=[Recorder()],
    )
    compute_loss = trainer.compute_loss

    def recording_compute_loss(model, inputs, *args, **kwargs):
        if model.training:
            res.step_work.append(_work(inputs["attention_mask"].cpu(), inputs["completion_mask"].cpu()))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording_compute_loss
    res.n_train = len(trainer.train_dataset)
    res.trainable_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.train()
    res.numerics = _numerics(trainer.model, trainer.accelerator.mixed_precision)
    return _finish(res, cfg)


SIDES = {
    "ours": ("align", run_ours),
    "trl": ("TRL DPOTrainer", run_trl),
    "trl_liger": ("TRL DPOTrainer + Liger", lambda cfg, t: run_trl(cfg, t, liger=True)),
}


def child_main(side: str, cfg_path: str, out_path: str) -> None:
    t_start = time.perf_counter()
    cfg = BenchConfig(**json.loads(Path(cfg_path).read_text()))
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    res = SIDES[side][1](cfg, t_start)
    Path(out_path).write_text(json.dumps(asdict(res)))
