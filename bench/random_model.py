"""Random-weight llama checkpoints with SmolLM2's tokenizer, for GPU timing without a download.

`python bench/dpo_vs_trl.py --write-random-model DIR --shape 135m|1.7b` writes config.json,
model.safetensors (float32, seeded) and the tokenizer files of the embedded SmolLM2-135M-Instruct.
The config is the embedded model's with the shape fields replaced, as ../shared/gpu/onbox.sh does
(`BIG=1` writes the same 1.7B shape to /tmp/big): head_dim 64, tied embeddings, vocab 49152.
Speed and memory figures only; the weights mean nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    "135m": {},  # the embedded model's own shape (SmolLM2-135M)
    "1.7b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=32,
        num_key_value_heads=32,
    ),  # SmolLM2-1.7B's dimensions
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
)


def source_dir() -> Path:
    """The embedded model's directory (config + tokenizer); on the GPU box, what onbox.sh wrote."""
    from align.models.embedded import embedded_model_dir

    return embedded_model_dir()


def shape_config(shape: str, src: Path | None = None) -> dict[str, Any]:
    """The embedded config.json with `shape`'s fields replaced."""
    cfg = json.loads(((src or source_dir()) / "config.json").read_text())
    cfg.update(SHAPES[shape])
    return cfg


def has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))


def copy_tokenizer(dst: Path, src: Path | None = None) -> None:
    src = src or source_dir()
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


def write_random_model(out: Path, shape: str, seed: int = 0) -> int:
    """Write the checkpoint; returns its parameter count. Built on the GPU when there is one (fast init)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    src = source_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(shape_config(shape, src), indent=1))
    copy_tokenizer(out, src)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out), dtype=torch.float32)
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def with_tokenizer(model: str, workdir: Path) -> str:
    """`model` itself, or for a local checkpoint directory without tokenizer files a view of it
    (symlinks) plus the embedded SmolLM2 tokenizer, so both sides load it the ordinary way."""
    path = Path(model).expanduser()
    if not path.is_dir() or has_tokenizer(path):
        return model
    view = workdir / "model"
    view.mkdir(parents=True, exist_ok=True)
    for f in path.iterdir():
        (view / f.name).symlink_to(f.resolve())
    copy_tokenizer(view)
    return str(view)
