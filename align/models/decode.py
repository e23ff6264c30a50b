"""A lean, exact decode path for llama-architecture models: the fast backend of rollout sampling.

At SmolLM2-135M's size on a CPU a decode step is dominated by per-op overhead (HF module calls,
PEFT's side GEMMs, a DynamicCache that grows by `cat`) rather than by arithmetic. This path runs
the same math with far fewer, bigger ops:

* weights prepared once per rollout (`decode_weights.prepare`): LoRA merged into buffers of their own,
  q/k/v and gate/up fused; a step's GEMMs run weight-first on CPU (`_linear`);
* a static KV cache [layers, batch, kv_heads, max_len, head_dim] allocated once and written in
  place; attention reads the slice [..., :cur_len, :] with a precomputed additive padding mask;
* GQA without repeating K/V: the one query token's heads are viewed as [kv_heads, group] rows
  that attend to their kv head, so one SDPA call per layer;
* RoPE cos/sin tables from the model's own rotary embedding, computed once per rollout;
* prefill on the real tokens only: the rows' prompts are packed (no padding) for the matmuls and
  attend causally one row at a time, then their K/V land at the left-padded columns.

Finished rows keep computing (static shapes); `rollout.sample` masks what they emit.
Prompts are left padded exactly as `rollout.py` does: column c of row b holds a real token when
c >= Tp - plen[b], the first real token is position 0, and the token emitted at decode step t
sits at column Tp + t with position plen[b] + t.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from align.models import skinny_gemm
from align.models.decode_weights import DecodeWeights, LayerWeights, prepare, unsupported

__all__ = ["StaticDecoder", "unsupported", "start"]


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm's arithmetic, in its order (float32 statistics, weight applied last)."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1) written as
    roll(x, half) * (sin with its first half negated): the same products, bit for bit."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, -1) * sin_signed


_KV: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _kv_buffers(like: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V caches of `shape`, reused from the last rollout of the same shape (allocating and
    zeroing tens of MB per rollout costs more than a few decode steps). Zeroed once: stale
    values stay finite, and columns no row may see are masked to -inf (a NaN would survive it)."""
    key = (shape, like.dtype, like.device)
    if key not in _KV:
        _KV.clear()  # one shape at a time
        _KV[key] = (like.new_zeros(shape), like.new_zeros(shape))
    return _KV[key]


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T for a decode step's few rows. On CPU through skinny_gemm's AVX2 kernel where it
    applies (fp32, <= 32 rows, no autograd; an 8 x 64 rollout 130.7 -> 162-194 tokens/s), else as
    MKL's (weight @ x.T).T: the weight is the GEMM's untransposed left operand, which streams it
    from memory in its stored order. With SmolLM2-135M's 538 MB of weights read cold from DRAM at
    every step (2 cores, batch 8), that made the step's linears 45 ms against 66 ms for F.linear
    and 77 ms for MKL's packed GEMM (both faster only on cache-resident weights)."""
    if x.device.type != "cpu":
        return F.linear(x, weight)
    y = skinny_gemm.linear(x, weight)
    return y if y is not None else torch.mm(weight, x.t()).t().contiguous()


