"""Numeric precision of a run: one recipe key, reconciled with `accelerate launch`.

`precision: auto | fp32 | bf16 | fp16` says how the forward and backward run:

* `fp32`: everything in float32.
* `bf16` / `fp16`: autocast to that dtype; the frozen base weights are *stored* in it too (half the
  memory, no per-forward weight casts) unless `model.dtype` says otherwise; the LoRA weights and
  their optimizer state stay float32 (PEFT's adapter upcast), and the LM-head log-softmax of the
  selected positions runs in float32 (align/models/logprobs.py). fp16 adds Accelerate's loss scaler and
  needs a CUDA GPU.
* `auto`: what `accelerate launch --mixed_precision` (or its config file) names when that is bf16
  or fp16; otherwise bf16 on a CUDA GPU that supports it, fp32 on CPU.

The launcher exports `ACCELERATE_MIXED_PRECISION`; `no` is its default, so it is read as "no
opinion". An explicit recipe value that contradicts an explicit launcher value is an error, not a
silent winner. The resolved precision goes into the manifest and every cache key of numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch

from align.util.errors import RecipeError

Name = Literal["fp32", "bf16", "fp16"]
_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
ENV = "ACCELERATE_MIXED_PRECISION"


@dataclass(frozen=True)
class Precision:
    name: Name
    source: str  # "recipe", "launcher" or "auto (...)": why this precision was chosen
    base_dtype: str  # storage dtype of the frozen base weights

    @property
    def mixed_precision(self) -> str:
        """Accelerate's spelling ("no" / "bf16" / "fp16")."""
        return _ACCELERATE[self.name]

    def manifest(self) -> dict[str, str]:
        return {
            "precision": self.name,
            "source": self.source,
            "autocast": "none" if self.name == "fp32" else _DTYPE[self.name],
            "base_weights": self.base_dtype,
            "adapter_weights": "float32",
            "logsoftmax": "float32",
        }


def resolve(
    recipe_value: str,
    model_dtype: str,
    on_cuda: bool,
    bf16_supported: bool,
    launcher: str | None = None,
) -> Precision:
    """Pure decision (tested directly); `from_recipe` supplies the machine facts."""
    launcher = (launcher or "no").lower()
    if launcher not in ("no", "bf16", "fp16"):
        raise RecipeError(
            f"precision: accelerate launch asks for --mixed_precision {launcher}, which align does not "
            "support; use bf16, fp16 or no"
        )
    said = {"bf16": "bf16", "fp16": "fp16"}.get(launcher)
    if recipe_value == "auto":
        if said:
            name, source = said, f"launcher (--mixed_precision {launcher})"
        elif on_cuda and bf16_supported:
            name, source = "bf16", "auto (CUDA GPU with bf16)"
        else:
            name, source = "fp32", "auto (CPU)" if not on_cuda else "auto (GPU without bf16)"
    else:
        if said and said != recipe_value:
            raise RecipeError(
                f"precision: the recipe says {recipe_value} but accelerate launch says --mixed_precision "
                f"{launcher} ({ENV}); make them agree, or set precision: auto to follow the launcher"
            )
        name, source = recipe_value, "recipe"
    if name == "fp16" and not on_cuda:
        raise RecipeError(
            "precision: fp16 needs a CUDA GPU (on CPU there is no fp16 autocast); use bf16 or fp32"
        )
    if name == "bf16" and on_cuda and not bf16_supported:
        raise RecipeError("precision: this GPU does not support bf16; use fp16 or fp32")
    base = _DTYPE[name] if model_dtype == "auto" else model_dtype
    return Precision(name=name, source=source, base_dtype=base)  # type: ignore[arg-type]


def from_recipe(r) -> Precision:
    """Resolve `r.precision` on this machine (CUDA unless the recipe says `cpu: true`)."""
    on_cuda = torch.cuda.is_available() and r.cpu is not True
    bf16 = on_cuda and torch.cuda.is_bf16_supported()
    return resolve(r.precision, r.model.dtype, on_cuda, bf16, os.environ.get(ENV))
