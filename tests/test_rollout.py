"""Rollout sampling on the tiny model with the real SmolLM2 tokenizer: left padding, positions,
EOS, reproducibility, and agreement with `model.generate`."""

from __future__ import annotations

import pytest
import torch

from align.models.load import tiny_model
from align.models.reward_model import RewardScorer, last_token
from align.models.rollout import Rollout, Sampling, draw, left_pad, pick, positions, sample


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from align.models.load import load_tokenizer
    from align.recipe import ModelConfig

    return load_tokenizer(ModelConfig(name="tiny-smollm2"))


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3).eval()


@pytest.fixture(scope="module")
def prompts(smollm2_tokenizer):
    chats = [
        [{"role": "user", "content": q}] for q in ("Hi", "What is the capital of France, please?", "2+2?")
    ]
    return [
        list(
            smollm2_tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)[
                "input_ids"
            ]
        )
        for c in chats
    ]


def test_greedy_equals_generate_with_left_padding(model, prompts, smollm2_tokenizer):
    tok = smollm2_tokenizer
    r = sample(model, prompts, Sampling(max_new_tokens=6, temperature=0), tok.eos_token_id, tok.pad_token_id)
    for i, p in enumerate(prompts):  # each prompt alone, no padding at all
        out = model.generate(
            torch.tensor([p]), max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id
        )
        assert r.response_ids[i].tolist() == out[0, len(p) :].tolist()
    assert r.prompt_len.tolist() == [len(p) for p in prompts]


def test_positions_and_masks_of_left_padded_sequences(prompts):
    ids, lens = left_pad(prompts, pad=2)
    assert ids.shape == (3, max(map(len, prompts)))
    assert ids[0, : ids.shape[1] - len(prompts[0])].eq(2).all()
    r = Rollout(
        ids,
        lens,
        torch.tensor([[5, 6, 2], [7, 2, 2], [8, 9, 10]]),
        torch.tensor([3, 2, 3]),
        torch.tensor([True, True, False]),
    )
    full, att, pos = r.sequences()
    assert att.sum(1).tolist() == [len(prompts[0]) + 3, len(prompts[1]) + 2, len(prompts[2]) + 3]
    # the first real token of every row is position 0, and positions then count real tokens
    for i in range(3):
        real = pos[i][att[i].bool()]
        assert real.tolist() == list(range(int(att[i].sum())))
    # the pad after row 1's EOS (id 2 both) is masked by length, not by token value
    assert r.response_mask().tolist() == [[True, True, True], [True, True, False], [True, True, True]]
    assert positions(torch.tensor([[0, 0, 1, 1]])).tolist() == [[0, 0, 0, 1]]
    with pytest.raises(ValueError, match="empty prompt"):
        left_pad([[1, 2], []], pad=2)


def test_rows_stop_at_eos_and_count_it(model, prompts):
    """Whatever token row 0 greedily emits third is declared the EOS: row 0 stops there (by 3 tokens,
    EOS included), every other row at its own first occurrence of it, padded after."""
    free = sample(model, prompts, Sampling(max_new_tokens=6, temperature=0), 49151, 0)
    eos = int(free.response_ids[0, 2])
    r = sample(model, prompts, Sampling(max_new_tokens=6, temperature=0), [eos, 49151], 0, check_every=1)
    for i, row in enumerate(free.response_ids.tolist()):
        n = row.index(eos) + 1 if eos in row else 6
        assert int(r.response_len[i]) == n and bool(r.ended[i]) == (eos in row)
        assert r.response_ids[i, :n].tolist() == row[:n]
        assert r.response_ids[i, n:].eq(0).all()
    assert bool(r.ended[0]) and int(r.response_len[0]) <= 3


def test_sampling_is_reproducible_and_filters(model, prompts):
    s = Sampling(max_new_tokens=5, temperature=1.0)
    a = sample(model, prompts, s, 2, 2, generator=torch.Generator().manual_seed(7))
    b = sample(model, prompts, s, 2, 2, generator=torch.Generator().manual_seed(7))
    c = sample(model, prompts, s, 2, 2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.response_ids, b.response_ids) and not torch.equal(a.response_ids, c.response_ids)
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    g = torch.Generator().manual_seed(0)
    assert {int(pick(logits, Sampling(top_k=1), g)) for _ in range(20)} == {1}
    assert {int(pick(logits, Sampling(top_p=0.01), g)) for _ in range(20)} == {1}
    top2 = {int(pick(logits, Sampling(top_k=2), g)) for _ in range(200)}
    assert top2 == {1, 3}
    # top-p keeps the smallest set holding p of the mass: softmax([0,3,1,2]) = .03,.64,.09,.24
    assert {int(pick(logits, Sampling(top_p=0.8), g)) for _ in range(300)} == {1, 3}


