"""A CPU GEMM for a decode step's few rows: y = x @ w.T with x [B <= 32, K], fp32.

MKL runs this shape (8 rows against SmolLM2's 960-3072 x 576 weights, read cold every step) at
about 45 GFLOP/s of the 190 a large GEMM gets on these 2 cores. The kernel below keeps a tile of
2 weight rows x 4 input rows in AVX2 registers, so each weight vector is loaded once and used
for 4 rows, and prefetches the weight stream into L2 ahead of it. Measured on a quiet machine
(30 layers' distinct weights, cold, batch 8): 15-16 ms, reading weights at 26-28 GB/s where a
plain sum reads 32-34, against 39 ms for the weight-first MKL GEMM; the lm_head 3.1 against 8.7.
It is C compiled once per machine with the system C compiler into ALIGN_CACHE/kernels (about
0.4 s) and called through ctypes, which releases the GIL (and, in a compiled graph, through the
`align::skinny_linear` operator). No compiler, no AVX2, a failed build or ALIGN_SKINNY_GEMM=0:
`linear` returns None and the caller keeps MKL, after one warning that says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings

import torch

from align.util.files import cache_dir

MAX_ROWS = 32  # at 64 rows MKL's blocking ties (98 against 96 ms for the 30 layers, cold)

SOURCE = r"""
#include <immintrin.h>
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* Floats ahead of the weight stream to prefetch into L2. The hardware prefetcher stops at each
   4 KB page, and a thread that computes while it waits on DRAM leaves the stream idle: this one
   prefetch took the 30 layers' GEMMs at batch 8 from 33 to 16 ms (L1 hint: 25 ms). A prefetch
   past the end of `w` is harmless: prefetches never fault. */
#define AHEAD 4096
/* y[b][o] = sum_k x[b][k] * w[o][k]: tiles of 2 weight rows x 4 input rows, each weight
   vector loaded once per tile and used for 4 rows; partial tiles repeat their last row. The
   tile's two rows are adjacent, 2K floats: its first pass over the inputs prefetches one cache
   line (16 floats) per 8 k, which keeps the prefetch AHEAD floats in front. */
void skinny(const float *x, const float *w, float *y, long B, long O, long K, int threads) {
    long K8 = K & ~7L;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long o = 0; o < O; o += 2) {
        const float *w0 = w + o * K, *w1 = w + (o + 1 < O ? o + 1 : o) * K;
        for (long b = 0; b < B; b += 4) {
            const float *xr[4];
            for (int i = 0; i < 4; i++) xr[i] = x + (b + i < B ? b + i : B - 1) * K;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
            __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            for (long k = 0; k < K8; k += 8) {
                if (b == 0) _mm_prefetch((const char *)(w0 + 2 * k + AHEAD), _MM_HINT_T1);
                __m256 v0 = _mm256_loadu_ps(w0 + k), v1 = _mm256_loadu_ps(w1 + k);
                __m256 u = _mm256_loadu_ps(xr[0] + k);
                a00 = _mm256_fmadd_ps(v0, u, a00); a10 = _mm256_fmadd_ps(v1, u, a10);
                u = _mm256_loadu_ps(xr[1] + k);
                a01 = _mm256_fmadd_ps(v0, u, a01); a11 = _mm256_fmadd_ps(v1, u, a11);
                u = _mm256_loadu_ps(xr[2] + k);
                a02 = _mm256_fmadd_ps(v0, u, a02); a12 = _mm256_fmadd_ps(v1, u, a12);
                u = _mm256_loadu_ps(xr[3] + k);
                a03 = _mm256_fmadd_ps(v0, u, a03); a13 = _mm256_fmadd_ps(v1, u, a13);
            }
            float s[2][4] = {{hsum(a00), hsum(a01), hsum(a02), hsum(a03)},
                             {hsum(a10), hsum(a11), hsum(a12), hsum(a13)}};
            for (long k = K8; k < K; k++)
                for (int i = 0; i < 4; i++) {
                    s[0][i] += w0[k] * xr[i][k];
                    s[1][i] += w1[k] * xr[i][k];
                }
            for (int i = 0; i < 4 && b + i < B; i++) {
                y[(b + i) * O + o] = s[0][i];
                if (o + 1 < O) y[(b + i) * O + o + 1] = s[1][i];
            }
        }
    }
}
"""


def _build() -> ctypes.CDLL:
    """The compiled kernel, built at most once per source version (written under a temporary name
    and renamed, so a concurrent or interrupted build never leaves a half-written library)."""
    if os.environ.get("ALIGN_SKINNY_GEMM", "1") == "0":
        raise RuntimeError("ALIGN_SKINNY_GEMM=0")
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        raise RuntimeError(f"the CPU has no AVX2 ({torch.backends.cpu.get_cpu_capability()})")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC)")
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"skinny-{digest}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            c, so = os.path.join(tmp, "skinny.c"), os.path.join(tmp, "skinny.so")
            with open(c, "w") as f:
                f.write(SOURCE)
            flags = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
            done = subprocess.run([cc, *flags, c, "-o", so], capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-500:]}")
            os.replace(so, target)
    lib = ctypes.CDLL(str(target))
    lib.skinny.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 3 + [ctypes.c_int]
    lib.skinny.restype = None
    return lib


@functools.cache
def _library() -> ctypes.CDLL | None:
    try:
        return _build()
    except (RuntimeError, OSError) as e:
        warnings.warn(f"skinny GEMM off, decode linears use MKL: {e}", stacklevel=3)
        return None


def ready() -> bool:
    """Whether the kernel is built and loaded (building it on the first call). Call it before
    `torch.compile` traces `linear`: tracing cannot build, so it uses the kernel only when a
    call made eagerly has loaded it."""
    global _LOADED
    _LOADED = _library() is not None
    return _LOADED


_LOADED = False  # set by `ready`; read while tracing


def _run(lib: ctypes.CDLL, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    x, w = x.contiguous(), w.contiguous()
    y = x.new_empty(x.shape[0], w.shape[0])
    lib.skinny(
        x.data_ptr(), w.data_ptr(), y.data_ptr(), x.shape[0], w.shape[0], x.shape[1], torch.get_num_threads()
    )
    return y


@torch.library.custom_op("align::skinny_linear", mutates_args=())
def _op(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The kernel as an operator a compiled graph can call (a ctypes call cannot be traced)."""
    return _run(_library(), x, w)


@_op.register_fake
def _(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], w.shape[0])


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """x @ w.T through the kernel, or None where it does not apply (not CPU fp32, more than
    MAX_ROWS rows, autograd on, or the kernel unavailable; while tracing, not yet `ready`).
    Eager calls go straight to ctypes (the operator's dispatch costs more than a small GEMM's
    tail); traced ones through the `align::skinny_linear` operator."""
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or w.dtype != torch.float32
        or x.dim() != 2
        or x.shape[0] > MAX_ROWS
        or torch.is_grad_enabled()
    ):
        return None
    if torch.compiler.is_compiling():
        return _op(x, w) if _LOADED else None
    lib = _library()
    return None if lib is None else _run(lib, x, w)
