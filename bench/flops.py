"""Model FLOPs of one LoRA DPO step, and MFU: the same useful-work count for every side of the bench.

Shapes (a llama-style config): d = hidden_size, f = intermediate_size, l = num_hidden_layers,
h = num_attention_heads, k = num_key_value_heads, e = head_dim (d / h unless set), V = vocab_size.

    N_dec  = l * (d*h*e + 2*d*k*e + h*e*d + 3*d*f)    frozen decoder matmul weights (q, k, v, o, gate, up, down)
    N_lora = r * sum over adapted linears (in + out)  trainable LoRA weights (all-linear: the seven above)

A DPO step with the reference = the base with the adapter off scores 2 sequences per pair
(prompt+chosen, prompt+rejected). Over the step's real (non-pad) sequences, with L a sequence's length,
T = sum L (real tokens) and C = the completion tokens whose log-probs enter the loss:

    dense      6 * N_dec * T          policy forward 2NT + backward to the activations 2NT (frozen
                                      weights: no weight gradients) + reference forward 2NT
    LoRA       6 * N_lora * T         forward, activation and weight gradients; policy only
    LM head    6 * d * V * C          same three passes, over the scored positions only (tied to the
                                      frozen embedding: no weight gradient)
    attention  8 * l * h * e * sum L*(L+1)
                                      causal QK^T and AV: forward 2*h*e*L*(L+1) per layer (only the
                                      unmasked half), backward twice that, reference forward once more

It counts the work the objective defines, not what a side executes: a side that runs each prompt once
(ours), or scores only completion positions, gets the same count as one that repeats the prompt and
projects every position through the LM head (TRL 1.16 does the latter on CPU; with Triton on CUDA it
projects only labelled positions). Both sides of the bench use this one formula on the same batches,
so MFU differences are speed differences. Embedding lookups, norms, activations, softmax and the
optimizer are left out (small next to the matmuls).

MFU = model FLOPs / wall time / the device's dense peak for the compute dtype: bf16 tensor-core peak
for `--precision bf16`, plain FP32 (not TF32) for fp32, which is what torch runs by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")

# Dense (no sparsity) peak TFLOP/s by device name substring, most specific first: (bf16, fp32).
# NVIDIA datasheets: H100/H200 SXM 989 / 67, H100/H200 NVL 835 / 60, H100 PCIe 756 / 51, A100 312 / 19.5.
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200 NVL", 835.0, 60.0),
    ("H200", 989.0, 67.0),
    ("H100 NVL", 835.0, 60.0),
    ("H100 PCIe", 756.0, 51.0),
    ("H100", 989.0, 67.0),
    ("A100", 312.0, 19.5),
)


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, cfg: Any) -> Shape:
        """From a transformers llama-style config (or anything with the same attribute names)."""
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        return cls(
            hidden=cfg.hidden_size,
            intermediate=cfg.intermediate_size,
            layers=cfg.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=cfg.vocab_size,
        )

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each decoder-layer linear."""
        d, f, q, kv = (
            self.hidden,
            self.intermediate,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
        )
        return {
            "q": (d, q),
            "k": (d, kv),
            "v": (d, kv),
            "o": (q, d),
            "gate": (d, f),
            "up": (d, f),
            "down": (f, d),
        }

    def decoder_params(self) -> int:
        return self.layers * sum(i * o for i, o in self.linears().values())

    def lora_params(self, r: int, targets: tuple[str, ...] = LORA_TARGETS) -> int:
        return self.layers * sum(r * (i + o) for name, (i, o) in self.linears().items() if name in targets)


@dataclass(frozen=True)
class Work:
    """What a step (or several, summed) processed: the inputs of the FLOPs formula."""

    tokens: int = 0  # T: real tokens over all sequences
    attn_pairs: int = 0  # sum of L*(L+1) over sequences
    scored: int = 0  # C: completion tokens scored

    def __add__(self, other: Work) -> Work:
        return Work(
            self.tokens + other.tokens, self.attn_pairs + other.attn_pairs, self.scored + other.scored
        )

    @classmethod
    def of(cls, lengths: list[int], scored: int) -> Work:
        return cls(sum(lengths), sum(n * (n + 1) for n in lengths), scored)


def step_flops(shape: Shape, lora_params: int, work: Work) -> dict[str, float]:
    """The formula of the module docstring, term by term (and `total`)."""
    terms = {
        "dense": 6.0 * shape.decoder_params() * work.tokens,
        "lora": 6.0 * lora_params * work.tokens,
        "lm_head": 6.0 * shape.hidden * shape.vocab * work.scored,
        "attention": 8.0 * shape.layers * shape.heads * shape.head_dim * work.attn_pairs,
    }
    terms["total"] = sum(terms.values())
    return terms


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Dense peak of a known GPU for this precision ("bf16" or "fp32"); None when unknown."""
    for needle, bf16, fp32 in PEAK_TFLOPS:
        if needle.lower() in device_name.lower():
            return bf16 if precision == "bf16" else fp32
    return None


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1] (None without a peak)."""
    return None if not peak or seconds <= 0 else flops / seconds / (peak * 1e12)