@pytest.mark.parametrize("vocab", [1000, 999, 7])
def test_draw_matches_the_distribution(vocab):
    """Two-race draws land on each token with its probability (a vocabulary that does not fill
    its last block included); zero-mass tokens are never drawn."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(vocab, generator=g) * 2, -1)
    p[vocab // 2] = 0.0
    p = p / p.sum()
    n = 100_000
    counts = torch.bincount(draw(p.expand(n, vocab).contiguous(), g), minlength=vocab).double()
    assert counts.shape[0] == vocab and counts[vocab // 2] == 0
    expected = n * p.double()
    # binomial counts: each within 5 standard deviations (plus one count for tiny p)
    assert ((counts - expected).abs() <= 5 * (expected * (1 - p.double())).sqrt() + 1).all()
    chi2 = ((counts - expected) ** 2 / expected.clamp_min(1e-12)).sum()
    assert chi2 < vocab + 6 * (2 * vocab) ** 0.5


def test_draw_is_seeded_and_stable_under_tiny_changes():
    """Same seed, same tokens; a 1e-5 relative change in the probabilities (rounding of another
    parallel layout, with margin) moves almost no token. An inverse-CDF draw over the same rows
    moved 6 of them: its cumulative sum gathers every earlier entry's change."""
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(1024, 49152, generator=g) * 3, -1)
    noisy = p * (1 + 1e-5 * torch.randn(p.shape, generator=g))
    noisy = noisy / noisy.sum(-1, keepdim=True)
    a = draw(p, torch.Generator().manual_seed(5))
    assert torch.equal(a, draw(p, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, draw(p, torch.Generator().manual_seed(6)))
    assert (a != draw(noisy, torch.Generator().manual_seed(5))).sum() <= 1
    one_hot = torch.zeros(3, 600)
    one_hot[torch.arange(3), torch.tensor([0, 255, 599])] = 1.0
    assert draw(one_hot, g).tolist() == [0, 255, 599]


def test_score_is_read_at_the_last_real_token_whatever_the_padding(model):
    """Scores of left-padded prompt + right-padded response rows equal each sequence scored alone;
    SmolLM2's pad is its EOS (id 2), so pads and a real final EOS carry the same id."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_model(seed=3), LoraConfig(r=2, target_modules=["q_proj"]))
    scorer = RewardScorer.fresh(peft_model, seed=0).eval()
    seqs = [[5, 6, 7, 8, 2], [9, 10, 2], [11, 12, 13, 14, 15, 16]]
    r = Rollout(
        *left_pad([s[:2] for s in seqs], 2), *_right([s[2:] for s in seqs]), torch.tensor([True, True, False])
    )
    ids, att, pos = r.sequences()
    with torch.no_grad():
        batched = scorer(ids, att, pos)
        alone = torch.cat([scorer(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    h = torch.arange(12.0).view(2, 3, 2)
    torch.testing.assert_close(
        last_token(h, torch.tensor([[1, 1, 0], [0, 1, 1]])), torch.tensor([[2.0, 3.0], [10.0, 11.0]])
    )


def _right(rows):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), 2, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, torch.tensor([len(r) for r in rows])


def test_switching_roles_keeps_what_trains():
    """Adapters off (the reference) and on again must not change which adapters train: PEFT's own
    disable_adapter() would freeze every adapter but the active one on the way out."""
    from align.models.adapters import add_adapter, set_trainable, use_adapter
    from align.models.load import add_lora
    from align.recipe import LoraConfig

    spec = LoraConfig(r=2, alpha=4, dropout=0.0)
    peft_model = add_lora(tiny_model(), spec)
    add_adapter(peft_model, "value", None, spec)
    set_trainable(peft_model, ["default", "value"])
    before = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_()
        with use_adapter(peft_model, None):
            off = peft_model(input_ids=x).logits
        with use_adapter(peft_model, "value"):
            value = peft_model(input_ids=x).logits
        on = peft_model(input_ids=x).logits
        assert {n for n, p in peft_model.named_parameters() if p.requires_grad} == before
        with peft_model.disable_adapter():
            stock_off = peft_model(input_ids=x).logits
    assert any(".value." in n for n in before)
    assert not any(".value." in n for n, p in peft_model.named_parameters() if p.requires_grad)  # PEFT's
    torch.testing.assert_close(off, stock_off)
    assert not torch.allclose(on, off) and not torch.allclose(value, on)
