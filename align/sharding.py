"""Sharded training state (FSDP2) in and out of checkpoints, and what sharding cannot run here.

Under FSDP2 every parameter, gradient and AdamW moment is a DTensor holding one rank's shard:
`state_dict()` and `get_peft_model_state_dict` would hand rank 0's shard to the file writer. So
when parameters are sharded, the adapter is gathered with `full_tensor()` and the optimizer state
with torch's `get_optimizer_state_dict(full_state_dict=True)`; resuming scatters them back with
`set_model_state_dict` / `set_optimizer_state_dict`. Files stay world-size independent (a run
sharded over 8 GPUs resumes on 4, or unsharded). Gathering is collective: every rank calls these.

Accelerate enters FSDP only on accelerators (its CPU path is plain data parallel, so an FSDP
config on a CPU machine would silently not shard) and runs FSDP2 (`fsdp_version: 2`); DeepSpeed's
engine owns gradient accumulation and the optimizer step, which align's loop does itself. Both
cases are refused before anything loads, with what to use instead (`check_launcher`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from align.errors import RecipeError


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def is_sharded(module: nn.Module) -> bool:
    return any(_is_dtensor(p) for p in module.parameters())


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor on CPU (a collective for a DTensor)."""
    return (t.full_tensor() if _is_dtensor(t) else t).detach().cpu().contiguous()


def adapter_state(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's file names, whole on every rank."""
    from peft import get_peft_model_state_dict

    trainable = {n: full(p) for n, p in peft_model.named_parameters() if p.requires_grad}
    if not is_sharded(peft_model):
        return {k: full(v) for k, v in get_peft_model_state_dict(peft_model).items()}
    return get_peft_model_state_dict(peft_model, state_dict=trainable)


def load_adapter_state(peft_model: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Inverse of `adapter_state`, into sharded or plain parameters."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if not is_sharded(peft_model):
        set_peft_model_state_dict(peft_model, dict(weights))
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    # PEFT's file names drop the adapter name; map them back to parameter names via PEFT itself
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    tags = {n: torch.tensor(i) for i, n in enumerate(names)}
    to_param = {k: names[int(v)] for k, v in get_peft_model_state_dict(peft_model, state_dict=tags).items()}
    state = {to_param[k]: v for k, v in weights.items()}
    set_model_state_dict(peft_model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_state(model: nn.Module, optimizer) -> dict:
    """What to save: `optimizer.state_dict()`, or the gathered full state when sharded."""
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    if not is_sharded(model):
        return inner.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_optimizer_state(model: nn.Module, optimizer, state: dict) -> None:
    inner = getattr(optimizer, "optimizer", optimizer)
    if not is_sharded(model):
        inner.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, inner, state, options=StateDictOptions(full_state_dict=True))


def check_launcher(on_cuda: bool, env: Mapping[str, str] | None = None) -> None:
    """Refuse launcher configs align cannot honour, before anything loads."""
    env = os.environ if env is None else env
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise RecipeError(
            "accelerate launch: DeepSpeed is not supported: its engine steps the optimizer and "
            "accumulates gradients itself, while align's loop does both explicitly (exact accumulation, "
            "skipped non-finite steps). Shard with FSDP instead: --config_file recipes/accelerate/fsdp.yaml"
        )
    if env.get("ACCELERATE_USE_FSDP", "").lower() != "true":
        return
    if not on_cuda:
        raise RecipeError(
            "accelerate launch: FSDP needs CUDA GPUs (on CPU, Accelerate would run plain data "
            "parallel and shard nothing); on CPU launch with --multi_gpu (gloo data parallel)"
        )
    if env.get("FSDP_VERSION", "2") != "2":
        raise RecipeError("accelerate launch: align runs FSDP2 only; set fsdp_version: 2 in the config")
