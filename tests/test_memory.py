"""`release_freed` gives freed heap memory back to the OS (glibc's malloc_trim): resident memory
falls after many small blocks (below glibc's mmap threshold, so they live on the heap) are freed."""

from __future__ import annotations

import gc

import psutil

from align.util.memory import release_freed


def test_freed_heap_memory_goes_back_to_the_os():
    proc = psutil.Process()
    blocks = [bytearray(64 * 1024) for _ in range(4096)]  # 256 MiB in 64 KiB heap chunks
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])  # touch every page: resident
    held = proc.memory_info().rss
    del blocks, b
    gc.collect()
    assert release_freed()  # glibc on this machine (and CI's)
    assert held - proc.memory_info().rss > 128 * 2**20
