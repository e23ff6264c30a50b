"""Reference log-probabilities: the base with the adapter switched off, or a precomputed cache.

Never a second copy of the weights. `precompute` scores every example once with the adapter off
and caches the table on disk keyed by data + model fingerprint, so reruns (and β sweeps over the
same data and base) skip the reference forward entirely.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from align.data.batches import PairBatch
from align.objectives.types import SeqLogps

log = logging.getLogger("align.reference")


def adapter_off(model: torch.nn.Module):
    """Context manager that switches the LoRA adapter off on the (unwrapped) PEFT model."""
    return model.disable_adapter()


class AdapterOffReference:
    """Scores a batch with the same scorer, adapter disabled, no grad."""

    def __init__(self, scorer: torch.nn.Module, peft_model: torch.nn.Module) -> None:
        self.scorer, self.peft_model = scorer, peft_model

    @torch.no_grad()
    def __call__(self, batch: PairBatch) -> SeqLogps:
        with adapter_off(self.peft_model):
            return self.scorer(**batch.model_inputs())


class CachedReference:
    """Looks reference log-probs up by example index (chosen rows, then rejected rows)."""

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = table

    def __call__(self, batch: PairBatch) -> SeqLogps:
        i = batch.index.cpu()
        dev = batch.input_ids.device
        s = torch.cat([self.table["chosen_sum"][i], self.table["rejected_sum"][i]]).to(dev)
        n = torch.cat([self.table["chosen_n"][i], self.table["rejected_n"][i]]).to(dev)
        return SeqLogps(sum=s, n_tokens=n)


class MemoReference:
    """Remembers reference log-probs per example of a fixed set (the held-out split), so
    repeated evaluations pay the adapter-off forward once."""

    def __init__(self, inner: AdapterOffReference | CachedReference) -> None:
        self.inner = inner
        self.rows: dict[int, tuple[torch.Tensor, ...]] = {}

    def __call__(self, batch: PairBatch) -> SeqLogps:
        keys = batch.index.tolist()
        if not all(k in self.rows for k in keys):
            pair = PairBatch.split(self.inner(batch))
            for i, k in enumerate(keys):
                self.rows[k] = (
                    pair.chosen.sum[i],
                    pair.rejected.sum[i],
                    pair.chosen.n_tokens[i],
                    pair.rejected.n_tokens[i],
                )
        cs, rs, cn, rn = (torch.stack(col) for col in zip(*(self.rows[k] for k in keys)))
        return SeqLogps(sum=torch.cat([cs, rs]), n_tokens=torch.cat([cn, rn]))


def fingerprint(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def precompute(
    path: Path,
    n_examples: int,
    batches: Callable[[Sequence[int]], PairBatch],
    score: AdapterOffReference,
    accelerator,
    batch_size: int,
) -> CachedReference:
    """Compute (or load) the reference table for `n_examples`; ranks split the work."""
    if path.exists():
        log.info("reference log-probs: cached %s", path)
        return CachedReference(load_file(path))
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, n_examples, world))
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("idx", "cs", "rs", "cn", "rn")}
    for start in range(0, len(mine), batch_size):
        b = batches(mine[start : start + batch_size]).to(accelerator.device)
        pair = PairBatch.split(score(b))
        rows["idx"].append(b.index.cpu())
        rows["cs"].append(pair.chosen.sum.float().cpu())
        rows["rs"].append(pair.rejected.sum.float().cpu())
        rows["cn"].append(pair.chosen.n_tokens.float().cpu())
        rows["rn"].append(pair.rejected.n_tokens.float().cpu())
    local = {k: torch.cat(v) if v else torch.zeros(0) for k, v in rows.items()}
    gathered = [local]
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, local)
    table = {k: torch.zeros(n_examples) for k in ("chosen_sum", "rejected_sum", "chosen_n", "rejected_n")}
    for part in gathered:
        idx = part["idx"].long()
        for src, dst in (
            ("cs", "chosen_sum"),
            ("rs", "rejected_sum"),
            ("cn", "chosen_n"),
            ("rn", "rejected_n"),
        ):
            table[dst][idx] = part[src]
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(table, tmp)
        os.replace(tmp, path)
    accelerator.wait_for_everyone()
    return CachedReference(table)
