"""DeepSpeed ZeRO launches (`accelerate launch --config_file recipes/accelerate/zero2.yaml ...`).

- DeepSpeed's engine owns the step: in its last backward of an update it reduces the gradients,
  clips them to `gradient_clipping`, skips a step whose gradient norm is not finite (fp32 and fp16
  always; bf16 when `bf16.check_grad_overflow` is on, which align sets) and steps the optimizer.
  The loop keeps everything else: it marks the accumulation boundary itself (`boundary`), divides
  each micro-batch's summed loss by the examples of the whole update exactly as without DeepSpeed
  (`scale_wrt_gas=False`: the engine's own division by its accumulation steps is off, so PPO's
  updates of uneven size keep their divisors), steps its own schedule, and counts skipped steps.
  A non-finite loss whose step DeepSpeed did not skip stops the run, naming the last good
  checkpoint.
- The recipe sets what DeepSpeed would take from the launcher's "auto" values
  (`configure`): micro-batch size, accumulation steps, clipping. A launcher value that disagrees
  with the recipe is overridden and logged.
- Accelerate does not form a process group for DeepSpeed without CUDA (every rank believes it is
  rank 0 of 1); `accelerator_kwargs` asks for gloo, so ZeRO runs, and is tested, on CPU.
- Checkpoints hold the same files as any other run: full adapter tensors and a stock
  `torch.optim.AdamW` state dict assembled from ZeRO's partitions (`full_optimizer_state`), so a
  ZeRO run resumes under any world size, stage or strategy, and a DDP run resumes under ZeRO.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from align.util.zero3 import gathered, partitioned  # noqa: F401  (the engine's ZeRO API)

log = logging.getLogger("align.zero")

PARAMS_ATTR = "_align_params"  # the ordered parameter list, kept on the torch optimizer


def deepspeed_launch(env: Mapping[str, str] = os.environ) -> bool:
    """Whether `accelerate launch` asked for DeepSpeed."""
    return env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def accelerator_kwargs(cuda: bool) -> dict[str, Any]:
    """Extra `Accelerator(...)` arguments for a DeepSpeed launch: never `cpu=True` (Accelerate then
    ignores DeepSpeed), and gloo when there is no CUDA (without a backend Accelerate sets every
    rank to process 0 of 1 while DeepSpeed's group has them all)."""
    from accelerate.utils import InitProcessGroupKwargs

    return (
        {"cpu": False}
        if cuda
        else {"cpu": False, "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}
    )


def engine(accelerator) -> Any | None:
    """The DeepSpeed engine once `prepare` made one; None otherwise."""
    wrapped = getattr(accelerator, "deepspeed_engine_wrapped", None)
    return wrapped.engine if wrapped is not None else None


def configure(accelerator, per_device: int, accumulation: int, max_grad_norm: float | None) -> None:
    """Fill the DeepSpeed config from the recipe before `prepare` (nothing without DeepSpeed)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    cfg = plugin.deepspeed_config
    want = {
        "train_micro_batch_size_per_gpu": per_device,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": per_device * accumulation * accelerator.num_processes,
        "gradient_clipping": float(max_grad_norm) if max_grad_norm is not None else 0.0,
    }
    for key, value in want.items():
        old = cfg.get(key, "auto")
        if old not in ("auto", None) and old != value:
            log.info("deepspeed config %s: %s from the launcher replaced by the recipe's %s", key, old, value)
        cfg[key] = value
    cfg["zero_allow_untested_optimizer"] = True  # align's AdamW is torch's
    cfg["zero_force_ds_cpu_optimizer"] = False  # also with optimizer offload (no compiled CPU Adam)
    if cfg.get("bf16", {}).get("enabled") in (True, "true", "auto") and accelerator.mixed_precision == "bf16":
        cfg["bf16"] = {**cfg["bf16"], "enabled": True, "check_grad_overflow": True}
    plugin.gradient_accumulation_steps = accumulation  # Accelerate checks the two agree
    whole_models(plugin)


def whole_models(plugin) -> None:
    """Build every model whole; ZeRO-3 partitions the trained one in `prepare`. Accelerate turns on
    transformers' `zero.Init` for any ZeRO-3 launch (whatever `zero3_init_flag` says), which would
    shard models as they are built: a random init then differs from one process's, and align's
    own loading steps (the embedded conversion, merging an earlier run's adapter, reward heads,
    frozen scorers) need whole weights."""
    from transformers.integrations import unset_hf_deepspeed_config

    if plugin.zero_stage == 3 and plugin.zero3_init_flag:
        log.info("zero3_init_flag: align loads the base whole on each rank, then ZeRO-3 partitions it")
    plugin.zero3_init_flag = False
    unset_hf_deepspeed_config()


def zero_stage(accelerator) -> int | None:
    """The ZeRO stage of a DeepSpeed launch, else None."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return None if plugin is None else int(plugin.zero_stage)


def keep_param_order(optimizer: torch.optim.Optimizer) -> None:
    """Remember the optimizer's parameters in order: ZeRO replaces its groups with flat
    partitions, and the saved state must name parameters as an unsharded AdamW does."""
    setattr(optimizer, PARAMS_ATTR, [list(g["params"]) for g in optimizer.param_groups])


def _zero_optimizer(optimizer) -> Any | None:
    """ZeRO's optimizer under Accelerate's wrapper, when ZeRO wraps align's AdamW."""
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    if type(inner).__module__.startswith("deepspeed.") and hasattr(
        getattr(inner, "optimizer", None), PARAMS_ATTR
    ):
        return inner
    return None


def _torch_optimizer(optimizer) -> torch.optim.Optimizer | None:
    """The torch optimizer under Accelerate's and ZeRO's wrappers, when ZeRO wraps it."""
    inner = _zero_optimizer(optimizer)
    return None if inner is None else inner.optimizer


def is_zero(optimizer) -> bool:
    return _torch_optimizer(optimizer) is not None


def full_optimizer_state(optimizer) -> dict[str, Any]:
    """The AdamW state dict of an unsharded run, gathered from ZeRO's partitions (a collective)."""
    from deepspeed.utils import safe_get_full_optimizer_state

    base = _torch_optimizer(optimizer)
    per_group = getattr(base, PARAMS_ATTR)
    params = [p for g in per_group for p in g]
    flat_states = [s for s in base.state.values() if "step" in s]
    state: dict[int, dict[str, torch.Tensor]] = {}
    if flat_states:  # no step yet: no state, as in torch
        step = flat_states[0]["step"]
        for i, p in enumerate(params):
            state[i] = {
                "exp_avg": safe_get_full_optimizer_state(p, "exp_avg").detach().cpu().clone(),
                "exp_avg_sq": safe_get_full_optimizer_state(p, "exp_avg_sq").detach().cpu().clone(),
                "step": step.detach().cpu().clone() if torch.is_tensor(step) else torch.tensor(float(step)),
            }
    index = iter(range(len(params)))
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [next(index) for _ in mine]}
        for g, mine in zip(base.param_groups, per_group)
    ]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(optimizer, sd: dict[str, Any]) -> None:
    """Write an AdamW state dict (any run's) into ZeRO's partitions; every rank reads the same
    file and keeps its own slice (no communication)."""
    base = _torch_optimizer(optimizer)
    params = [p for g in getattr(base, PARAMS_ATTR) for p in g]
    for g, saved in zip(base.param_groups, sd["param_groups"]):
        g.update({k: v for k, v in saved.items() if k != "params"})
    if not sd["state"]:
        return
    step = next(iter(sd["state"].values()))["step"]
    zopt = _zero_optimizer(optimizer)
    flats = getattr(zopt, "fp32_partitioned_groups_flat", None)  # ZeRO-3 empties the groups between steps
    if flats is None:
        flats = [flat for group in base.param_groups for flat in group["params"]]
    for flat in flats:  # create the flat partitions' state, then fill it per parameter
        base.state[flat] = {
            "step": torch.as_tensor(step, dtype=torch.float32).clone(),
            "exp_avg": torch.zeros_like(flat),
            "exp_avg_sq": torch.zeros_like(flat),
        }
    if hasattr(zopt, "_lazy_init_hp_params_optimizer_state"):  # ZeRO-1/2 map parameters into that
        zopt._hp_optimizer_states_linked = False  # state only after a first step: map them now
        zopt._lazy_init_hp_params_optimizer_state()
    for i, p in enumerate(params):
        entry = sd["state"][i]
        for key in ("exp_avg", "exp_avg_sq"):
            _set_full(p, entry[key], key)


