"""The TRL side of bench/ppo_vs_trl.py: TRL 1.12.0's PPOTrainer, run INSIDE its own venv.

TRL 1.12.0 is the last release with a PPO trainer (`trl.experimental.ppo`); it needs its own venv:

    python3 -m venv /work/venvs/trl112
    /work/venvs/trl112/bin/pip install torch==2.13.0     # first: the CPU build (a looser pin pulls CUDA)
    /work/venvs/trl112/bin/pip install trl==1.12.0 peft  # transformers 5.24.0, peft 0.21.2, accelerate 1.15.0

This file imports neither align nor the other bench modules (neither is installed in that venv): the
harness writes the settings (`PPOBenchConfig`, JSON) and the prompts as token ids (JSONL, one
`{"input_ids": [...]}` per line, rendered by our data layer and the model's chat template), and
reads one JSON result (`--child-out`, also printed as the last stdout line).

The peer as TRL designs it: the policy is the base with a LoRA adapter (`peft_config`), the reference
is that policy with the adapter disabled (TRL's PEFT path: no copy), the value model and the reward
model are two more full `AutoModelForSequenceClassification` (num_labels=1) copies of the same base;
TRL trains the value model whole (all its weights in AdamW). fp32, no gradient checkpointing, one
minibatch = the whole rollout batch (`num_mini_batches=1`), `num_ppo_epochs` from the settings,
`response_length` new tokens sampled at `temperature`, stop at EOS (`stop_token="eos"`).

One change to TRL's inputs, for correctness: TRL's PPO builds every mask as `token != pad`, and
SmolLM2's pad = eos = <|im_end|> also closes every chat turn, so its prompts would lose each turn end.
The tokenizer's pad is therefore set to <|endoftext|> (id 0), which no rendered chat prompt holds
(checked); responses are still truncated at <|im_end|>.

Timing: a step is split, by light wrappers on the trainer module's own functions (benchmark only):
rollout = `batch_generation` (sampling with the KV cache); scoring = from there to the first forward
with gradients (policy log-probs from the sampling logits, the reference, value and reward forwards,
rewards, GAE: ref_s / value_s / reward_s say how much were the three forwards); update = from there to
`on_step_end` (the PPO epochs). A step's wall time runs from its rollout start to the next one (the
last: to `on_train_end`); `other_s` is what the three phases leave out (logging, gc).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PHASES = ("rollout_s", "scoring_s", "update_s")


@dataclass
class PPOBenchConfig:
    """Settings both sides of the PPO bench read (the harness writes them as JSON)."""

    model: str = "smollm2-135m-instruct"  # the name shown; the peer loads `model_dir`
    model_dir: str = ""  # set by the harness: config + safetensors + tokenizer
    prompts: str = ""  # set by the harness: JSONL of {"input_ids": [...]}, the peer's prompts in order
    steps: int = 3  # timed PPO steps (rollout + scoring + update) per side
    warmup: int = 1  # untimed steps before those
    batch_size: int = 8  # prompts per rollout batch
    max_new_tokens: int = 64
    epochs: int = 1  # PPO epochs over each rollout batch
    lr: float = 1e-5
    lora_r: int = 16
    lora_alpha: int = 32
    temperature: float = 0.7
    kl_coef: float = 0.05
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    workdir: str = ""
    # ours only (the peer ignores them): the records JSONL, where the reward comes from, recipe overrides
    records: str = ""  # set by the harness: the same prompts, as pairwise records our data layer reads
    reward: str = "run"  # run: a reward run trained first (untimed), as TRL scores with a model; function
    reward_function: str = ""  # for reward = function
    reward_run: str = ""  # set by the harness for reward = run
    ours_set: list[str] = field(default_factory=list)
    ours_micro_batch: int = 2  # ours: rows per update forward (rollout batch = this x accumulation)

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


@dataclass
class StepTimes:
    """One PPO step as a side measured it; unmeasured parts stay None."""

    step_s: float = 0.0
    rollout_s: float | None = None
    scoring_s: float | None = None
    update_s: float | None = None
    ref_s: float | None = None
    value_s: float | None = None
    reward_s: float | None = None
    gen_tokens: int | None = None  # batch x decoded positions (what sampling ran)
    response_tokens: int | None = None  # real response tokens (through the first EOS)


@dataclass
class PeerResult:
    name: str = "trl"
    steps: list[StepTimes] = field(default_factory=list)
    peak_rss_gib: float = 0.0
    peak_gpu_gib: float | None = None
    setup_s: float = 0.0
    threads: int = 0
    trainable_params: dict[str, int] = field(default_factory=dict)  # per trained model
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def read_prompts(path: str, n: int) -> list[list[int]]:
    """The first `n` prompts (token ids) of the harness's JSONL; fewer is an error naming the file."""
    rows = [json.loads(line)["input_ids"] for line in Path(path).read_text().splitlines() if line.strip()]
    if len(rows) < n:
        raise ValueError(f"{path}: {len(rows)} prompts, the bench needs {n} (steps x batch size)")
    return rows[:n]


