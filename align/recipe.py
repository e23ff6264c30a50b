"""Typed recipe: YAML -> dataclasses, `key=value` overrides, unknown keys rejected early.

Everything is validated before any model loads: unknown keys (with a did-you-mean), wrong
types, unknown method names, options that do not apply to the chosen method.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from align.errors import RecipeError


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # embedded default, a local dir, or a hub id
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    revision: str | None = None
    gradient_checkpointing: bool = False
    attn_implementation: str | None = "sdpa"
    disable_dropout: bool = True  # the base model's dropout (not LoRA's): a deterministic reference


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass
class DataConfig:
    card: str | None = None  # a data card name (data_cards/<name>.md) or path to a card
    path: str | None = None  # or a file / save_to_disk dir / dataset name, with `columns`
    columns: dict[str, str] = field(default_factory=dict)
    format: Literal["pairwise", "unpaired"] = "pairwise"
    split: str | None = None  # named split of the source for training
    eval_split: str | None = None  # named split for evaluation, else a seeded held-out fraction
    heldout_fraction: float | None = None  # None: the card's value (or 0.1)
    on_bad_record: Literal["error", "skip"] = "error"
    max_length: int = 512
    max_prompt_length: int = 256
    chat_template: str = "auto"
    max_train_examples: int | None = None
    max_eval_examples: int | None = None


@dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None  # overrides warmup_ratio when set
    max_grad_norm: float | None = 1.0


@dataclass
class TrainConfig:
    per_device_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    eval_every: int = 0  # optimizer steps; 0 = only before and after training
    eval_batch_size: int = 8
    save_every: int = 0  # optimizer steps; 0 = no intermediate checkpoints
    keep_checkpoints: int = 2
    log_every: int = 1
    chunk_tokens: int = 1024  # LM-head chunk size in the log-prob path
    share_prompt: bool = True  # run each pair's prompt once; both completions reuse its KV cache
    progress: bool = True
    max_bad_steps: int = 3  # consecutive non-finite steps (skipped) before the run stops


@dataclass
class LogConfig:
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # tensorboard, wandb
    project: str = "align"


@dataclass
class ReportConfig:
    """What the CLI prints before and after training (the quickstart's before/after view)."""

    eval_before: bool = True
    sample_prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = 48


@dataclass
class Recipe:
    method: str = "dpo"
    beta: float = 0.1
    label_smoothing: float = 0.0  # conservative DPO (cDPO) when > 0; dpo only
    ipo_normalization: Literal["mean", "sum"] = "mean"  # ipo only: per-token mean (TRL) or sum
    reference: Literal["adapter_off", "precompute"] = "adapter_off"
    output_dir: str = "runs/default"
    seed: int = 0
    resume: bool | Literal["auto"] = False
    cpu: bool | None = None  # None: use CUDA when present
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- generic typed loading -------------------------------------------------------------------


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(known))})"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, where)
            except RecipeError as e:
                errors.append(str(e))
        raise RecipeError(errors[-1] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise RecipeError(f"{where}: {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        try:  # YAML 1.1 reads `1e-5` as a string; accept it for numeric fields
            out = tp(value) if not isinstance(value, str) or tp is float else int(value)
        except (TypeError, ValueError):
            raise RecipeError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        if out != out:  # NaN (`.nan`, or "nan" via float()) passes every later range check
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise RecipeError(f"{where}: expected a string, got {value!r}")
    return value


def build(cls: type, data: dict[str, Any], where: str = "recipe") -> Any:
    """Construct dataclass `cls` from a mapping, rejecting unknown keys with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise RecipeError(f"{where}: unknown key '{key}'{_suggest(key, names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where != "recipe" else key)
    return cls(**kwargs)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {dotted}: '{p}' is not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        if "=" not in item:
            raise RecipeError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-5)")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw != "" else None))
    return out


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Load YAML (safe_load), apply dotted overrides, validate everything."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"recipe file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise RecipeError(f"{p}: invalid YAML: {e}") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{p}: a recipe must be a mapping at the top level")
    for key, value in parse_overrides(overrides or []):
        _set_path(data, key, value)
    try:
        recipe = build(Recipe, data)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}" if path else str(e)) from None
    validate(recipe, str(path or "recipe"))
    return recipe


def validate(r: Recipe, where: str) -> None:
    """Cross-field checks that need no model: method name, method-specific options, sizes."""
    from align.methods import METHODS

    if r.method not in METHODS:
        raise RecipeError(f"{where}: unknown method '{r.method}'{_suggest(r.method, list(METHODS))}")
    METHODS[r.method].check_recipe(r, where)
    if (r.data.card is None) == (r.data.path is None):
        raise RecipeError(f"{where}: set exactly one of data.card or data.path")
    if r.beta <= 0:
        raise RecipeError(f"{where}: beta must be > 0")
    if r.data.max_prompt_length >= r.data.max_length:
        raise RecipeError(f"{where}: data.max_prompt_length must be < data.max_length")
    if r.train.per_device_batch_size < 1 or r.train.gradient_accumulation_steps < 1:
        raise RecipeError(f"{where}: batch size and accumulation steps must be >= 1")
    for t in r.log.trackers:
        if t not in ("tensorboard", "wandb"):
            raise RecipeError(f"{where}: log.trackers: unknown tracker '{t}' (tensorboard, wandb)")


def dump_recipe(r: Recipe) -> str:
    return yaml.safe_dump(r.to_dict(), sort_keys=False)