def load_master_weights(optimizer) -> None:
    """After the trainable parameters were loaded from a checkpoint, copy them into ZeRO's fp32
    master partitions (which the next step would otherwise restore). ZeRO-3: inside `gathered`."""
    base = _torch_optimizer(optimizer)
    if base is None:
        return
    for p in (p for g in getattr(base, PARAMS_ATTR) for p in g):
        _set_full(p, p.detach(), None)


def _set_full(p: torch.nn.Parameter, value: torch.Tensor, key: str | None) -> None:
    """Write the whole `value` of parameter `p` (its fp32 master when `key` is None, else that
    Adam state) into this rank's ZeRO partition."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    value = value.detach().to(torch.float32)
    if not hasattr(p, "ds_id"):  # ZeRO-1/2: DeepSpeed maps each parameter's fragment
        value = value.to(p.device)
        safe_set_full_fp32_param(p, value) if key is None else safe_set_full_optimizer_state(p, value, key)
        return
    # ZeRO-3: DeepSpeed's own setter cuts past the end for a rank whose slice is all padding
    # (a tensor with fewer elements than ranks, e.g. a head's bias); cut it here, padded
    zopt = p._z3_optimizer
    part, _ = zopt._get_fp32_opt_state_partition(p, release_swap_buffers=False, optim_state_key=key)
    start = p.partition_numel() * zopt._get_param_partition_rank(p)
    mine = value.flatten()[start : start + part.numel()]
    part.data.zero_()
    part.data[: mine.numel()].copy_(mine.to(part.device))


def trainable(optimizer) -> list[torch.nn.Parameter]:
    """The parameters `optimizer_for` gave the optimizer (all of a method's trainable state)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    base = getattr(inner, "optimizer", inner)
    if hasattr(base, PARAMS_ATTR):
        return [p for g in getattr(base, PARAMS_ATTR) for p in g]
    return [p for g in inner.param_groups for p in g["params"]]
