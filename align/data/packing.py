"""Packed pair layout: each pair's prompt once, both completions after it, many pairs per row
(and, for SFT, single sequences packed the same way: `pack_sequences`).

A row holds whole pairs laid out `[prompt, chosen, rejected]`, bin-packed (first-fit decreasing)
into rows of at most `budget` tokens (at least the longest pair), right-padded. Attention is a
block mask built on the device from two small per-token vectors: a token attends to earlier
tokens of its own pair that are in the prompt or in its own branch, so `rejected` never sees
`chosen`; position ids restart per pair and both completions start right after the prompt.
Numerically this is the same computation as two padded rows per pair, with the prompt run once
and almost no padding (the bundled data: 315 real of 492 computed positions per batch of 4 in
the two-stage shared-prompt layout, 670 in plain padded rows).

Everything the loss needs is indexed on the host at collation (which hidden state predicts which
target, which sequence it belongs to), so the model side uses `index_select`/`index_add` with
known sizes and never waits on the device (boolean masking would).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PROMPT, CHOSEN, REJECTED = 0, 1, 2
PAD_SEGMENT = -1


def pack_pairs(
    prompts: Sequence[list[int]],
    chosen: Sequence[list[int]],
    rejected: Sequence[list[int]],
    pad_id: int,
    budget: int,
) -> dict[str, torch.Tensor]:
    """Host-side packed layout of B pairs; sequence k < B is pair k's chosen, B + k its rejected.

    Returns tensors: `ids`, `pos`, `segment` (pair index, -1 for padding), `branch` [R, L];
    `pred` (flat index into R*L of the hidden state predicting each completion token), `target`,
    `seq` (which of the 2B sequences each target belongs to) [K]; `n_tokens` and `last` (flat index
    of each sequence's last token: where a reward model reads its score) [2B].
    """
    b = len(prompts)
    sizes = [len(prompts[i]) + len(chosen[i]) + len(rejected[i]) for i in range(b)]
    rows, length = _bins(sizes, budget)
    shape = (len(rows), length)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    pos = torch.zeros(shape, dtype=torch.long)
    segment = torch.full(shape, PAD_SEGMENT, dtype=torch.long)
    branch = torch.zeros(shape, dtype=torch.long)
    pred: list[int] = []
    last = [0] * (2 * b)
    target: list[int] = []
    seq: list[int] = []
    for r, members in enumerate(rows):
        at = 0
        for i in sorted(members):
            p, c, j = prompts[i], chosen[i], rejected[i]
            tokens = p + c + j
            n = len(tokens)
            ids[r, at : at + n] = torch.tensor(tokens, dtype=torch.long)
            pos[r, at : at + n] = torch.tensor(
                list(range(len(p) + len(c))) + list(range(len(p), len(p) + len(j)))
            )
            segment[r, at : at + n] = i
            branch[r, at + len(p) : at + len(p) + len(c)] = CHOSEN
            branch[r, at + len(p) + len(c) : at + n] = REJECTED
            base = r * length + at
            last_prompt = base + len(p) - 1
            last[i], last[b + i] = base + len(p) + len(c) - 1, base + n - 1
            for start, toks, which in ((len(p), c, i), (len(p) + len(c), j, b + i)):
                pred += [last_prompt] + [base + start + t for t in range(len(toks) - 1)]
                target += toks
                seq += [which] * len(toks)
            at += n
    n_tokens = torch.tensor([len(c) for c in chosen] + [len(j) for j in rejected], dtype=torch.float32)
    return {
        "ids": ids,
        "pos": pos,
        "segment": segment,
        "branch": branch,
        "pred": torch.tensor(pred, dtype=torch.long),
        "target": torch.tensor(target, dtype=torch.long),
        "seq": torch.tensor(seq, dtype=torch.long),
        "n_tokens": n_tokens,
        "last": torch.tensor(last, dtype=torch.long),
    }


def _bins(sizes: Sequence[int], budget: int) -> tuple[list[list[int]], int]:
    """First-fit decreasing into rows of max(budget, largest) tokens: (member indices per row,
    the longest row's length)."""
    width = max(max(sizes), budget)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        for r, free in enumerate(room):
            if sizes[i] <= free:
                rows[r].append(i)
                room[r] -= sizes[i]
                break
        else:
            rows.append([i])
            room.append(width - sizes[i])
    return rows, max(width - free for free in room)


def pack_sequences(
    sequences: Sequence[list[int]], masks: Sequence[list[int]], pad_id: int, budget: int
) -> dict[str, torch.Tensor]:
    """Host-side packed layout of N single sequences (SFT), with the keys of `pack_pairs`.

    Each sequence is its own segment on one branch, so `block_mask` is causal within it and it
    never sees another; positions restart at 0. `masks[k][t] = 1` makes token t a target, predicted
    by the hidden state at t - 1 (the first token never is one)."""
    n = len(sequences)
    rows, length = _bins([len(s) for s in sequences], budget)
    shape = (len(rows), length)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    pos = torch.zeros(shape, dtype=torch.long)
    segment = torch.full(shape, PAD_SEGMENT, dtype=torch.long)
    pred: list[int] = []
    target: list[int] = []
    seq: list[int] = []
    last = [0] * n
    for r, members in enumerate(rows):
        at = 0
        for k in sorted(members):
            tokens, mask = sequences[k], masks[k]
            ids[r, at : at + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            pos[r, at : at + len(tokens)] = torch.arange(len(tokens))
            segment[r, at : at + len(tokens)] = k
            base = r * length + at
            picked = [t for t in range(1, len(tokens)) if mask[t]]
            pred += [base + t - 1 for t in picked]
            target += [tokens[t] for t in picked]
            seq += [k] * len(picked)
            last[k] = base + len(tokens) - 1
            at += len(tokens)
    return {
        "ids": ids,
        "pos": pos,
        "segment": segment,
        "branch": torch.zeros(shape, dtype=torch.long),
        "pred": torch.tensor(pred, dtype=torch.long),
        "target": torch.tensor(target, dtype=torch.long),
        "seq": torch.tensor(seq, dtype=torch.long),
        "n_tokens": torch.tensor([sum(m[1:]) for m in masks], dtype=torch.float32),
        "last": torch.tensor(last, dtype=torch.long),
    }


def block_mask(segment: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """[R, 1, L, L] boolean (True = attend): causal, within a pair, prompt or own branch.
    Padding attends to itself only (a fully masked query row would give NaN)."""
    q_seg, k_seg = segment[:, :, None], segment[:, None, :]
    q_br, k_br = branch[:, :, None], branch[:, None, :]
    n = segment.shape[1]
    idx = torch.arange(n, device=segment.device)
    causal = idx[None, :, None] >= idx[None, None, :]
    mask = causal & (q_seg == k_seg) & (q_seg != PAD_SEGMENT) & ((k_br == PROMPT) | (k_br == q_br))
    mask |= (idx[:, None] == idx[None, :])[None] & (q_seg == PAD_SEGMENT)
    return mask[:, None]


def pack_spans(first: Sequence[int], lens: Sequence[int], width: int, budget: int) -> dict[str, torch.Tensor]:
    """Host-side packed layout of padded rows whose real tokens form one span each (row n holds
    them at columns first[n] .. first[n] + lens[n] - 1 of `width`: a left-padded prompt followed
    by its right-padded response), bin-packed like `pack_sequences`, each span its own segment.

    "src" [R, L]: the flat padded index (n * width + column) each packed slot reads, 0 for padding
    slots (their segment is PAD_SEGMENT: they attend to themselves only); "segment", "branch" for
    `block_mask`; "back" [N * width]: the flat packed slot of each padded position, so hidden states
    come back in the padded layout (padding positions read slot 0: finite, and masked by callers)."""
    rows, length = _bins(list(lens), budget)
    shape = (len(rows), length)
    src = torch.zeros(shape, dtype=torch.long)
    segment = torch.full(shape, PAD_SEGMENT, dtype=torch.long)
    back = torch.zeros(len(lens) * width, dtype=torch.long)
    for r, members in enumerate(rows):
        at = 0
        for n in sorted(members):
            cols = torch.arange(first[n], first[n] + lens[n])
            src[r, at : at + lens[n]] = n * width + cols
            segment[r, at : at + lens[n]] = n
            back[n * width + cols] = r * length + at + torch.arange(lens[n])
            at += lens[n]
    return {"src": src, "segment": segment, "branch": torch.zeros(shape, dtype=torch.long), "back": back}