class StaticDecoder:
    """One rollout's decoding state: weights, static KV cache, padding mask, RoPE tables.

    `prefill(ids, plen)` returns the logits of each row's last prompt token; each `step(tok)`
    appends one token per row and returns the next logits [B, V]."""

    def __init__(
        self, weights: DecodeWeights, batch: int, max_len: int, compiled: Callable | None = None
    ) -> None:
        w = weights
        self.w = w
        dev, dtype = w.embed.device, w.embed.dtype
        shape = (len(w.layers), batch, w.kv_heads, max_len, w.head_dim)
        self.k, self.v = _kv_buffers(w.embed, shape)
        self.k_layers, self.v_layers = self.k.unbind(0), self.v.unbind(0)  # [B, kv_heads, L, D] each
        self.mask = torch.zeros((batch, 1, 1, max_len), device=dev, dtype=dtype)
        self.max_len = max_len
        self.col = 0  # the next column to write
        self.col_t = torch.zeros(1, dtype=torch.long, device=dev)  # the same, for `decode_layer`
        self.compiled = compiled  # a compiled `decode_layer` (decode_compile.py), or None: eager
        self.pos = torch.zeros(batch, dtype=torch.long, device=dev)
        positions = torch.arange(max_len, device=dev)[None]
        cos, sin = w.rotary(self.mask.new_zeros(1), positions)  # [1, max_len, D], the model's own
        half = w.head_dim // 2
        self.cos = cos[0].to(dtype)
        self.sin = torch.cat([-sin[0, :, :half], sin[0, :, half:]], -1).to(dtype)
        self.group = w.heads // w.kv_heads

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor, plen: torch.Tensor) -> torch.Tensor:
        """Run the left-padded prompts ids [B, Tp] (plen real tokens each), fill the cache's first
        Tp columns, return the logits [B, V] at each row's last token."""
        w, tp = self.w, ids.shape[1]
        first = tp - plen  # [B] column of each row's first real token
        cols = torch.arange(tp, device=ids.device)
        self.mask.fill_(float("-inf"))  # a decode step opens its own column
        self.mask[:, 0, 0, :tp].masked_fill_(cols[None] >= first[:, None], 0.0)
        real = cols[None] >= first[:, None]  # [B, Tp]
        rows, cidx = real.nonzero(as_tuple=True)  # row-major: rows packed one after another
        pos = cidx - first[rows]
        x = F.embedding(ids[rows, cidx], w.embed)  # [T, H]
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # [T, 1, D]
        ends = plen.cumsum(0).tolist()
        spans = list(zip([0, *ends[:-1]], ends))
        nq, nkv, d = w.heads, w.kv_heads, w.head_dim
        for i, lw in enumerate(w.layers):
            h = _rms(x, lw.ln1, w.eps)
            qkv = F.linear(h, lw.qkv)
            qk = _rope(qkv[:, : (nq + nkv) * d].view(-1, nq + nkv, d), cos, sin)
            q, k = qk[:, :nq], qk[:, nq:]
            v = qkv[:, (nq + nkv) * d :].view(-1, nkv, d)
            self.k[i].transpose(1, 2)[rows, cidx] = k
            self.v[i].transpose(1, 2)[rows, cidx] = v
            att = torch.empty((x.shape[0], nq, d), device=x.device, dtype=x.dtype)
            for s, e in spans:  # causal attention within each row's own tokens
                qs = q[s:e].transpose(0, 1)[None]
                ks = k[s:e].transpose(0, 1).repeat_interleave(self.group, 0)[None]
                vs = v[s:e].transpose(0, 1).repeat_interleave(self.group, 0)[None]
                att[s:e] = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True)[0].transpose(0, 1)
            x = self._mlp(torch.addmm(x, att.view(x.shape[0], -1), lw.o.t()), lw)
        self.col, self.pos = tp, plen.clone()
        last = x[torch.tensor(ends, device=x.device) - 1]
        return F.linear(_rms(last, w.norm, w.eps), w.lm_head)

    def _mlp(self, x: torch.Tensor, lw: LayerWeights) -> torch.Tensor:
        """x + down(silu(gate(h)) * up(h)), h = post-attention RMSNorm(x)."""
        gu = F.linear(_rms(x, lw.ln2, self.w.eps), lw.gate_up)
        n = self.w.intermediate
        return torch.addmm(x, F.silu(gu[:, :n]) * gu[:, n:], lw.down.t())

    @torch.inference_mode()
    def step(self, tok: torch.Tensor) -> torch.Tensor:
        """Append token tok [B] to every row (column `col`, position `pos`); logits [B, V]."""
        c = self.col
        if c >= self.max_len:
            raise RuntimeError(f"decode: the static cache holds {self.max_len} columns")
        self.mask[..., c] = 0.0  # the column this step writes (prefill masked every later one)
        self.col_t.fill_(c)
        w = self.w
        dims = (w.heads, w.kv_heads, w.head_dim, w.intermediate, w.eps)
        cos, sin = self.cos[self.pos][:, None], self.sin[self.pos][:, None]  # [B, 1, D]
        x = F.embedding(tok, w.embed)
        if self.compiled is None:  # eager: attend to the columns written so far only
            mask = self.mask[..., : c + 1]
            for lw, k, v in zip(w.layers, self.k_layers, self.v_layers):
                x = decode_layer(x, lw, k, v, mask, cos, sin, self.col_t, c + 1, dims)
        else:  # fixed shapes: every column, the unwritten ones masked
            self.compiled.begin_step()
            for lw, k, v in zip(w.layers, self.k_layers, self.v_layers):
                x = self.compiled(x, lw, k, v, self.mask, cos, sin, self.col_t, self.max_len, dims)
        self.col = c + 1
        self.pos.add_(1)
        return _linear(_rms(x, w.norm, w.eps), w.lm_head)


