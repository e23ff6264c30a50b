"""Optional `torch.compile` of the fast backend's decode step (recipe `ppo.compile_decode` /
`online.compile_decode`, `sample(..., compile=True)`).

The compiled unit is `decode.decode_layer`, one decoder layer of a step: every layer has the same
shapes, so one graph serves all 30 of SmolLM2's (compiling the whole unrolled step took over 10
minutes here; one layer compiles in seconds). Its shapes are fixed: the cache column is a
tensor, attention runs over the whole static cache with the unwritten columns masked, and the
cache length is rounded up to `LENGTH_BUCKET` columns so prompts of different lengths share the
graph. `dynamic=False`: one compile per (batch, cache length), none per token
(`TORCH_LOGS=recompiles` shows it).

On CUDA the mode is "reduce-overhead" (CUDA graphs); the per-layer caches and the weights are
marked as static addresses (the merged weight buffers are refilled in place between rollouts,
decode_weights.py), so graphs are recorded once and replayed. Not measured: no GPU here. On CPU
it is inductor's default mode (C++ kernels: needs a working C++ compiler); the linears call
skinny_gemm's kernel as the `align::skinny_linear` operator, loaded before the first trace. When compiling fails
(no compiler, an unsupported op) a warning says why and the eager layer runs from then on: the
same tokens, only slower.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from align.models import skinny_gemm

LENGTH_BUCKET = 64  # cache columns are a multiple of this with compile on (bounded recompiles)

_COMPILED: dict[str, Callable] = {}
_FAILED: dict[str, str] = {}  # device type -> why compiling failed (then eager, no retries)


def cache_length(length: int) -> int:
    """`length` rounded up to a multiple of LENGTH_BUCKET."""
    return -(-length // LENGTH_BUCKET) * LENGTH_BUCKET


def _compiled(device_type: str, layer: Callable) -> Callable:
    if device_type not in _COMPILED:
        mode = "reduce-overhead" if device_type == "cuda" else None
        _COMPILED[device_type] = torch.compile(layer, dynamic=False, fullgraph=True, mode=mode)
    return _COMPILED[device_type]


class CompiledLayer:
    """`layer` (decode.py's `decode_layer`, handed in: this module does not import decode.py),
    compiled for `device`, with the eager fallback described above."""

    def __init__(self, device: torch.device, layer: Callable) -> None:
        self.kind, self.layer = device.type, layer
        if self.kind == "cpu":  # the traced step calls the GEMM kernel only once it is loaded
            skinny_gemm.ready()

    def prepare(self, w, k: Sequence[torch.Tensor], v: Sequence[torch.Tensor]) -> None:
        """CUDA graphs: tensors whose address stays put between steps (and rollouts) are not
        copied into the graph's own buffers at every replay."""
        if self.kind != "cuda":
            return
        for lw, k_i, v_i in zip(w.layers, k, v):
            for t in (k_i, v_i, lw.ln1, lw.qkv, lw.o, lw.ln2, lw.gate_up, lw.down):
                torch._dynamo.mark_static_address(t)

    def begin_step(self) -> None:
        """CUDA graphs: a new decode step; the last step's outputs have been consumed."""
        if self.kind == "cuda" and self.kind not in _FAILED:
            torch.compiler.cudagraph_mark_step_begin()

    def __call__(self, x: torch.Tensor, *args) -> torch.Tensor:
        if self.kind not in _FAILED:
            try:
                return _compiled(self.kind, self.layer)(x, *args)
            except (torch._dynamo.exc.BackendCompilerFailed, torch._dynamo.exc.TorchDynamoException) as e:
                _FAILED[self.kind] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
                warnings.warn(
                    f"decode: torch.compile of the decode step failed on {self.kind} ({_FAILED[self.kind]}); "
                    "the eager step runs instead (same tokens, slower). Set compile_decode: false to "
                    "silence this.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self.layer(x, *args)


def failed(device_type: str) -> str | None:
    """Why compiling the decode step failed on `device_type` (None: it did not, or not yet)."""
    return _FAILED.get(device_type)
