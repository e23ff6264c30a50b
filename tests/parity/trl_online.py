"""Drive TRL 1.16's GRPOTrainer / RLOOTrainer loss and advantage code on batches we choose.

A real trainer is built around the tiny model (LoRA, so the reference is the adapter switched off
and no second model is loaded); then its per-token log-prob forward and its reward call are
replaced by functions returning our tensors. What runs is TRL's own `_compute_loss` and
`_generate_and_score_completions` arithmetic (ratios, clipping, KL, normalisation, baselines),
fed exactly the log-probs, masks and rewards our objectives get.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig

from align.models.load import load_tokenizer, tiny_model
from align.recipe import ModelConfig

# fp32 on CPU everywhere (TRL's configs default to bf16, which autocasts where a GPU is present).
TRL_CPU_FP32 = dict(use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no", seed=0)
PROMPTS = ["What is 2+2?", "Name a color.", "Say hi.", "Spell cat."]
# Sampling bias on EOS (id 2) so that the random tiny model ends some completions early, giving
# completion masks with padding: e^10 / (e^10 + 49151 others) ≈ 0.3 per step.
EARLY_EOS = {"sequence_bias": {(2,): 10.0}}


def _zero_reward(completions: list, **kwargs: Any) -> list[float]:
    return [0.0] * len(completions)


def build_trainer(trainer_cls: type, config_cls: type, tmp: Path, **config: Any):
    """A TRL online trainer on the tiny model with a LoRA adapter; `config` overrides its args."""
    args = config_cls(output_dir=str(tmp), **{"max_completion_length": 4, **TRL_CPU_FP32, **config})
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = trainer_cls(
        model=tiny_model(seed=0),
        reward_funcs=_zero_reward,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS]),
        processing_class=load_tokenizer(ModelConfig("tiny-smollm2")),
        peft_config=lora,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def feed_logps(trainer, make: Callable[[int, int, int], torch.Tensor]) -> list[torch.Tensor]:
    """Make TRL's per-token log-prob forward return `make(call, rows, columns)`; returns the list
    of tensors it handed out (call 0, 1, ...), entropies zero."""
    handed: list[torch.Tensor] = []

    def forward(model, input_ids, attention_mask, logits_to_keep, *args: Any, **kwargs: Any):
        logp = make(len(handed), input_ids.shape[0], logits_to_keep)
        handed.append(logp)
        return logp, torch.zeros_like(logp.detach()), None

    trainer._get_per_token_logps_and_entropies = forward
    return handed


def feed_rewards(trainer, rewards: torch.Tensor) -> None:
    """Make TRL's reward call return `rewards` [N] (one reward function)."""
    trainer._calculate_rewards = lambda inputs, prompts, completions, ids: rewards.float().unsqueeze(1)


def generation_batch(group_size: int, groups: int) -> list[dict[str, str]]:
    """TRL's layout: each prompt repeated `group_size` times, consecutively."""
    return [{"prompt": PROMPTS[g]} for g in range(groups) for _ in range(group_size)]


def loss_inputs(
    mask: torch.Tensor, advantages: torch.Tensor, **extra: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The tensors `_compute_loss` reads besides log-probs (prompt ids are unused: logps are fed)."""
    n, t = mask.shape
    return {
        "prompt_ids": torch.ones(n, 1, dtype=torch.long),
        "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.ones(n, t, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": advantages,
        **extra,
    }


def random_batch(seed: int, n: int = 6, t: int = 5) -> dict[str, torch.Tensor]:
    """fp32 per-token log-probs (policy, old, ref), a right-padded mask (lengths 1..t) and advantages.

    Old and ref differ from the policy by up to ±0.3 nats per token, so some token ratios fall
    outside [0.8, 1.2] and clipping is exercised."""
    g = torch.Generator().manual_seed(seed)
    logp = -3 * torch.rand(n, t, generator=g)
    old = logp + 0.6 * (torch.rand(n, t, generator=g) - 0.5)
    ref = logp + 0.6 * (torch.rand(n, t, generator=g) - 0.5)
    lengths = torch.tensor([t, 1, 3, t, 2, 4])[torch.arange(n) % 6].clamp(max=t)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    adv = torch.randn(n, generator=g)
    return {"logp": logp, "old": old, "ref": ref, "mask": mask, "adv": adv}
