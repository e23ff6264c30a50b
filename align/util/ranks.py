"""One way for every process to take the same branch: OR a few flags over all ranks.

The loop (non-finite step, stop signal), checkpoint writes (did any rank fail?) and the fast-path
check (did any rank see a disagreement?) all need the same thing: one small all-reduce and one
host sync, then an identical decision everywhere. A bare barrier would hang when one rank fails.
"""

from __future__ import annotations

import torch


def any_rank(flags: torch.Tensor) -> list[bool]:
    """For each 0/1 entry of `flags` (any device), whether it is set on at least one process."""
    flags = flags.detach().float().reshape(-1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flags = flags.clone()
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.SUM)
    return [v > 0 for v in flags.tolist()]
