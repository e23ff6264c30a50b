"""Checks that need the model's configuration but not its weights, run before anything loads.

A recipe can be well-typed and still unusable: LoRA target names the model does not have, an
attention implementation this install cannot run, an `output_dir` that is a file. Found late,
these are tracebacks after the tokenizer, the data and the weights have loaded. Here the model is
built from its config on the meta device (module names and shapes; no memory, no weights read)
and the LoRA adapter is applied to it with the same `add_lora` that training uses.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import torch

from align.engine.sharding import check_launch
from align.models.load import TINY_NAME, add_lora, first_line, load_config, tiny_model
from align.recipe import LoraConfig, ModelConfig, Recipe
from align.util.errors import ModelError, RecipeError

_passed: set[str] = set()  # model+lora settings already checked in this process (cli, then train.run)


def check(r: Recipe) -> None:
    """Raise RecipeError/ModelError (one line, naming the key) for what would fail after loading."""
    from align.engine import precision
    from align.models.logprobs import resolve_layout

    check_launch()  # DeepSpeed / FSDP1: refused before Accelerate or the model loads
    check_output_dir(r.output_dir)
    precision.from_recipe(r)  # a precision this machine or launcher cannot honour
    resolve_layout(r.train.layout, r.model.attn_implementation, r.model.gradient_checkpointing)
    check_model(r.model, r.lora)


def check_output_dir(output_dir: str) -> None:
    """The run directory must be a directory, or creatable: no file in its place or on its path."""
    path = Path(output_dir).expanduser()
    try:
        if path.exists() and not path.is_dir():
            raise RecipeError(f"output_dir: {output_dir} exists and is not a directory")
        existing = next(p for p in (path, *path.parents) if p.exists())
    except OSError as e:  # e.g. a name too long for the filesystem
        raise RecipeError(f"output_dir: {output_dir!r}: {e.strerror or e}") from None
    if not existing.is_dir():
        raise RecipeError(f"output_dir: {existing} is a file, so {output_dir} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RecipeError(f"output_dir: {existing} is not writable")


def check_model(model: ModelConfig, lora: LoraConfig) -> None:
    """Build the model on the meta device and apply the adapter; once per setting per process."""
    key = json.dumps([asdict(model), asdict(lora)], sort_keys=True)
    if key in _passed:
        return
    with torch.random.fork_rng(devices=[]):  # initialising even meta tensors draws from the CPU RNG
        try:
            base = meta_model(model)
        except ModelError as e:
            raise ModelError(f"model.name: {e}") from None
        check_lora(base, lora)
    _passed.add(key)


def meta_model(spec: ModelConfig) -> torch.nn.Module:
    """The base model with every parameter on the meta device, built from its config alone."""
    if spec.name == TINY_NAME:  # built in code, always with sdpa (as load_model does)
        with torch.device("meta"):
            return tiny_model()
    config = load_config(spec)
    try:
        return _from_config(config, spec, spec.attn_implementation)
    except (ImportError, ValueError) as e:
        err = e
    if spec.attn_implementation not in (None, "eager"):
        try:
            _from_config(config, spec, "eager")
        except (ImportError, ValueError):
            pass
        else:  # the model builds, so the attention implementation is what fails
            raise RecipeError(
                f"model.attn_implementation: {spec.attn_implementation!r} cannot be used here: {first_line(err)}"
            )
    raise ModelError(f"could not build model {spec.name!r} from its config: {first_line(err)}")


def _from_config(config, spec: ModelConfig, attn: str | None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(
            config, trust_remote_code=spec.trust_remote_code, attn_implementation=attn
        )


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names of the modules LoRA targets by name (`q_proj`, `down_proj`, `lm_head`, ...)."""
    from transformers.pytorch_utils import Conv1D

    kinds = (torch.nn.Linear, Conv1D)
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and isinstance(m, kinds)})


def check_lora(base: torch.nn.Module, lora: LoraConfig) -> None:
    """Apply the adapter to the meta model: exactly what training will do, without the weights.

    peft only fails when *no* listed name matches, so each name is first checked on its own: a
    typo among correct names would otherwise silently train fewer modules.
    """
    from peft.utils.error import NoMatchingPeftModuleError

    names = linear_module_names(base)
    targets = lora.target_modules
    if isinstance(targets, list):
        modules = [n for n, _ in base.named_modules() if n]
        missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in modules)]
        if missing:
            raise _target_error(missing, "no module of this model has that name", names)
    try:
        add_lora(base, lora)
    except ValueError as e:
        text = " ".join(str(e).split())
        unsupported = re.match(r"Target module (\w+)", text)
        if isinstance(e, NoMatchingPeftModuleError):
            reason = "no module of this model matches"
        elif unsupported and "not supported" in text:
            reason = f"it selects {unsupported[1]} modules, which LoRA cannot wrap"
        else:
            reason = text[:160]
        if isinstance(targets, str) and targets != "all-linear":
            reason += (
                " (a string other than all-linear is a regex over full module names; use a list of names)"
            )
        raise _target_error(targets, reason, names) from None


def _target_error(targets: list[str] | str, reason: str, names: list[str]) -> RecipeError:
    return RecipeError(
        f"lora.target_modules: {targets!r}: {reason}; available linear module names: {', '.join(names)}"
    )
