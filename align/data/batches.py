"""Tokenized examples -> padded tensors (typed batches), and a resumable batch plan.

Masks come from lengths, never from `token != pad`: SmolLM2's pad is its EOS, which also ends
every chat turn. Pairs are laid out chosen rows first, then rejected rows, so one forward pass
scores both (`PairBatch.split`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from align.data.packing import pack_pairs, pack_sequences
from align.objectives.types import PairLogps, SeqLogps


@dataclass
class SeqBatch:
    """Right-padded sequences: attention over [0, length), loss over [prompt_len, length)."""

    input_ids: torch.Tensor  # [N, T]
    attention_mask: torch.Tensor  # [N, T]
    loss_mask: torch.Tensor  # [N, T]

    def to(self, device: torch.device) -> SeqBatch:
        """A copy on `device`; host tensors are pinned on CUDA so the copies overlap compute."""
        return type(self)(**{k: _to(v, torch.device(device)) for k, v in self.__dict__.items()})

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for `SequenceScorer.forward`."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "loss_mask": self.loss_mask,
        }


@dataclass
class PairBatch(SeqBatch):
    """B pairs as 2B rows: rows [0, B) are prompt+chosen, rows [B, 2B) prompt+rejected."""

    index: torch.Tensor  # [B] dataset positions (keys for cached reference log-probs)
    # The same pairs with the prompt stored once, for the shared-prompt forward (see logprobs.py).
    prompt_ids: torch.Tensor | None = None  # [B, Tp] right-padded
    prompt_len: torch.Tensor | None = None  # [B]
    completion_ids: torch.Tensor | None = None  # [2B, Tc] right-padded, chosen rows then rejected
    completion_len: torch.Tensor | None = None  # [2B]
    # Whole pairs packed into rows with a block mask (see align/data/packing.py).
    packed: dict[str, torch.Tensor] | None = None

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = super().model_inputs()
        if self.prompt_ids is not None:
            inputs.update(
                prompt_ids=self.prompt_ids,
                prompt_len=self.prompt_len,
                completion_ids=self.completion_ids,
                completion_len=self.completion_len,
            )
        if self.packed is not None:
            inputs["packed"] = self.packed
        return inputs

    @property
    def num_examples(self) -> int:
        return self.index.shape[0]

    @staticmethod
    def split(logps: SeqLogps) -> PairLogps:
        b = logps.sum.shape[0] // 2
        return PairLogps(
            chosen=SeqLogps(logps.sum[:b], logps.n_tokens[:b]),
            rejected=SeqLogps(logps.sum[b:], logps.n_tokens[b:]),
        )


def _to(v, device: torch.device):
    if v is None or isinstance(v, int | float):
        return v
    if isinstance(v, dict):
        return {k: _to(t, device) for k, t in v.items()}
    if device.type == "cuda" and v.device.type == "cpu":
        return v.pin_memory().to(device, non_blocking=True)
    return v.to(device)


def pad_rows(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into [N, max_len]; returns (ids, lengths)."""
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, lengths


def pad_sequences(prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_id: int) -> SeqBatch:
    """Concatenate prompt+completion per row and right-pad; masks from lengths."""
    ids, total = pad_rows([p + c for p, c in zip(prompts, completions)], pad_id)
    pos = torch.arange(ids.shape[1])
    plen = torch.tensor([len(p) for p in prompts])
    attention = (pos[None, :] < total[:, None]).long()
    loss = (pos[None, :] >= plen[:, None]) & (pos[None, :] < total[:, None])
    return SeqBatch(ids, attention, loss.long())


def collate_pairs(examples: Sequence[dict], pad_id: int, pack_tokens: int | None = 1024) -> PairBatch:
    """Both layouts of B pairs: 2B padded rows (+ prompts once) and, unless `pack_tokens` is
    None, the packed rows of at most `pack_tokens` tokens (or the longest pair)."""
    prompts = [e["prompt_ids"] for e in examples]
    completions = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
    seq = pad_sequences(prompts + prompts, completions, pad_id)
    index = torch.tensor([e["index"] for e in examples], dtype=torch.long)
    prompt_ids, prompt_len = pad_rows(prompts, pad_id)
    completion_ids, completion_len = pad_rows(completions, pad_id)
    return PairBatch(
        seq.input_ids,
        seq.attention_mask,
        seq.loss_mask,
        index,
        prompt_ids,
        prompt_len,
        completion_ids,
        completion_len,
        None
        if pack_tokens is None
        else pack_pairs(
            prompts,
            [e["chosen_ids"] for e in examples],
            [e["rejected_ids"] for e in examples],
            pad_id,
            pack_tokens,
        ),
    )


