"""Typed recipe: YAML -> dataclasses, `key=value` overrides, everything checked before a model loads.

Checks are declarative: the type hints say what each key accepts (unknown keys get a
did-you-mean), and each numeric field carries its allowed `Range` in its metadata, which `build`
checks generically, so a new field cannot silently skip validation (a test walks every field).
Every float must be finite, every string non-empty. `validate` adds the few cross-field rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from align.util.errors import RecipeError

# Every method's name (align/methods/ holds each one's checks and wiring; a test keeps the two equal).
METHOD_NAMES = (
    *("dpo", "cdpo", "ipo", "hinge", "dpo_norm", "rpo", "apo_zero", "simpo", "orpo"),
    *("kto", "reward", "ppo", "rloo", "grpo", "sft"),
)

INT_MAX = 2**31 - 1  # counts and sizes end up in torch/numpy int32/int64 code paths
AttnImplementation = Literal["eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"]
# Who computes the rollout (align/models/rollout.py): auto (fast when it supports the model, else
# hf), fast, hf, or vllm (align/models/vllm_rollout.py: optional, needs vLLM and a CUDA GPU).
RolloutBackend = Literal["auto", "fast", "hf", "vllm"]
# The policy's log-probs of the sampled tokens (PPO's old log-probs, RLOO's KL): "forward" runs the
# policy over the rows (exactly the update's numbers: first-epoch ratios are 1); "sampler" takes
# them from the sampling logits, one forward less (TRL's way; align/models/rollout.py).
OldLogps = Literal["forward", "sampler"]


@dataclass(frozen=True)
class Range:
    """An interval such as `(0, 10]`; written the same way in the recipe source and in errors."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    @classmethod
    def parse(cls, text: str) -> Range:
        m = re.fullmatch(r"([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])", text)
        if not m:
            raise ValueError(f"not an interval: {text!r}")
        return cls(float(m[2]), float(m[3]), m[1] == "(", m[4] == ")")

    def __contains__(self, x: float) -> bool:
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below

    def __str__(self) -> str:
        num = lambda v: str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else f"{v:g}"
        return f"{'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"


def ranged(default: Any, interval: str, *, length: int | None = None) -> Any:
    """A dataclass field whose value (each element, for a list) must lie in `interval`."""
    meta = {"range": Range.parse(interval), "length": length}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


COUNT = f"[1, {INT_MAX}]"  # a number of steps or examples
EVERY = f"[0, {INT_MAX}]"  # a period in steps, 0 = off


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # embedded default, a local dir, or a hub id
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = (
        "auto"  # frozen base weights; auto: per precision
    )
    trust_remote_code: bool = False
    revision: str | None = None
    gradient_checkpointing: bool = False
    attn_implementation: AttnImplementation | None = "sdpa"  # None: transformers' default
    disable_dropout: bool = True  # the base model's dropout (not LoRA's): a deterministic reference
    # start from an earlier run: its adapter (a run dir, or a PEFT adapter dir) merged into the base
    # in float32 at load, so the reference is that model and the new LoRA trains on top of it
    adapter: str | None = None
    # merge: a new LoRA trains on the merged model; continue: the earlier adapter itself keeps
    # training (its LoRA shape is reused) and a frozen copy of it is the reference
    adapter_mode: Literal["merge", "continue"] = "merge"


@dataclass
class LoraConfig:
    r: int = ranged(16, "[1, 65536]")
    alpha: int = ranged(32, "[1, 65536]")
    dropout: float = ranged(0.05, "[0, 1)")
    target_modules: list[str] | str = "all-linear"  # names (checked against the model by preflight)