def response_tokens(responses, stop_id: int | None) -> int:
    """Real tokens of [B, T] sampled responses: through each row's first `stop_id`, else all T."""
    import torch

    if stop_id is None:
        return int(responses.numel())
    hit = responses == stop_id
    full = torch.full((responses.shape[0],), responses.shape[1], dtype=torch.long)
    return int(torch.where(hit.any(1), hit.long().argmax(1) + 1, full).sum())


class PhaseClock:
    """Marks of TRL's phases inside `PPOTrainer.train`, from the wrappers `instrument` installs."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.starts: list[float] = []  # rollout start of each step
        self.steps: list[StepTimes] = []
        self.mark = 0.0
        self.phase = ""

    def begin_step(self) -> None:
        self.sync()
        now = time.perf_counter()
        if self.steps:
            self.steps[-1].step_s = now - self.starts[-1]
        self.starts.append(now)
        self.steps.append(StepTimes(ref_s=0.0, value_s=0.0, reward_s=0.0))
        self.mark, self.phase = now, "rollout"

    def end_phase(self, name: str, following: str) -> None:
        self.sync()
        now = time.perf_counter()
        setattr(self.steps[-1], name, now - self.mark)
        self.mark, self.phase = now, following

    def add(self, name: str, seconds: float) -> None:
        setattr(self.steps[-1], name, getattr(self.steps[-1], name) + seconds)

    def finish(self) -> None:
        self.sync()
        if self.steps:
            self.steps[-1].step_s = time.perf_counter() - self.starts[-1]


def instrument(ppo_mod, clock: PhaseClock, trainer_ref: dict[str, Any], stop_id: int | None) -> None:
    """Wrap the module-level functions `PPOTrainer.train` calls by name (benchmark only)."""
    import torch

    batch_generation, forward, get_reward = ppo_mod.batch_generation, ppo_mod.forward, ppo_mod.get_reward

    def timed_batch_generation(model, queries, *args, **kwargs):
        clock.begin_step()
        query_responses, logits = batch_generation(model, queries, *args, **kwargs)
        clock.end_phase("rollout_s", "scoring")
        responses = query_responses[:, queries.shape[1] :]
        clock.steps[-1].gen_tokens = int(responses.numel())
        clock.steps[-1].response_tokens = response_tokens(responses, stop_id)
        return query_responses, logits

    def timed(name, fn, *args):
        clock.sync()
        t = time.perf_counter()
        out = fn(*args)
        clock.sync()
        clock.add(name, time.perf_counter() - t)
        return out

    def timed_forward(model, query_responses, pad_token_id):
        if torch.is_grad_enabled():  # the PPO epochs (policy + value under autograd)
            if clock.phase == "scoring":
                clock.end_phase("scoring_s", "update")
            return forward(model, query_responses, pad_token_id)
        return timed("ref_s", forward, model, query_responses, pad_token_id)  # the adapter-off reference

    def timed_get_reward(model, query_responses, pad_token_id, context_length):
        name = "reward_s" if model is trainer_ref["trainer"].reward_model else "value_s"
        return timed(name, get_reward, model, query_responses, pad_token_id, context_length)

    ppo_mod.batch_generation, ppo_mod.forward, ppo_mod.get_reward = (
        timed_batch_generation,
        timed_forward,
        timed_get_reward,
    )


def trl_config_kwargs(cfg: PPOBenchConfig) -> dict[str, Any]:
    """PPOConfig keyword arguments: precision and checkpointing pinned (PPOConfig defaults bf16 on and
    gradient checkpointing on), one minibatch per rollout batch, no sample generations or saving."""
    return dict(
        output_dir=str(Path(cfg.workdir) / "trl_ppo"),
        report_to="none",
        use_cpu=cfg.device == "cpu",
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=cfg.seed,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        local_rollout_forward_batch_size=cfg.batch_size,
        total_episodes=cfg.total_steps * cfg.batch_size,
        num_ppo_epochs=cfg.epochs,
        response_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        stop_token="eos",
        kl_coef=cfg.kl_coef,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        num_sample_generations=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def run_trl(cfg: PPOBenchConfig, t_start: float) -> PeerResult:
    import torch
    import trl.experimental.ppo.ppo_trainer as ppo_mod
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    cuda = cfg.device == "cuda"
    res = PeerResult(threads=torch.get_num_threads(), versions=versions())
    tok = AutoTokenizer.from_pretrained(cfg.model_dir)
    tok.padding_side = "left"  # TRL appends responses after the prompt columns
    pad_id = tok.convert_tokens_to_ids("<|endoftext|>")
    if tok.convert_ids_to_tokens(pad_id) != "<|endoftext|>" or pad_id == tok.eos_token_id:
        raise ValueError(f"{cfg.model_dir}: no <|endoftext|> token distinct from EOS to pad TRL's PPO with")
    tok.pad_token = "<|endoftext|>"
    prompts = read_prompts(cfg.prompts, cfg.total_steps * cfg.batch_size)
    if any(pad_id in p for p in prompts):
        raise ValueError(f"{cfg.prompts}: a prompt holds <|endoftext|> (id {pad_id}), the peer's pad")
    res.notes.append(f"TRL pad = <|endoftext|> (id {pad_id}), eos = {tok.eos_token} (id {tok.eos_token_id})")

    def load(cls, **kw):
        torch.manual_seed(cfg.seed)  # the score heads are new: seeded
        return cls.from_pretrained(cfg.model_dir, dtype=torch.float32, use_safetensors=True, **kw)

    policy = load(AutoModelForCausalLM)
    value = load(AutoModelForSequenceClassification, num_labels=1)
    reward = load(AutoModelForSequenceClassification, num_labels=1)
    for m in (value, reward):
        m.config.pad_token_id = pad_id
    reward.requires_grad_(False)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    clock = PhaseClock(torch.cuda.synchronize if cuda else lambda: None)

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            res.setup_s = time.perf_counter() - t_start

        def on_step_end(self, args, state, control, **kwargs):
            clock.end_phase("update_s", "")

        def on_train_end(self, args, state, control, **kwargs):
            clock.finish()

    trainer_ref: dict[str, Any] = {}
    instrument(ppo_mod, clock, trainer_ref, tok.eos_token_id)
    trainer = PPOTrainer(
        args=PPOConfig(**trl_config_kwargs(cfg)),
        processing_class=tok,
        model=policy,
        ref_model=None,
        reward_model=reward,
        value_model=value,
        train_dataset=Dataset.from_list([{"input_ids": p} for p in prompts]),
        peft_config=lora,
        callbacks=[Recorder()],
    )
    trainer_ref["trainer"] = trainer
    res.trainable_params = {
        "policy (LoRA)": sum(p.numel() for p in trainer.model.policy.parameters() if p.requires_grad),
        "value (full model)": sum(
            p.numel() for p in trainer.model.value_model.parameters() if p.requires_grad
        ),
    }
    trainer.train()
    res.steps = clock.steps
    res.peak_rss_gib = peak_rss_gib()
    if cuda:
        res.peak_gpu_gib = torch.cuda.max_memory_allocated() / 2**30
    return res


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("torch", "transformers", "peft", "accelerate", "trl"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--child", choices=["trl"], default="trl", help="the side (for bench/dpo_vs_trl.py: run_side)"
    )
    p.add_argument("--child-config", required=True, help="PPOBenchConfig as JSON (written by the harness)")
    p.add_argument("--child-out", default=None, help="also write the JSON result here")
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    cfg = PPOBenchConfig(**json.loads(Path(a.child_config).read_text()))
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    line = json.dumps(asdict(run_trl(cfg, t_start)))
    if a.child_out:
        Path(a.child_out).write_text(line)
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
