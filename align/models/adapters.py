"""One frozen base, several named LoRA adapters, scalar heads: the roles of RLHF.

PPO's policy, value and reward models are adapters on one base (the reference is every adapter
switched off), so memory is one base plus small adapters instead of the four models peers hold.
`use_adapter` switches the active adapter of every LoRA layer for one block *without* touching
`requires_grad` (PEFT's `set_adapter` would make the activated adapter trainable and freeze the
others: the optimizer's view must not change with the role being computed).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from align.models.earlier_run import REFERENCE

HEAD_FILE = "score_head.safetensors"
POLICY, VALUE, REWARD = "default", "value", "reward"  # adapter names of the RLHF roles
# REFERENCE: the frozen copy of the earlier adapter a `model.adapter_mode: continue` run keeps
# training; where a model has it, it is the reference (`use_adapter(model, None)`), not all off.


class ScalarHead(nn.Module):
    """A linear map hidden state -> one number (reward score or value), kept in float32."""

    def __init__(self, hidden: int, seed: int = 0) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        with torch.random.fork_rng(devices=[]):  # the same head whatever ran before
            torch.manual_seed(seed)
            # std 1/sqrt(H+1), bias 0: scores start O(1) (Huang et al. 2024, N+ details, #9)
            nn.init.normal_(self.linear.weight, std=1.0 / math.sqrt(hidden + 1))
            nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)

    def save(self, path: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path))

    @classmethod
    def load(cls, path: Path) -> ScalarHead:
        state = load_file(str(path))
        head = cls(state["linear.weight"].shape[1])
        head.load_state_dict(state)
        return head


def _tuner_layers(peft_model: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def use_adapter(peft_model: nn.Module, name: str | None) -> Iterator[None]:
    """Run the block with adapter `name` active on every LoRA layer (None: all adapters off, the
    reference model, or the frozen `REFERENCE` adapter where there is one); layers that lack `name`
    run as the base. PEFT's own `disable_adapter()` is
    not used: leaving it re-activates the active adapter through `set_adapter`, which freezes every
    other adapter (a value adapter would silently stop training)."""
    layers = _tuner_layers(peft_model)
    saved = [(layer._active_adapter, layer._disable_adapters) for layer in layers]
    if name is None and any(REFERENCE in getattr(layer, "lora_A", {}) for layer in layers):
        name = REFERENCE  # the reference of a run that continues an earlier adapter
    try:
        for layer in layers:
            if name is None:
                layer._disable_adapters = True
            else:
                layer._active_adapter = [name]
        yield
    finally:
        for layer, (active, disabled) in zip(layers, saved):
            layer._active_adapter, layer._disable_adapters = active, disabled


def adapter_params(peft_model: nn.Module, name: str) -> list[nn.Parameter]:
    """The LoRA parameters of adapter `name` (their names end in `.<name>.weight` / `.bias`)."""
    return [p for n, p in peft_model.named_parameters() if f".{name}." in n and "lora_" in n]


def set_trainable(peft_model: nn.Module, names: list[str]) -> None:
    """Exactly the adapters `names` train; every other parameter of the PEFT model is frozen."""
    keep = {id(p) for name in names for p in adapter_params(peft_model, name)}
    for p in peft_model.parameters():
        p.requires_grad_(id(p) in keep)


def add_adapter(peft_model: nn.Module, name: str, source: Path | None, lora) -> None:
    """Add adapter `name`: the PEFT adapter saved in `source` (weights and config), else a fresh one
    from the recipe's `lora` section (B = 0: starts as the base)."""
    if source is not None:
        peft_model.load_adapter(str(source), adapter_name=name, is_trainable=True)
        return
    from align.models.load import peft_lora_config

    peft_model.add_adapter(name, peft_lora_config(lora))


def adapter_state_of(peft_model: nn.Module, name: str, state: dict[str, torch.Tensor] | None = None):
    """Adapter `name`'s tensors as PEFT saves them (keys without the adapter name)."""
    from peft import get_peft_model_state_dict

    sd = get_peft_model_state_dict(peft_model, state_dict=state, adapter_name=name)
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


@torch.no_grad()
def load_full_state(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy full tensors (a checkpoint's) into `module`'s parameters and buffers; under FSDP2 a
    sharded parameter keeps this rank's slice (every rank read the same file: no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for k, p in module.state_dict(keep_vars=True).items():
        v = tensors[k].to(p.device, p.dtype)
        if isinstance(p, DTensor):
            v = distribute_tensor(v, p.device_mesh, p.placements, src_data_rank=None)
        p.copy_(v)


def load_adapter_state(peft_model: nn.Module, name: str, tensors: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(peft_model, tensors, adapter_name=name)
