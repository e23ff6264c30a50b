"""The packed pair layout: bin packing, position ids, the block mask, and the target index."""

from __future__ import annotations

import random

import pytest
import torch

from align.data.packing import CHOSEN, PAD_SEGMENT, PROMPT, REJECTED, block_mask, pack_pairs

PAD = 0


def _pairs(n: int, seed: int) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    rnd = random.Random(seed)
    ids = lambda k: [rnd.randrange(3, 500) for _ in range(k)]
    return (
        [ids(rnd.randint(1, 30)) for _ in range(n)],
        [ids(rnd.randint(1, 12)) for _ in range(n)],
        [ids(rnd.randint(1, 12)) for _ in range(n)],
    )


def test_hand_example():
    """Pair 0: prompt [5, 6], chosen [7], rejected [8, 9]; pair 1: prompt [4], chosen [3], rejected [2]."""
    out = pack_pairs([[5, 6], [4]], [[7], [3]], [[8, 9], [2]], PAD, budget=8)
    assert out["ids"].tolist() == [[5, 6, 7, 8, 9, 4, 3, 2]]
    assert out["pos"].tolist() == [[0, 1, 2, 2, 3, 0, 1, 1]]
    assert out["segment"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]
    assert out["branch"].tolist() == [[PROMPT, PROMPT, CHOSEN, REJECTED, REJECTED, PROMPT, CHOSEN, REJECTED]]
    # targets in sequence order: chosen 0 (7), rejected 0 (8, 9), chosen 1 (3), rejected 1 (2)
    assert out["target"].tolist() == [7, 8, 9, 3, 2]
    # 7 and 8 are both predicted by the last prompt token (flat 1); 9 by 8 (flat 3); 3 and 2 by 4 (flat 5)
    assert out["pred"].tolist() == [1, 1, 3, 5, 5]
    assert out["seq"].tolist() == [0, 2, 2, 1, 3]  # chosen rows 0..B-1, rejected rows B..2B-1
    assert out["n_tokens"].tolist() == [1, 1, 2, 1]
    m = block_mask(out["segment"], out["branch"])[0, 0].int().tolist()
    assert m == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],  # chosen: prompt + itself
        [1, 1, 0, 1, 0, 0, 0, 0],  # rejected: prompt + itself, never chosen
        [1, 1, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0, 0],  # the next pair sees nothing of the first
        [0, 0, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1, 0, 1],
    ]


@pytest.mark.parametrize("seed", range(20))
def test_random_batches_are_faithful(seed):
    prompts, chosen, rejected = _pairs(random.Random(seed).randint(1, 9), seed)
    budget = random.Random(seed).choice([1, 20, 50, 200])
    out = pack_pairs(prompts, chosen, rejected, PAD, budget)
    ids, pos, seg = out["ids"], out["pos"], out["segment"]
    b = len(prompts)
    sizes = [len(p) + len(c) + len(r) for p, c, r in zip(prompts, chosen, rejected)]
    width = max(max(sizes), budget)
    # every row within budget (or one pair), every pair whole in exactly one row
    for row in range(ids.shape[0]):
        members = set(seg[row].tolist()) - {PAD_SEGMENT}
        assert sum(sizes[i] for i in members) <= width
    for i in range(b):
        where = (seg == i).nonzero()
        assert len(where) == sizes[i] and len(set(where[:, 0].tolist())) == 1
        row, cols = where[0, 0], where[:, 1]
        assert ids[row, cols].tolist() == prompts[i] + chosen[i] + rejected[i]
        p = len(prompts[i])
        want_pos = list(range(p + len(chosen[i]))) + list(range(p, p + len(rejected[i])))
        assert pos[row, cols].tolist() == want_pos
    # padding: pad id, its own segment
    assert (ids[seg == PAD_SEGMENT] == PAD).all()
    # each target is the token after its predictor in the same branch (or the first after the prompt)
    flat_pos, flat_seg = pos.flatten(), seg.flatten()
    want_targets = [t for s in (chosen, rejected) for t in sum(([*x] for x in s), [])]
    got = {}
    for k in range(len(out["target"])):
        q, s = out["pred"][k], out["seq"][k]
        assert flat_seg[q] == s % b
        got.setdefault(int(s), []).append(int(out["target"][k]))
        assert flat_pos[q] + 1 == p_next(out, k)
    assert [got[s] for s in range(b)] == chosen and [got[b + s] for s in range(b)] == rejected
    assert sorted(sum(got.values(), [])) == sorted(want_targets)
    assert out["n_tokens"].tolist() == [len(c) for c in chosen] + [len(r) for r in rejected]


def p_next(out, k: int) -> int:
    """Position id of target k: the predictor's position + 1 by construction of `pos`; recomputed
    here from the target's own place (the k-th target of its sequence sits at prompt_len + j)."""
    s = int(out["seq"][k])
    j = int((out["seq"][:k] == s).sum())
    q = int(out["pred"][k])
    seg = int(out["segment"].flatten()[q])
    flat_seg, flat_br = out["segment"].flatten(), out["branch"].flatten()
    prompt_len = int(((flat_seg == seg) & (flat_br == PROMPT)).sum())
    return prompt_len + j


def test_mask_never_crosses_pairs_or_branches():
    prompts, chosen, rejected = _pairs(6, 1)
    out = pack_pairs(prompts, chosen, rejected, PAD, budget=80)
    m = block_mask(out["segment"], out["branch"])[:, 0]
    seg, br = out["segment"], out["branch"]
    q_seg, k_seg = seg[:, :, None].expand_as(m), seg[:, None, :].expand_as(m)
    q_br, k_br = br[:, :, None].expand_as(m), br[:, None, :].expand_as(m)
    real = q_seg != PAD_SEGMENT
    assert not (m & real & (q_seg != k_seg)).any()
    assert not (m & real & (k_br != PROMPT) & (k_br != q_br)).any()
    assert not torch.triu(m, diagonal=1).any()  # causal
    assert m.any(-1).all()  # no query row fully masked (padding attends to itself)
