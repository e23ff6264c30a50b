"""Sampling weights of a llama-architecture model, prepared once per rollout for `decode.py`.

The lean decode path multiplies by each layer's *effective* weight: the base weight plus the
active LoRA adapters' `scaling * B @ A`, merged into a fresh tensor (the trained parameters and
PEFT's state are never written; a rollout between optimizer steps must not move them). q/k/v
become one [q+k+v, in] matrix and gate/up one [2 * intermediate, in] matrix, so a decode step is one `mm` where the HF model runs three (or two) linears plus
the LoRA side GEMMs.

`unsupported(model)` says why a model cannot take this path (anything whose forward the lean
path would not reproduce); the caller then falls back to the HF forward.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

# RoPE types whose frequencies are fixed at init (the model's own rotary module computes cos/sin;
# "dynamic" and "longrope" change them with the sequence length inside the HF forward).
STATIC_ROPE = ("default", "linear", "llama3")
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def llama_of(model: nn.Module) -> nn.Module:
    """The LlamaForCausalLM inside `model` (a PEFT wrapper's base model, or `model` itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _lora_reason(layer: nn.Module) -> str | None:
    """Why the PEFT LoRA linear `layer` cannot be merged for sampling (None: it can)."""
    if not isinstance(layer.base_layer, nn.Linear) or type(layer.base_layer) is not nn.Linear:
        return f"LoRA base layer {type(layer.base_layer).__name__} is not a plain Linear"
    if layer.base_layer.bias is not None:
        return "a linear layer has a bias"
    if getattr(layer, "fan_in_fan_out", False):
        return "LoRA fan_in_fan_out"
    if layer.merged:
        if layer.disable_adapters:
            return "LoRA adapters merged into the base but disabled (PEFT would unmerge)"
        return None  # the base weight already holds the merged adapters; PEFT adds nothing
    if layer.disable_adapters:
        return None
    for name in layer.active_adapters:
        if name not in layer.lora_A:
            continue
        if name in getattr(layer, "lora_variant", {}):
            return f"LoRA variant {type(layer.lora_variant[name]).__name__} (e.g. DoRA)"
        if layer.lora_B[name].bias is not None:
            return "LoRA bias"
        dropout = layer.lora_dropout[name]
        if dropout.training and getattr(dropout, "p", 0.0) > 0:
            return "LoRA dropout > 0 in train mode (the sampled forward would be random)"
    return None


def _linear_reason(module: nn.Module) -> str | None:
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer

    if type(module) is LoraLinear:
        return _lora_reason(module)
    if isinstance(module, BaseTunerLayer) or type(module) is not nn.Linear:
        return f"layer type {type(module).__module__}.{type(module).__name__} (not Linear / LoRA Linear)"
    if module.bias is not None:
        return "a linear layer has a bias"
    return None


def unsupported(model: nn.Module) -> str | None:
    """Why `model` cannot take the lean decode path, or None when it can: a LlamaForCausalLM
    (plain or PEFT-wrapped, LoRA on linear layers only), SiLU MLP, no biases, static RoPE, float
    weights on one device, not quantized, no dropout active."""
    from transformers import LlamaForCausalLM

    base = llama_of(model)
    if type(base) is not LlamaForCausalLM:
        return f"{type(base).__name__} is not LlamaForCausalLM"
    cfg = base.config
    if getattr(cfg, "model_type", None) != "llama":
        return f"model_type {getattr(cfg, 'model_type', None)!r} is not 'llama'"
    if getattr(cfg, "quantization_config", None) is not None or getattr(base, "hf_quantizer", None):
        return "quantized model"
    if cfg.hidden_act != "silu":
        return f"hidden_act {cfg.hidden_act!r} (only silu)"
    if cfg.attention_bias or cfg.mlp_bias:
        return "attention or MLP bias"
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope not in STATIC_ROPE:
        return f"rope_type {rope!r} (supported: {', '.join(STATIC_ROPE)})"
    if base.training and cfg.attention_dropout > 0:
        return "attention dropout > 0 in train mode"
    if getattr(cfg, "pretraining_tp", 1) not in (1, None):
        return f"pretraining_tp {cfg.pretraining_tp}"
    params = list(model.parameters())
    if len({p.device for p in params}) != 1 or params[0].device.type == "meta":
        return "parameters on several devices (or meta / offloaded)"
    if len({p.dtype for p in params}) != 1 or params[0].dtype not in FLOAT_DTYPES:
        return f"mixed or non-float parameter dtypes {sorted({str(p.dtype) for p in params})}"
    if any(hasattr(m, "_hf_hook") for m in base.modules()):
        return "accelerate hooks (offloading or device maps)"
    core = base.model
    for m in (core.embed_tokens, core.norm, *[n for layer in core.layers for n in _norms(layer)]):
        if type(m).__name__ not in ("Embedding", "LlamaRMSNorm"):
            return f"module type {type(m).__name__} where Embedding / LlamaRMSNorm was expected"
    for layer in core.layers:
        for lin in (*_attn(layer), *_mlp(layer)):
            reason = _linear_reason(lin)
            if reason:
                return reason
    return _linear_reason(base.lm_head)


def _norms(layer: nn.Module) -> tuple[nn.Module, nn.Module]:
    return layer.input_layernorm, layer.post_attention_layernorm


def _attn(layer: nn.Module) -> tuple[nn.Module, ...]:
    a = layer.self_attn
    return a.q_proj, a.k_proj, a.v_proj, a.o_proj


def _mlp(layer: nn.Module) -> tuple[nn.Module, ...]:
    return layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj


def _sources(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """The active LoRA adapters of `module` that its forward adds: (B, A, scaling) each."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(module) is not LoraLinear or module.merged or module.disable_adapters:
        return []
    return [
        (module.lora_B[n].weight.detach(), module.lora_A[n].weight.detach(), float(module.scaling[n]))
        for n in module.active_adapters
        if n in module.lora_A
    ]


def _base(module: nn.Module) -> torch.Tensor:
    return getattr(module, "base_layer", module).weight.detach()


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The [out, in] weight `module`'s forward multiplies by: a plain Linear's weight (aliased,
    read only), or a LoRA linear's base weight plus `scaling * B @ A` of every active adapter (a
    new tensor: the parameters are never written)."""
    weight = _base(module)
    for b, a, s in _sources(module):
        weight = torch.addmm(weight, b.to(weight.dtype), a.to(weight.dtype), alpha=s)
    return weight


def _signature(modules: tuple[nn.Module, ...]) -> tuple:
    """What a fused buffer's content depends on: every source tensor (storage and in-place
    version, which optimizer steps bump) and scaling; equal signatures, equal content."""
    sig = []
    for m in modules:
        sig.append((_base(m).data_ptr(), _base(m)._version))
        sig.extend((b.data_ptr(), b._version, a.data_ptr(), a._version, s) for b, a, s in _sources(m))
    return tuple(sig)


def _fill(dst: torch.Tensor, modules: tuple[nn.Module, ...]) -> None:
    """Write the effective weights of `modules`, stacked along dim 0, into `dst` (one pass)."""
    row = 0
    for m in modules:
        w = _base(m)
        part = dst[row : row + w.shape[0]]
        adapters = _sources(m)
        if not adapters:
            part.copy_(w)
        for i, (b, a, s) in enumerate(adapters):
            if i == 0:
                torch.addmm(w, b.to(w.dtype), a.to(w.dtype), alpha=s, out=part)
            else:
                part.addmm_(b.to(w.dtype), a.to(w.dtype), alpha=s)
        row += w.shape[0]


class Weight:
    """The stacked effective weights of some linears, [sum out, in] (F.linear's layout: no
    transposing copy), refreshed only when their signature changed. A single plain linear is
    aliased, not copied."""

    def __init__(self, modules: tuple[nn.Module, ...]) -> None:
        self.modules = modules
        w = _base(modules[0])
        self.alias = len(modules) == 1 and type(modules[0]) is nn.Linear
        rows = sum(_base(m).shape[0] for m in modules)
        self.weight = w if self.alias else torch.empty((rows, w.shape[1]), dtype=w.dtype, device=w.device)
        self.sig: tuple | None = None

    def refresh(self) -> torch.Tensor:
        sig = _signature(self.modules)
        if sig != self.sig:
            if self.alias:
                self.weight = _base(self.modules[0])
            else:
                _fill(self.weight, self.modules)
            self.sig = sig
        return self.weight


@dataclass
class LayerWeights:
    """One decoder layer's sampling weights: [out, in] matrices (F.linear's layout)."""

    ln1: torch.Tensor  # [H]
    qkv: torch.Tensor  # [(heads + 2 kv_heads) * head_dim, H]
    o: torch.Tensor  # [H, heads * head_dim]
    ln2: torch.Tensor  # [H]
    gate_up: torch.Tensor  # [2 I, H]
    down: torch.Tensor  # [H, I]


@dataclass
class DecodeWeights:
    """Everything a rollout's decode steps read (`prepare`)."""

    embed: torch.Tensor  # [V, H], the model's embedding (aliased, read only)
    layers: list[LayerWeights]
    norm: torch.Tensor  # [H]
    lm_head: torch.Tensor  # [V, H] (the embedding itself when tied and without LoRA)
    eps: float
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    rotary: nn.Module  # the model's own rotary embedding: cos/sin tables come from it


class _Buffers:
    """The Weight buffers of one model, kept between rollouts (weakly keyed by the model), so a
    rollout re-merges only what changed since the last one (the LoRA'd linears after an
    optimizer step) into memory it already owns."""

    def __init__(self, model: nn.Module) -> None:
        core = llama_of(model).model
        self.layers = [
            [Weight(g) for g in (_attn(L)[:3], _attn(L)[3:], _mlp(L)[:2], _mlp(L)[2:])] for L in core.layers
        ]
        self.lm_head = Weight((llama_of(model).lm_head,))


_BUFFERS: weakref.WeakKeyDictionary[nn.Module, _Buffers] = weakref.WeakKeyDictionary()


def forget(root: nn.Module) -> None:
    """Drop the kept buffers of every model inside `root` (rebuilt at the next `prepare`)."""
    for m in root.modules():
        _BUFFERS.pop(m, None)


@torch.no_grad()
def prepare(model: nn.Module) -> DecodeWeights:
    """The sampling weights of `model` (check `unsupported(model)` first): effective weights with
    the active LoRA adapters merged into buffers of their own (never into the parameters), q/k/v
    and gate/up fused. The buffers persist per model: memory for one more copy of the merged
    linears, traded for not re-copying frozen weights every rollout."""
    base = llama_of(model)
    cfg, core = base.config, base.model
    bufs = _BUFFERS.get(model)
    if bufs is None:
        bufs = _BUFFERS[model] = _Buffers(model)

    layers = []
    for layer, ws in zip(core.layers, bufs.layers):
        qkv, o, gate_up, down = (w.refresh() for w in ws)
        layers.append(
            LayerWeights(
                ln1=layer.input_layernorm.weight.detach(),
                qkv=qkv,
                o=o,
                ln2=layer.post_attention_layernorm.weight.detach(),
                gate_up=gate_up,
                down=down,
            )
        )
    heads = cfg.num_attention_heads
    return DecodeWeights(
        embed=core.embed_tokens.weight.detach(),
        layers=layers,
        norm=core.norm.weight.detach(),
        lm_head=bufs.lm_head.refresh(),
        eps=float(cfg.rms_norm_eps),
        heads=heads,
        kv_heads=cfg.num_key_value_heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        intermediate=cfg.intermediate_size,
        rotary=core.rotary_emb,
    )
