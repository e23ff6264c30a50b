"""ZeRO-3 partitioned parameters, seen whole where align reads weights outside a forward.

Under DeepSpeed ZeRO-3 each parameter is a placeholder (`ds_id`) holding only this rank's slice;
its module's forward gathers it. Saving, loading and the rollout's fast path read or write weights
directly, so they run inside `gathered`. Any other launch passes straight through.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch


@contextlib.contextmanager
def gathered(params: Iterable[torch.nn.Parameter], modify: bool = False) -> Iterator[None]:
    """Under ZeRO-3, the whole tensors of `params` inside the block (a collective: every rank
    enters it); `modify`: what rank 0 writes into them is partitioned again on exit (every rank
    loads the same file). Parameters an outer block holds, and any other launch, pass through."""
    parts = [p for p in params if hasattr(p, "ds_id")]
    if parts:
        from deepspeed.runtime.zero.partition_parameters import (
            DS_Z3_GATHERED_PARAM_CONTEXT_DEPTH_ATTR as DEPTH,
        )

        parts = [p for p in parts if getattr(p, DEPTH, 0) == 0]
    if not parts:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(parts, modifier_rank=0 if modify else None):
        yield


def partitioned(module: torch.nn.Module) -> bool:
    """Whether ZeRO-3 holds `module`'s parameters in slices."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def deepspeed_managed(module: torch.nn.Module) -> bool:
    """Whether a DeepSpeed ZeRO optimizer owns `module`'s trainable parameters (any stage): it
    writes their new values through `.data`, which bumps no version counter."""
    return any(hasattr(p, "ds_id") or hasattr(p, "_hp_mapping") for p in module.parameters())