@dataclass
class BatchPlan:
    """Which examples each rank sees at each micro-step; a pure function of (seed, epoch, step).

    One global micro-batch is `per_device * world` examples in a seeded per-epoch permutation;
    rank r takes its contiguous slice. So a 1-process run with per_device=4 and a 2-process run
    with per_device=2 see the same examples per optimizer step, and resuming needs only the
    (epoch, micro-step) position. The tail that does not fill a whole optimizer step is dropped
    each epoch (reported), so every step averages over the same number of examples.
    The last epoch's order is cached: recomputing a 1M-example permutation per micro-batch costs
    ~80 ms each.
    """

    n_examples: int
    per_device: int
    world: int
    accumulation: int
    seed: int
    shuffle: bool = True
    _cached: tuple[int, list[int]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def global_micro(self) -> int:
        return self.per_device * self.world

    @property
    def steps_per_epoch(self) -> int:
        return self.n_examples // (self.global_micro * self.accumulation)

    def order(self, epoch: int) -> list[int]:
        """The epoch's example order (a copy: callers may mutate it)."""
        return list(self._order(epoch))

    def _order(self, epoch: int) -> list[int]:
        if self._cached is None or self._cached[0] != epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                order = torch.randperm(self.n_examples, generator=g).tolist()
            else:
                order = list(range(self.n_examples))
            self._cached = (epoch, order)
        return self._cached[1]

    def micro_batch(self, epoch: int, step: int, micro: int, rank: int) -> list[int]:
        """Example indices for `rank` at optimizer `step` (within `epoch`), accumulation slot `micro`."""
        start = ((step * self.accumulation) + micro) * self.global_micro + rank * self.per_device
        return self._order(epoch)[start : start + self.per_device]


@dataclass
class UnpairedBatch(PairBatch):
    """N unpaired records laid out as a PairBatch: the "chosen" rows are the records' own
    completions, the "rejected" rows their mismatched KL completions (another record's completion
    after this record's prompt, see `kl_partners`); `desirable` [N] holds the labels. So the
    layouts, the scorer and a precomputed reference table (keyed by example) serve KTO unchanged."""

    desirable: torch.Tensor | None = None  # [N] bool


def kl_partners(n: int, seed: int) -> list[int]:
    """partner[i] != i for n >= 2: whose completion follows record i's prompt in the KL rows.

    One seeded n-cycle (each record's successor in a random order), fixed for the run. Fixed
    per record rather than rotated within each micro-batch (TRL's way), so the data can be
    shuffled, any batch size works (1 included), every process and accumulation split sees the
    same pairs, and `reference: precompute` can store the KL rows' reference log-probs per record.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + 7)
    order = torch.randperm(n, generator=g).tolist()
    partner = [0] * n
    for k, i in enumerate(order):
        partner[i] = order[(k + 1) % n]
    return partner


def collate_unpaired(
    examples: Sequence[dict],
    kl_completions: Sequence[list[int]],
    pad_id: int,
    max_length: int,
    pack_tokens: int | None = 512,
) -> UnpairedBatch:
    """A KL completion is cut to fit `max_length` after its foreign prompt (at least one token)."""
    as_pairs = [
        {
            "index": e["index"],
            "prompt_ids": e["prompt_ids"],
            "chosen_ids": e["completion_ids"],
            "rejected_ids": kl[: max(1, max_length - len(e["prompt_ids"]))],
        }
        for e, kl in zip(examples, kl_completions)
    ]
    batch = collate_pairs(as_pairs, pad_id, pack_tokens=pack_tokens)
    desirable = torch.tensor([bool(e["label"]) for e in examples], dtype=torch.bool)
    return UnpairedBatch(**batch.__dict__, desirable=desirable)


@dataclass
class SFTBatch(SeqBatch):
    """N supervised sequences: right-padded rows with each token's loss mask (any tokens, e.g.
    every assistant turn of a chat), and the packed rows unless packing is off. `norm_examples`
    and `norm_tokens` are the normalisation group of `sft_loss` (the optimizer step's examples
    and loss tokens; default: this batch's own)."""

    index: torch.Tensor | None = None  # [N] dataset positions
    packed: dict[str, torch.Tensor] | None = None
    norm_examples: float | None = None
    norm_tokens: float | None = None

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = super().model_inputs()
        if self.packed is not None:
            inputs["packed"] = self.packed
        return inputs

    @property
    def num_examples(self) -> int:
        return self.input_ids.shape[0]

    @property
    def loss_tokens(self) -> int:
        """Loss tokens of the batch (host-side: no device sync); the first token never is one."""
        return int(self.loss_mask[:, 1:].sum())


def collate_sft(examples: Sequence[dict], pad_id: int, pack_tokens: int | None = 512) -> SFTBatch:
    """Right-padded rows, masks from lengths (never from `token != pad`), and unless `pack_tokens`
    is None the packed rows of at most `pack_tokens` tokens (or the longest sequence)."""
    rows = [e["input_ids"] for e in examples]
    masks = [e["loss_mask"] for e in examples]
    ids, lengths = pad_rows(rows, pad_id)
    pos = torch.arange(ids.shape[1])
    attention = (pos[None, :] < lengths[:, None]).long()
    loss = torch.zeros_like(ids)
    for i, m in enumerate(masks):
        loss[i, : len(m)] = torch.tensor(m, dtype=torch.long)
    loss[:, 0] = 0
    index = torch.tensor([e["index"] for e in examples], dtype=torch.long)
    packed = None if pack_tokens is None else pack_sequences(rows, masks, pad_id, pack_tokens)
    return SFTBatch(ids, attention, loss, index, packed)
