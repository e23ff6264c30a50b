"""Collation (masks from lengths, chosen-then-rejected layout) and the resumable BatchPlan."""

from __future__ import annotations

import pytest
import torch

from align.data.batches import BatchPlan, PairBatch, collate_pairs, pad_sequences
from align.objectives.types import SeqLogps

BOS, EOS = 1, 2  # SmolLM2: <|im_start|>, <|im_end|>; pad == eos
PAD = EOS
NL = 198  # "\n"


def chatml_prompt(*turns: int) -> list[int]:
    """A ChatML-shaped prompt: each turn is <|im_start|> x <|im_end|> \\n, then <|im_start|> assistant \\n."""
    ids: list[int] = []
    for t in turns:
        ids += [BOS, t, NL, t + 1, EOS, NL]
    return ids + [BOS, 520, NL]


def example(index: int, prompt: list[int], chosen: list[int], rejected: list[int]) -> dict:
    return {"index": index, "prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


def test_pad_sequences_masks_from_lengths_not_pad_id():
    prompts = [chatml_prompt(10, 20), chatml_prompt(30)]
    completions = [[40, 41, EOS], [50, EOS, NL, BOS, 520, NL, 51, EOS]]  # 2nd: two assistant messages
    b = pad_sequences(prompts, completions, PAD)
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    t = max(lengths)
    assert b.input_ids.shape == b.attention_mask.shape == b.loss_mask.shape == (2, t)
    assert b.input_ids.dtype == b.attention_mask.dtype == b.loss_mask.dtype == torch.long
    for i, (p, c) in enumerate(zip(prompts, completions)):
        n = lengths[i]
        assert b.input_ids[i, :n].tolist() == p + c
        assert b.input_ids[i, n:].tolist() == [PAD] * (t - n)
        # attention: 1 over the whole sequence, EOS tokens inside the prompt/completion included
        assert b.attention_mask[i].tolist() == [1] * n + [0] * (t - n)
        # loss: exactly the completion positions, never the prompt's <|im_end|> nor the padding
        assert b.loss_mask[i].tolist() == [0] * len(p) + [1] * len(c) + [0] * (t - n)
        eos_in_prompt = [j for j, tok in enumerate(p) if tok == EOS]
        assert eos_in_prompt and all(
            b.attention_mask[i, j] == 1 and b.loss_mask[i, j] == 0 for j in eos_in_prompt
        )
    assert b.attention_mask[1, lengths[1] :].sum() == 0 and lengths[1] < t  # row 1 really is padded
    assert int(b.loss_mask.sum()) == sum(len(c) for c in completions)


def test_collate_pairs_chosen_rows_then_rejected_rows():
    exs = [
        example(7, chatml_prompt(10), [40, 41, EOS], [42, EOS]),
        example(3, chatml_prompt(20, 30), [43, EOS], [44, 45, 46, 47, EOS]),
        example(5, chatml_prompt(11), [48, EOS], [49, EOS]),
    ]
    b = collate_pairs(exs, PAD)
    assert isinstance(b, PairBatch)
    assert b.num_examples == 3 and b.index.tolist() == [7, 3, 5] and b.index.dtype == torch.long
    assert b.input_ids.shape[0] == 6
    rows = [(e["prompt_ids"], e["chosen_ids"]) for e in exs] + [
        (e["prompt_ids"], e["rejected_ids"]) for e in exs
    ]
    for i, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        assert b.input_ids[i, :n].tolist() == p + c
        assert int(b.attention_mask[i].sum()) == n
        assert b.loss_mask[i].nonzero().flatten().tolist() == list(range(len(p), n))
        assert b.input_ids[i, n:].eq(PAD).all() and b.attention_mask[i, n:].eq(0).all()
    moved = b.to(torch.device("cpu"))
    assert isinstance(moved, PairBatch) and moved.index.tolist() == [7, 3, 5]


def test_pair_batch_split():
    logps = SeqLogps(
        torch.tensor([1.0, 2.0, 3.0, -1.0, -2.0, -3.0]), torch.tensor([3.0, 2.0, 2.0, 2.0, 5.0, 2.0])
    )
    pair = PairBatch.split(logps)
    assert pair.chosen.sum.tolist() == [1.0, 2.0, 3.0] and pair.chosen.n_tokens.tolist() == [3.0, 2.0, 2.0]
    assert pair.rejected.sum.tolist() == [-1.0, -2.0, -3.0] and pair.rejected.n_tokens.tolist() == [
        2.0,
        5.0,
        2.0,
    ]


def test_collate_then_split_matches_examples():
    exs = [example(i, chatml_prompt(10 + i), [40] * (i + 1) + [EOS], [41, EOS]) for i in range(4)]
    b = collate_pairs(exs, PAD)
    n_tokens = b.loss_mask.sum(1).float()
    pair = PairBatch.split(SeqLogps(-n_tokens, n_tokens))
    assert pair.chosen.n_tokens.tolist() == [len(e["chosen_ids"]) for e in exs]
    assert pair.rejected.n_tokens.tolist() == [len(e["rejected_ids"]) for e in exs]


# -- BatchPlan ---------------------------------------------------------------------------------


def step_examples(plan: BatchPlan, epoch: int, step: int) -> list[int]:
    """Everything all ranks see across the accumulation slots of one optimizer step, in order."""
    out = []
    for micro in range(plan.accumulation):
        for rank in range(plan.world):
            out += plan.micro_batch(epoch, step, micro, rank)
    return out


LAYOUTS = [(4, 1, 1), (2, 2, 1), (1, 1, 4)]  # (per_device, world, accumulation): 4 examples per step


def test_same_examples_per_optimizer_step_across_layouts():
    plans = [BatchPlan(50, pd, w, acc, seed=3) for pd, w, acc in LAYOUTS]
    assert {p.steps_per_epoch for p in plans} == {12}
    for epoch in range(2):
        for step in range(12):
            sets = [step_examples(p, epoch, step) for p in plans]
            assert all(len(s) == 4 for s in sets)
            assert sets[0] == sets[1] == sets[2]  # same examples, even in the same order


def test_ranks_get_disjoint_contiguous_slices():
    plan = BatchPlan(40, per_device=2, world=2, accumulation=2, seed=0)
    r0, r1 = plan.micro_batch(0, 1, 1, 0), plan.micro_batch(0, 1, 1, 1)
    assert len(r0) == len(r1) == 2 and not set(r0) & set(r1)
    order = plan.order(0)
    start = (1 * 2 + 1) * 4
    assert r0 + r1 == order[start : start + 4]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_epoch_coverage_is_disjoint_and_drops_tail(layout):
    pd, w, acc = layout
    plan = BatchPlan(50, pd, w, acc, seed=1)
    assert plan.steps_per_epoch == 50 // 4 == 12  # 2 examples of tail dropped
    seen = [i for step in range(plan.steps_per_epoch) for i in step_examples(plan, 0, step)]
    assert len(seen) == len(set(seen)) == 48
    assert set(seen) <= set(range(50))
    assert set(range(50)) - set(seen) == set(plan.order(0)[48:])


def test_order_differs_across_epochs_and_is_deterministic():
    a, b = BatchPlan(64, 4, 1, 1, seed=5), BatchPlan(64, 4, 1, 1, seed=5)
    assert a.order(0) == b.order(0) and a.order(3) == b.order(3)
    assert a.micro_batch(2, 5, 0, 0) == b.micro_batch(2, 5, 0, 0)
    assert a.order(0) != a.order(1)
    assert sorted(a.order(0)) == sorted(a.order(1)) == list(range(64))
    assert a.order(0) != BatchPlan(64, 4, 1, 1, seed=6).order(0)
    assert a.order(0) != list(range(64))


def test_no_shuffle_is_identity_order():
    plan = BatchPlan(10, 2, 1, 1, seed=0, shuffle=False)
    assert plan.order(0) == plan.order(1) == list(range(10))
    assert plan.micro_batch(0, 2, 0, 0) == [4, 5]


@pytest.mark.parametrize(
    ("n", "pd", "world", "acc", "expected"),
    [
        (50, 4, 1, 1, 12),
        (50, 2, 2, 1, 12),
        (50, 1, 1, 4, 12),
        (7, 4, 2, 1, 0),
        (8, 4, 2, 1, 1),
        (33, 2, 2, 2, 4),
    ],
)
def test_steps_per_epoch_drops_tail(n, pd, world, acc, expected):
    plan = BatchPlan(n, pd, world, acc, seed=0)
    assert plan.global_micro == pd * world
    assert plan.steps_per_epoch == expected


def test_epoch_order_is_computed_once_per_epoch(monkeypatch):
    """Every micro-batch of an epoch slices one cached permutation (it used to be recomputed for
    each, ~80 ms apiece at 1M examples), with the same indices as before."""
    plan = BatchPlan(103, per_device=3, world=2, accumulation=2, seed=7)
    expected = {}
    for epoch in (0, 1):  # the uncached order, computed as the plan always has
        g = torch.Generator().manual_seed(7 * 1_000_003 + epoch)
        expected[epoch] = torch.randperm(103, generator=g).tolist()
    calls = []
    real = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: calls.append(a) or real(*a, **k))
    for epoch in (0, 1):
        seen = [i for step in range(plan.steps_per_epoch) for i in step_examples(plan, epoch, step)]
        assert seen == expected[epoch][: len(seen)] and len(seen) == 96
    assert len(calls) == 2  # one permutation per epoch, not one per micro-batch
    plan.order(1).clear()  # callers get a copy; the cache is untouched
    assert plan.micro_batch(1, 0, 0, 0) == expected[1][:3] and len(calls) == 2
    assert plan == BatchPlan(103, 3, 2, 2, seed=7)  # the cache is not part of the plan's identity