@dataclass
class DataConfig:
    card: str | None = None  # a data card name (data_cards/<name>.md) or path to a card
    path: str | None = None  # or a file / save_to_disk dir / dataset name, with `columns`
    columns: dict[str, str] = field(default_factory=dict)
    # auto: the card's, else what the method reads; prompts: prompt-only records (PPO); sft:
    # conversations, prompt + completion, or text (method sft, which also reads pairs' chosen replies)
    format: Literal["auto", "pairwise", "unpaired", "prompts", "sft"] = "auto"
    split: str | None = None  # named split of the source for training
    eval_split: str | None = None  # named split for evaluation, else a seeded held-out fraction
    heldout_fraction: float | None = ranged(None, "[0, 1)")  # None: the card's value (or 0.1)
    on_bad_record: Literal["error", "skip"] = "error"
    max_length: int = ranged(512, "[2, 1048576]")
    max_prompt_length: int = ranged(256, "[1, 1048576]")  # and < max_length
    chat_template: str = "auto"
    max_train_examples: int | None = ranged(None, COUNT)
    max_eval_examples: int | None = ranged(None, f"[0, {INT_MAX}]")  # 0: no held-out evaluation
    unpair: bool | None = (
        None  # kto on pairs: each pair -> one desirable + one undesirable record (None: auto)
    )
    label_threshold: float | None = ranged(None, "[-1e9, 1e9]")  # unpaired ratings >= this are desirable


@dataclass
class OptimConfig:
    lr: float = ranged(5e-4, "(0, 10]")
    weight_decay: float = ranged(0.0, "[0, 10]")
    adam_betas: list[float] = ranged([0.9, 0.999], "[0, 1)", length=2)
    adam_eps: float = ranged(1e-8, "(0, 1]")
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = ranged(0.1, "[0, 1]")
    warmup_steps: int | None = ranged(None, EVERY)  # overrides warmup_ratio when set
    max_grad_norm: float | None = ranged(1.0, "(0, 1e6]")  # None: no clipping


@dataclass
class TrainConfig:
    per_device_batch_size: int = ranged(4, "[1, 65536]")
    gradient_accumulation_steps: int = ranged(1, "[1, 65536]")
    epochs: float = ranged(1.0, "(0, 10000]")
    max_steps: int | None = ranged(None, COUNT)  # overrides epochs when set
    eval_every: int = ranged(0, EVERY)  # optimizer steps; 0 = only before and after training
    eval_batch_size: int = ranged(8, "[1, 65536]")
    save_every: int = ranged(0, EVERY)  # optimizer steps; 0 = no intermediate checkpoints
    keep_checkpoints: int = ranged(2, EVERY)  # 0 = keep all
    log_every: int = ranged(1, COUNT)
    chunk_tokens: int = ranged(1024, COUNT)  # LM-head chunk size in the log-prob path
    layout: Literal["auto", "packed", "shared", "padded"] = "auto"  # pairs and rollout rows (logprobs.py)
    compile: bool = False  # torch.compile each decoder layer (align/models/load.py: compile_layers)
    pack_tokens: int = ranged(512, COUNT)  # packed pairs: tokens per row (at least the longest pair)
    progress: bool = True
    max_bad_steps: int = ranged(3, COUNT)  # consecutive non-finite steps (skipped) before the run stops


@dataclass
class RewardConfig:
    """`method: reward` (align/objectives/reward.py)."""

    margin: float = ranged(0.0, "[0, 100]")  # Bradley-Terry margin m: -log σ(r_c - r_r - m)
    center_coef: float = ranged(
        0.0, "[0, 10]"
    )  # c · (r_c + r_r)² keeps scores near 0 (TRL's name: center_rewards_coefficient)


@dataclass
class PPOConfig:
    """`method: ppo` (align/methods/ppo.py). `beta` (top level) is the KL coefficient (initial, if adaptive).
    Defaults follow Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO"."""

    reward_run: str | None = None  # a `method: reward` run directory (same base model)
    reward_model: str | None = None  # or a local sequence-classification model directory
    reward_function: str | None = None  # or `align.rewards:<name>` / `module:function`
    value: Literal["auto", "reward", "fresh", "shared"] = "auto"  # auto: reward when reward_run is set
    max_new_tokens: int = ranged(64, "[1, 65536]")
    temperature: float = ranged(1.0, "(0, 100]")
    top_k: int = ranged(0, f"[0, {INT_MAX}]")  # 0: off
    top_p: float = ranged(1.0, "(0, 1]")
    backend: RolloutBackend = "auto"  # see RolloutBackend
    compile_decode: bool = (
        False  # torch.compile the fast backend's decode step (align/models/decode_compile.py)
    )
    missing_eos_penalty: float | None = ranged(
        None, "[0, 1e6]"
    )  # subtracted from the score of a response without EOS
    kl_estimator: Literal["k1", "k3"] = "k1"
    kl_target: float | None = ranged(None, "(0, 1e6]")  # adaptive β (Ziegler et al. 2019) when set
    kl_horizon: int = ranged(10000, COUNT)
    gamma: float = ranged(1.0, "[0, 1]")
    lam: float = ranged(0.95, "[0, 1]")
    clip: float = ranged(0.2, "(0, 10]")
    value_clip: float | None = ranged(0.2, "(0, 1e6]")  # None: unclipped value loss
    vf_coef: float = ranged(0.1, "[0, 1000]")
    entropy_coef: float = ranged(0.0, "[0, 1000]")
    old_logps: OldLogps = "forward"  # see OldLogps
    epochs: int = ranged(4, "[1, 1000]")  # PPO epochs over each rollout batch
    minibatches: int = ranged(1, "[1, 65536]")  # optimizer updates per epoch (the rollout batch split)
    whiten_rewards: bool = False
    score_clip: float | None = ranged(None, "(0, 1e6]")  # clip scores to [-c, c]
    whiten_advantages: bool = True
    eval_prompts: int = ranged(16, f"[0, {INT_MAX}]")  # held-out prompts sampled before/after (0: none)