def decode_layer(
    x: torch.Tensor,
    lw: LayerWeights,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    col: torch.Tensor,
    upto: int,
    dims: tuple[int, int, int, int, float],
) -> torch.Tensor:
    """One decoder layer of a decode step, a function of tensors (what `torch.compile` takes; every
    layer has the same shapes, so one compiled graph serves all): hidden x [B, H] of the tokens at
    cache column `col` ([1] long), RoPE cos/sin [B, 1, D] of their positions; writes their K/V into
    this layer's cache k, v [B, kv_heads, L, D] in place and attends over columns [0, upto) with
    the additive mask [B, 1, 1, upto]. dims: (heads, kv_heads, head_dim, intermediate, eps)."""
    nq, nkv, d, n, eps = dims
    b = x.shape[0]
    qkv = _linear(_rms(x, lw.ln1, eps), lw.qkv)
    qk = _rope(qkv[:, : (nq + nkv) * d].view(b, nq + nkv, d), cos, sin)
    k.index_copy_(2, col, qk[:, nq:, None])
    v.index_copy_(2, col, qkv[:, (nq + nkv) * d :].view(b, nkv, 1, d))
    # one query token: its heads, grouped by kv head, are the "queries" of that kv head
    q = qk[:, :nq].reshape(b, nkv, nq // nkv, d)
    att = F.scaled_dot_product_attention(q, k[:, :, :upto], v[:, :, :upto], mask)
    x = x + _linear(att.reshape(b, nq * d), lw.o)
    gu = _linear(_rms(x, lw.ln2, eps), lw.gate_up)
    return x + _linear(F.silu(gu[:, :n]) * gu[:, n:], lw.down)


def start(
    model: torch.nn.Module, ids: torch.Tensor, plen: torch.Tensor, max_new_tokens: int, compile: bool = False
):
    """Prepare `model`'s weights, prefill the prompts; (first logits [B, V], step) for
    `rollout.sample`'s loop. `compile`: the steps run a `torch.compile`d `decode_layer`
    (decode_compile.py). Raises ValueError when `unsupported(model)` gives a reason."""
    reason = unsupported(model)
    if reason:
        raise ValueError(f"decode: the fast backend cannot run this model: {reason}")
    b, length = ids.shape[0], ids.shape[1] + max_new_tokens
    w, compiled = prepare(model), None
    if compile:
        from align.models.decode_compile import CompiledLayer, cache_length

        length, compiled = cache_length(length), CompiledLayer(ids.device, decode_layer)
    decoder = StaticDecoder(w, b, length, compiled)
    if compiled is not None:
        compiled.prepare(w, decoder.k_layers, decoder.v_layers)
    return decoder.prefill(ids, plen), decoder.step
