"""Reference log-probabilities: the base with the adapter switched off, or a precomputed cache.

Never a second copy of the weights. `precompute` scores every example once with the adapter off
and caches the table on disk keyed by `reference_cache_key`, so reruns (and β sweeps over the
same data and base) skip the reference forward entirely.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from align.data.batches import PairBatch
from align.models.load import model_identity
from align.objectives.types import SeqLogps
from align.recipe import ModelConfig

log = logging.getLogger("align.reference")


def adapter_off(model: torch.nn.Module):
    """Context manager that runs the (unwrapped) PEFT model as the reference: its LoRA adapters
    off, or the frozen copy of the adapter a `continue` run started from (align.models.adapters)."""
    from align.models.adapters import use_adapter

    return use_adapter(model, None)


class AdapterOffReference:
    """Scores a batch with the same scorer, adapter disabled, no grad, in eval mode (so any
    dropout left in the base never makes the reference noisy); the scorer's mode is restored.
    `scorer` may be the Accelerate-prepared wrapper: `.eval()`/`.train()` reach the module."""

    def __init__(self, scorer: torch.nn.Module, peft_model: torch.nn.Module) -> None:
        self.scorer, self.peft_model = scorer, peft_model

    @torch.no_grad()
    def __call__(self, batch: PairBatch) -> SeqLogps:
        was_training = self.scorer.training
        self.scorer.eval()
        try:
            with adapter_off(self.peft_model):
                return self.scorer(**batch.model_inputs())
        finally:
            self.scorer.train(was_training)


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
    """Remembers reference log-probs per batch of a fixed set (the held-out split, batched the
    same way every time), so repeated evaluations pay the adapter-off forward once.

    Keyed by the batch's example indices, not per example: a rank whose padded last batch repeats
    examples it has already scored must still run the forward its peers run, or a sharded (FSDP)
    model waits forever for its all-gather."""

    def __init__(self, inner: AdapterOffReference | CachedReference) -> None:
        self.inner = inner
        self.batches: dict[tuple[int, ...], SeqLogps] = {}

    def __call__(self, batch: PairBatch) -> SeqLogps:
        key = tuple(batch.index.tolist())
        if key not in self.batches:
            self.batches[key] = self.inner(batch)
        return self.batches[key]


def fingerprint(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def reference_cache_key(
    model_spec: ModelConfig,
    seed: int,
    data_fingerprint: str,
    mixed_precision: str,
    tokenize: Mapping[str, Any] | None = None,
    **extra: Any,
) -> str:
    """Key of a precomputed reference table: everything that changes its numbers.

    The data (`data_fingerprint`, plus the tokenization settings `tokenize` explicitly), the
    model (`model_identity`: recipe keys incl. dtype, attn_implementation, revision; config.json
    content; weight files; hub commit; tiny config + seed), the precision the forward runs at
    (`mixed_precision`: Accelerate's "no"/"bf16"/"fp16"; a bf16 run must never reuse an fp32
    table), the versions of align/torch/transformers, and any `extra` ingredients.
    """
    model = fingerprint(
        model_identity(model_spec, seed), mixed_precision, dict(tokenize or {}), _versions(), extra
    )
    return f"{data_fingerprint}-{model}"


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("align", "torch", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def precompute(
    path: Path,
    n_examples: int,
    batches: Callable[[Sequence[int]], PairBatch],
    score: AdapterOffReference,
    accelerator,
    batch_size: int,
) -> CachedReference:
    """Compute (or load) the reference table for `n_examples`; ranks split the work.

    Every rank runs the same number of forwards (a short share is padded with repeats of its
    own examples, whose rows are written twice with the same values): a sharded model (FSDP)
    all-gathers in each forward, so a rank with one batch fewer would leave the others waiting."""
    if path.exists():
        log.info("reference log-probs: cached %s", path)
        return CachedReference(load_file(path))
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, n_examples, world))
    per_rank = math.ceil(n_examples / world)
    mine += [mine[0] if mine else 0] * (per_rank - len(mine))
    rows: dict[str, list[torch.Tensor]] = {k: [] for k in ("idx", "cs", "rs", "cn", "rn")}
    for start in range(0, per_rank, batch_size):
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