@dataclass
class OnlineConfig:
    """`method: rloo` and `method: grpo` (align/methods/online.py): k sampled completions per prompt,
    advantages from the group, no value model. `beta` (top level) weighs the KL to the reference
    (adapters off): in the reward for rloo (Ahmadian et al. 2024), as a k3 loss term for grpo
    (Shao et al. 2024); 0 skips the reference forward. A micro-batch of the update is
    `train.per_device_batch_size` prompts with their `group_size` completions."""

    reward_run: str | None = None  # a `method: reward` run directory (same base model)
    reward_model: str | None = None  # or a local sequence-classification model directory
    reward_function: str | None = None  # or `align.rewards:<name>` / `module:function`
    group_size: int = ranged(4, "[2, 1024]")  # completions per prompt (RLOO's k, GRPO's G)
    max_new_tokens: int = ranged(64, "[1, 65536]")
    temperature: float = ranged(1.0, "(0, 100]")
    top_k: int = ranged(0, f"[0, {INT_MAX}]")  # 0: off
    top_p: float = ranged(1.0, "(0, 1]")
    backend: RolloutBackend = "auto"  # see RolloutBackend
    compile_decode: bool = (
        False  # torch.compile the fast backend's decode step (align/models/decode_compile.py)
    )
    missing_eos_penalty: float | None = ranged(None, "[0, 1e6]")  # subtracted from the score
    old_logps: OldLogps = "forward"  # see OldLogps
    clip: float | None = ranged(0.2, "(0, 10]")  # ε_low; None: unclipped ratios (rloo only)
    clip_high: float | None = ranged(None, "(0, 10]")  # ε_high (DAPO's clip-higher); None: = clip
    epochs: int = ranged(1, "[1, 1000]")  # passes over each rollout batch (1: on-policy)
    minibatches: int = ranged(1, "[1, 65536]")  # optimizer updates per epoch
    # grpo: the loss reduction and the advantage's denominator (align/objectives/grpo.py)
    normalisation: Literal["sequence", "token", "dr_grpo"] = "sequence"
    scale: Literal["group", "batch", "none"] = "group"
    # rloo: one ratio per completion or per token, and the reduction over its tokens (align/objectives/rloo.py)
    ratio: Literal["sequence", "token"] = "sequence"
    reduce: Literal["sum", "mean"] = "sum"
    whiten: bool = False  # rloo: whiten advantages over the process's rollout batch
    eval_prompts: int = ranged(16, f"[0, {INT_MAX}]")  # held-out prompts sampled before/after (0: none)


