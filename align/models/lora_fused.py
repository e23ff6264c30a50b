"""One GEMM for the LoRA update: `addmm(base_out, A x, Bᵀ, alpha=scaling)`.

PEFT's LoRA linear computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`: after the small
GEMMs, two full passes over the [tokens, out_features] output (the scaling multiply and the add),
and one more in backward (the multiply's gradient). `addmm` folds the scaling into the GEMM's
alpha and the add into its accumulate, so per LoRA linear two memory-bound passes over the
layer's output go away in forward and one in backward; the numbers are the same up to float
rounding (tested against PEFT's own forward, values and gradients).

Only the plain case is fused: one active adapter, no variant (DoRA, ...), not merged, adapter on,
no LoRA bias, no extra call arguments, matching dtypes, not partitioned by ZeRO-3. Anything else
calls PEFT's forward.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    if (
        args
        or kwargs
        or name is None
        or self.disable_adapters
        or self.merged
        or name not in self.lora_A
        or name in self.lora_variant
        or self.lora_B[name].bias is not None
        or hasattr(self.lora_B[name].weight, "ds_id")  # ZeRO-3: a slice until lora_B's forward gathers it
        or not _same_dtypes(self, name, x)
    ):
        return type(self).forward(self, x, *args, **kwargs)
    lora_a, lora_b = self.lora_A[name], self.lora_B[name]
    result = self.base_layer(x)
    h = lora_a(self.lora_dropout[name](x))
    out = torch.addmm(
        result.reshape(-1, result.shape[-1]),
        h.reshape(-1, h.shape[-1]),
        lora_b.weight.t(),
        alpha=self.scaling[name],
    )
    return out.view(result.shape)


def _same_dtypes(layer, name: str, x: torch.Tensor) -> bool:
    """Under autocast every GEMM runs in the autocast dtype; without it, input, base and adapter
    must share one dtype (else PEFT's promoting arithmetic is the reference behaviour)."""
    if torch.is_autocast_enabled(x.device.type):
        return True
    weight = getattr(layer.base_layer, "weight", None)
    return (
        weight is not None
        and x.dtype == weight.dtype == layer.lora_A[name].weight.dtype == layer.lora_B[name].weight.dtype
    )


def fuse_lora(model: nn.Module) -> int:
    """Give every PEFT LoRA `Linear` of `model` the fused forward (instance attribute, so state
    dicts and saved adapters are unchanged); returns how many."""
    from peft.tuners.lora.layer import Linear

    n = 0
    for module in model.modules():
        if type(module) is Linear:
            module.forward = types.MethodType(_fused_forward, module)
            n += 1
    return n
