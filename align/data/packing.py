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


def pack_rollout_rows(
    first: Sequence[int], rlen: Sequence[int], group: Sequence[int], prompt_width: int, width: int
) -> dict[str, torch.Tensor]:
    """Host-side packed layout of rollout rows: row n of `width` columns holds its prompt at columns
    first[n] .. prompt_width - 1 (left-padded) and rlen[n] response tokens from prompt_width on.
    Rows of one `group` (the same prompt: GRPO's and RLOO's k completions) share one segment laid
    out `[prompt, response 1, ..., response k]`, the prompt once (branch 0, as in `pack_pairs`),
    each response on its own branch after it; segments are bin-packed (first-fit decreasing) into
    rows no longer than the longest segment.

    "src" [R, L]: the flat padded index (n * width + column) each packed slot reads (0 for padding,
    whose segment is PAD_SEGMENT); "segment", "branch" for `block_mask`; "back" [N * width]: the
    flat packed slot of each padded position, a group's prompt slots for each of its rows (padding
    positions read slot 0: finite, and masked by callers)."""
    members: dict[int, list[int]] = {}
    for n, g in enumerate(group):
        members.setdefault(g, []).append(n)
    groups = list(members.values())
    sizes = [prompt_width - first[ms[0]] + sum(rlen[n] for n in ms) for ms in groups]
    rows, length = _bins(sizes, max(sizes))
    shape = (len(rows), length)
    src = torch.zeros(shape, dtype=torch.long)
    segment = torch.full(shape, PAD_SEGMENT, dtype=torch.long)
    branch = torch.zeros(shape, dtype=torch.long)
    back = torch.zeros(len(first) * width, dtype=torch.long)
    for r, in_row in enumerate(rows):
        at = r * length
        for g in sorted(in_row):
            ms = groups[g]
            cols = torch.arange(first[ms[0]], prompt_width)
            slots = torch.arange(at, at + len(cols))
            src.view(-1)[slots] = ms[0] * width + cols
            segment.view(-1)[slots] = g
            for n in ms:
                back[n * width + cols] = slots
            at += len(cols)
            for b, n in enumerate(ms, start=1):
                cols = torch.arange(prompt_width, prompt_width + rlen[n])
                slots = torch.arange(at, at + rlen[n])
                src.view(-1)[slots] = n * width + cols
                segment.view(-1)[slots] = g
                branch.view(-1)[slots] = b
                back[n * width + cols] = slots
                at += rlen[n]
    return {"src": src, "segment": segment, "branch": branch, "back": back}
