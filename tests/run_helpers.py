"""Helpers shared by run-level tests: train the tiny recipe, read and compare adapters."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "tiny.yaml"


def run_tiny(out: Path, *overrides: str, resume: bool | None = None) -> dict:
    """Train the tiny recipe in-process; returns the run summary."""
    from align.recipe import load_recipe
    from align.train import run

    recipe = load_recipe(TINY, [f"output_dir={out}", *overrides])
    return run(recipe, resume=resume)


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)
