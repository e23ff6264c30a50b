"""Sharded launches: FSDP2 with one unit per decoder layer, full tensors in every file written.

- Accelerate wraps `SequenceScorer`, not the transformers model, so the decoder-layer class that
  its TRANSFORMER_BASED_WRAP reads from `_no_split_modules` comes from the scorer (see
  `SequenceScorer._no_split_modules`); without it FSDP would shard only the root and gather the
  whole model at every forward.
- Under FSDP2 every parameter (and its Adam state) is a DTensor holding this rank's slice: rank 0's
  `state_dict()` alone is a fraction of the adapter. `full_tensor` gathers; every rank must call
  it, in the same order. Checkpoints hold full tensors, so a sharded run resumes under any world
  size or strategy and the final adapter is stock PEFT.
- Accelerate drops an FSDP launch to plain gloo data parallelism when the Accelerator is built
  with `cpu=True`, as align does without CUDA; `fsdp_on_cpu` turns FSDP back on, so the sharded
  path runs (and is tested) on CPU with gloo.
- Scorers and the RLHF module declare `_no_split_modules` (one unit per decoder layer); heads sit in
  the root unit. Methods that run the model outside `forward` (scoring without grad) are
  registered as FSDP forward methods (`fsdp_forward_methods`); rollouts gather the full weights
  once and sample without collectives (align/models/rollout.py: `full_weights`).
- DeepSpeed ZeRO is align/engine/zero.py. FSDP1 is refused before anything loads
  (`check_launch`): it has no CPU path in Accelerate and flattens parameters, so the gathering
  here would not apply.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from align.util.errors import AlignError

log = logging.getLogger("align.sharding")


class LaunchError(AlignError):
    """The `accelerate launch` configuration asks for something align does not support."""


def check_launch(env: Mapping[str, str] = os.environ) -> None:
    """Refuse launches align cannot run (read from the variables `accelerate launch` sets): FSDP1,
    DeepSpeed without the package, and ZeRO stage 0 (plain data parallelism: use DDP)."""
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        if importlib.util.find_spec("deepspeed") is None:
            raise LaunchError(
                "the accelerate config asks for DeepSpeed, which is not installed: pip install deepspeed "
                "(DS_BUILD_OPS=0 is enough: align uses torch's AdamW), or launch with "
                "recipes/accelerate/fsdp.yaml"
            )
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        if stage not in ("1", "2", "3"):
            raise LaunchError(
                f"DeepSpeed zero_stage {stage} is not supported; use zero_stage 2 or 3 "
                "(recipes/accelerate/zero2.yaml, zero3.yaml), or DDP for plain data parallelism"
            )
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and env.get("FSDP_VERSION", "1") != "2":
        raise LaunchError(
            f"FSDP version {env.get('FSDP_VERSION', '1')} is not supported; set fsdp_version: 2 in the "
            "accelerate config (or pass --fsdp_version 2), as recipes/accelerate/fsdp.yaml does"
        )


def fsdp_on_cpu(accelerator) -> None:
    """Make an FSDP launch shard on CPU too: Accelerate keeps MULTI_CPU (plain all-reduce) for
    `cpu=True` even when the launch asked for FSDP, and ignores its plugin."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables the launcher set
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def fsdp_units(model: torch.nn.Module) -> list[str]:
    """Names of the modules FSDP2 made units of ("" is the root): recorded in the run manifest, so
    a run shows whether its layers were really sharded one by one."""
    from torch.distributed.fsdp import FSDPModule

    units = [name for name, m in model.named_modules() if isinstance(m, FSDPModule)]
    if units == [""] and torch.distributed.get_rank() == 0:
        log.warning(
            "FSDP made the whole model one unit: every forward gathers all of it; set "
            "fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP (or --fsdp_auto_wrap_policy) to shard by layer"
        )
    return units


def fsdp_forward_methods(model: torch.nn.Module, names: tuple[str, ...]) -> None:
    """Under FSDP2, have `model`'s methods `names` gather and reshard like its `forward` (they run
    the model outside forward, e.g. scoring without grad); nothing otherwise."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

    if isinstance(model, FSDPModule):
        for name in names:
            register_fsdp_forward_method(model, name)


def full_tensor(t: Any) -> Any:
    """The whole tensor behind a DTensor (a collective: every rank calls it); others unchanged."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def full_trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` with every trainable entry gathered to a full tensor (frozen sharded
    entries stay as they are: nothing of the base is gathered). Every rank must call it."""
    from align.util.zero3 import gathered, partitioned

    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    with gathered(p for p in module.parameters() if p.requires_grad):  # ZeRO-3: whole, then copied
        copy = partitioned(module)
        return {
            k: (full_tensor(v).clone() if copy else full_tensor(v)) if k in trainable else v
            for k, v in module.state_dict().items()
        }


def full_optimizer_state(optimizer) -> dict[str, Any]:
    """`optimizer.state_dict()` with sharded state (Adam moments) gathered to full tensors: the
    same file as an unsharded run writes. Every rank must call it."""
    sd = optimizer.state_dict()
    state = {i: {k: full_tensor(v) for k, v in sorted(sd["state"][i].items())} for i in sorted(sd["state"])}
    return {**sd, "state": state}


def shard_optimizer_state(optimizer, sd: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `full_optimizer_state`: cut each full state tensor to this rank's slice of its
    parameter (every rank read the same file, so no communication is needed)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for i, entry in sd["state"].items():
        p = params[int(i)]
        state[i] = {
            k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
            if isinstance(p, DTensor) and isinstance(v, torch.Tensor) and v.shape == p.shape
            else v
            for k, v in entry.items()
        }
    return {**sd, "state": state}
