"""The decode step's CPU GEMM kernel (align/models/skinny_gemm.py): equal to F.linear on the
shapes it takes (partial tiles, a K that is not a multiple of 8), None where it does not apply,
and a clear fallback when it cannot be built."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from align.models import skinny_gemm


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A kernel built from nothing into an empty cache, forgotten again afterwards."""
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(skinny_gemm, "_LOADED", False)
    skinny_gemm._library.cache_clear()
    yield tmp_path
    skinny_gemm._library.cache_clear()


@torch.no_grad()
@pytest.mark.parametrize(
    "rows,out,k",
    [(8, 960, 576), (1, 7, 13), (5, 1, 9), (16, 33, 1536), (3, 2, 8), (13, 49, 70), (32, 67, 576)],
)
def test_equals_f_linear(fresh, rows, out, k):
    g = torch.Generator().manual_seed(rows * out + k)
    x, w = torch.randn(rows, k, generator=g), torch.randn(out, k, generator=g)
    y = skinny_gemm.linear(x, w)
    assert y is not None and y.shape == (rows, out)
    # fp32 sums of k products in another order: a few ulps of sqrt(k)-sized values
    torch.testing.assert_close(y, F.linear(x, w), rtol=1e-5, atol=1e-5 * k**0.5)
    assert [p.name for p in (fresh / "kernels").iterdir()] == [
        p.name for p in (fresh / "kernels").glob("skinny-*.so")
    ]


def test_declines_what_it_does_not_take(fresh):
    x, w = torch.randn(4, 16), torch.randn(8, 16)
    with torch.no_grad():
        assert skinny_gemm.linear(torch.randn(skinny_gemm.MAX_ROWS + 1, 16), w) is None
        assert skinny_gemm.linear(x.bfloat16(), w.bfloat16()) is None
        strided = torch.randn(16, 4).t()  # not contiguous: copied, still exact
        torch.testing.assert_close(skinny_gemm.linear(strided, w), F.linear(strided, w))
    assert skinny_gemm.linear(x, w) is None  # autograd on: MKL keeps the graph


def test_falls_back_with_the_reason(fresh, monkeypatch):
    monkeypatch.setenv("CC", "false")  # a compiler that fails
    with (
        torch.no_grad(),
        pytest.warns(UserWarning, match="skinny GEMM off, decode linears use MKL: false failed"),
    ):
        assert skinny_gemm.linear(torch.randn(2, 8), torch.randn(3, 8)) is None
    assert list((fresh / "kernels").glob("*.so")) == []  # nothing half-written left behind
    skinny_gemm._library.cache_clear()
    monkeypatch.setenv("ALIGN_SKINNY_GEMM", "0")
    with torch.no_grad(), pytest.warns(UserWarning, match="ALIGN_SKINNY_GEMM=0"):
        assert skinny_gemm.linear(torch.randn(2, 8), torch.randn(3, 8)) is None


def test_a_compiled_graph_calls_the_kernel(fresh):
    """Traced code reaches the kernel through the align::skinny_linear operator (ctypes cannot be
    traced), once `ready` has loaded it; the result equals F.linear."""
    from torch.profiler import profile

    assert skinny_gemm.ready()
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(8, 40, generator=g), torch.randn(24, 40, generator=g)
    step = torch.compile(lambda x, w: skinny_gemm.linear(x, w) * 2, fullgraph=True, dynamic=False)
    with torch.inference_mode(), profile() as prof:
        y = step(x, w)
    torch.testing.assert_close(y, 2 * F.linear(x, w), rtol=1e-5, atol=1e-5)
    assert any(e.key == "align::skinny_linear" for e in prof.key_averages())
