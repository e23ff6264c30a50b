"""What a method hands the engine: its prepared module, optimizer, batches, step and evaluation.

A method (align/methods/) builds a `Wired` from a recipe and the loaded pieces; `align.train.run`
turns it into the loop's `LoopParts`. The optimizer and schedule are the same for every method.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from align.engine.zero import keep_param_order
from align.recipe import Recipe


@dataclass
class Wired:
    """What a method's wiring hands the loop and the end of the run."""

    model: torch.nn.Module  # Accelerate-prepared: owns the trainable parameters
    optimizer: Any
    scheduler: Any
    collate: Any
    step_fn: Any
    eval_fn: Callable[[], dict[str, float]]
    before_fn: Callable[[], dict[str, float]]  # held-out metrics before step 1
    save_final: Callable[[Path], Any]
    phase: Any = None
    extra_state: Any = None
    load_extra_state: Any = None


def lr_schedule(r: Recipe, optimizer, total: int):
    from transformers import get_scheduler

    warmup = (
        r.optim.warmup_steps if r.optim.warmup_steps is not None else math.ceil(r.optim.warmup_ratio * total)
    )
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[r.optim.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def optimizer_for(r: Recipe, module: torch.nn.Module, updates: int):
    """AdamW over the module's trainable parameters, with the recipe's schedule over `updates`."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=r.optim.lr,
        betas=tuple(r.optim.adam_betas),
        eps=r.optim.adam_eps,
        weight_decay=r.optim.weight_decay,
    )
    keep_param_order(optimizer)  # ZeRO flattens its groups; checkpoints name parameters as here
    return optimizer, lr_schedule(r, optimizer, updates)