@dataclass
class LogConfig:
    trackers: list[Literal["tensorboard", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    project: str = "align"


@dataclass
class ReportConfig:
    """What the CLI prints before and after training (the quickstart's before/after view)."""

    eval_before: bool = True
    sample_prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = ranged(48, "[1, 65536]")


@dataclass
class HubConfig:
    """Push the run to a Hugging Face-compatible hub when `align train` finishes (align/hub/push.py)."""

    push: bool = False
    repo_id: str | None = None  # namespace/name; needed when push is true
    private: bool = False  # for a repo this push creates (an existing repo keeps its visibility)
    revision: str | None = None  # branch to commit to (created from main if missing); None: main
    endpoint: str | None = None  # None: HF_ENDPOINT, else https://huggingface.co


@dataclass
class Recipe:
    method: str = "dpo"
    beta: float = ranged(0.1, "[0, 1000]")  # 0 (no KL term) only for the sampling methods; orpo: its λ
    label_smoothing: float = ranged(0.0, "[0, 0.5)")  # conservative DPO (cDPO) when > 0; dpo only
    ipo_normalization: Literal["mean", "sum"] = "mean"  # ipo only: per-token mean (TRL) or sum
    rpo_alpha: float | None = ranged(None, "(0, 1000]")  # rpo only: NLL weight α (None: 1, the paper's)
    simpo_gamma: float | None = ranged(None, "[0, 100]")  # simpo only: target margin γ (None: 0.5, TRL's)
    desirable_weight: float = ranged(1.0, "(0, 100]")  # kto only: λ_D
    undesirable_weight: float = ranged(1.0, "(0, 100]")  # kto only: λ_U
    reference: Literal["adapter_off", "precompute"] = "adapter_off"
    output_dir: str = "runs/default"
    seed: int = ranged(0, "[0, 4294967295]")  # numpy's seed range
    resume: bool | Literal["auto"] = False
    cpu: bool | None = None  # None: use CUDA when present
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # see align/engine/precision.py
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- generic typed loading -------------------------------------------------------------------


class _Mismatch(RecipeError):
    """The value is of the wrong kind for the type (as opposed to a right kind with a bad value)."""


def _show(value: Any) -> str:
    """repr, cut short: an error line must stay one readable line whatever the value was."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(known))})"


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return f"one of {list(typing.get_args(tp))}"
    if typing.get_origin(tp) is list:
        return "a list"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, "a mapping")


def _number(value: Any, tp: type, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Mismatch(f"{where}: expected {tp.__name__}, got {_show(value)}")
    try:  # YAML 1.1 reads `1e-5` as a string; accept it for numeric fields
        out = int(value) if tp is int and isinstance(value, str) else tp(value)
    except (ValueError, OverflowError):
        raise _Mismatch(f"{where}: expected {tp.__name__}, got {_show(value)}") from None
    if tp is int and isinstance(value, float) and not value.is_integer():
        raise RecipeError(f"{where}: expected an integer, got {_show(value)}")
    if out != out:  # NaN (`.nan`, or "nan" via float()) passes every later range check
        raise RecipeError(f"{where}: expected a number, got {_show(value)}")
    if not math.isfinite(out):
        raise RecipeError(f"{where}: expected a finite number, got {_show(value)}")
    return out


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors: list[RecipeError] = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, where)
            except RecipeError as e:
                errors.append(e)
        # The right kind with a bad value (`inf`), or a bad item inside (`[1]` for list[str]), says
        # more than "expected A or B".
        specific = [e for e in errors if not isinstance(e, _Mismatch) or not str(e).startswith(f"{where}: ")]
        if specific:
            raise specific[0]
        raise _Mismatch(f"{where}: expected {' or '.join(map(_describe, args))}, got {_show(value)}")
    if origin is Literal:
        if isinstance(value, str | bool | int | type(None)) and value in args:
            return value
        raise _Mismatch(f"{where}: {_show(value)} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if value is None:  # a section whose keys are all commented out
            value = {}
        if not isinstance(value, dict):
            raise _Mismatch(f"{where}: expected a mapping, got {_show(value)}")
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch(f"{where}: expected a list, got {_show(value)}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(f"{where}: expected a mapping, got {_show(value)}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(f"{where}: expected true/false, got {_show(value)}")
    if tp in (int, float):
        return _number(value, tp, where)
    if tp is str:
        if not isinstance(value, str):
            raise _Mismatch(f"{where}: expected a string, got {_show(value)}")
        if not value or "\0" in value:
            raise RecipeError(f"{where}: expected a non-empty string without NUL bytes, got {_show(value)}")
        return value
    raise TypeError(f"{where}: recipe field type {tp!r} has no loader")  # a bug in this module


def _check_range(f: dataclasses.Field, value: Any, where: str) -> None:
    """The field's declared `Range` (and list length), checked for every value the user gave."""
    rng: Range | None = f.metadata.get("range")
    if rng is None or value is None:
        return
    length = f.metadata.get("length")
    items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    if length is not None and len(items) != length:
        raise RecipeError(f"{where}: expected {length} numbers in {rng}, got {_show(value)}")
    for i, v in items:
        if v not in rng:
            at = where if i is None else f"{where}[{i}]"
            raise RecipeError(f"{at}: {_show(v)} is out of range {rng}")


def build(cls: type, data: dict[Any, Any], where: str = "") -> Any:
    """Construct dataclass `cls` from a mapping: unknown keys (with a suggestion), types, ranges."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if not isinstance(key, str) or key not in fields:
            if isinstance(key, str) and re.fullmatch(r"[\w-]+", key):
                raise RecipeError(f"{path}: unknown key{_suggest(key, list(fields))}")
            at = f"{where}: " if where else ""  # a key that cannot be written as a path: quote it
            raise RecipeError(f"{at}unknown key {_show(key)}{_suggest(str(key), list(fields))}")
        kwargs[key] = _coerce(value, hints[key], path)
        _check_range(fields[key], kwargs[key], path)
    return cls(**kwargs)


def _yaml(text: str, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: e.g. a bad date
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecipeError(f"{what}: invalid YAML: {first}") from None


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        if node.get(p) is None:
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise RecipeError(f"override {dotted}: '{p}' is not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in items:
        if "=" not in item:
            raise RecipeError(f"override {_show(item)} must look like key=value (e.g. optim.lr=1e-5)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not all(key.split(".")):
            raise RecipeError(f"override {_show(item)}: the key must be a dotted path such as optim.lr")
        out.append((key, _yaml(raw, f"override {key}") if raw != "" else None))
    return out


def read_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Load YAML (safe_load), apply dotted overrides, check the schema: keys, types, ranges, the
    method's name and the cross-field rules every method shares. The method's own checks live with
    the methods (align.methods.load_recipe runs both); reading alone serves tools that look only at
    the data and model sections (`align data inspect` of a prompt-only file under the default
    method)."""
    data: Any = {}
    where = str(path or "recipe")
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"recipe file {p} does not exist")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RecipeError(f"{p}: cannot read the recipe ({type(e).__name__}: {e})") from None
        data = _yaml(text, str(p)) or {}
        if not isinstance(data, dict):
            raise RecipeError(f"{p}: a recipe must be a mapping at the top level")
    try:
        for key, value in parse_overrides(overrides or []):
            _set_path(data, key, value)
        recipe = build(Recipe, data)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}" if path else str(e)) from None
    validate(recipe, where)
    return recipe


def validate(r: Recipe, where: str) -> None:
    """Cross-field checks that need no model (per-field ranges are checked by `build`)."""
    if r.method not in METHOD_NAMES:
        raise RecipeError(
            f"{where}: method: unknown method '{r.method}'{_suggest(r.method, list(METHOD_NAMES))}"
        )
    if (r.data.card is None) == (r.data.path is None):
        raise RecipeError(f"{where}: data: set exactly one of data.card or data.path")
    _validate_hub(r.hub, where)
    if r.beta == 0 and r.method not in ("ppo", "rloo", "grpo", "reward", "sft"):
        raise RecipeError(
            f"{where}: beta: must be > 0 for '{r.method}' (it scales the log-ratio to the reference); "
            "0 (no KL term) applies to ppo, rloo and grpo"
        )
    if r.data.max_prompt_length >= r.data.max_length:
        raise RecipeError(
            f"{where}: data.max_prompt_length: {r.data.max_prompt_length} must be < "
            f"data.max_length ({r.data.max_length})"
        )


def _validate_hub(hub: HubConfig, where: str) -> None:
    from align.util.offline import is_repo_id

    if hub.push and hub.repo_id is None:
        raise RecipeError(f"{where}: hub.repo_id: hub.push is true but no repo id is given (namespace/name)")
    if hub.repo_id is not None and not is_repo_id(hub.repo_id):
        raise RecipeError(f"{where}: hub.repo_id: {_show(hub.repo_id)} is not a repo id like namespace/name")
    if hub.endpoint is not None and not hub.endpoint.startswith(("http://", "https://")):
        raise RecipeError(f"{where}: hub.endpoint: {_show(hub.endpoint)} is not an http(s) URL")


def dump_recipe(r: Recipe) -> str:
    return yaml.safe_dump(r.to_dict(), sort_keys=False)
