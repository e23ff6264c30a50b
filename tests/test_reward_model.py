"""The reward model's packed layout scores every sequence exactly like plain padded rows."""

from __future__ import annotations

import pytest
import torch

from align.data.batches import collate_pairs
from align.models.load import add_lora, tiny_model
from align.models.reward_model import RewardScorer
from align.recipe import LoraConfig
from tests.model_helpers import randomize_lora_b


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_scores_equal_padded_scores(attn):
    """Pairs of different lengths, one with a one-token rejected reply (its last token is not the
    one after the last prompt-predicting position), packed several per row."""
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, 4000, (n,), generator=g).tolist()
    examples = [
        {"index": i, "prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)}
        for i, (p, c, r) in enumerate([(5, 4, 1), (9, 2, 6), (3, 1, 1), (7, 5, 3)])
    ]
    base = tiny_model(seed=1)
    base.set_attn_implementation(attn)
    model = add_lora(base, LoraConfig(r=2, alpha=4, dropout=0.0))
    randomize_lora_b(model)
    packed = RewardScorer.fresh(model, seed=2, layout="packed").eval()
    padded = RewardScorer(model, packed.head, layout="padded").eval()
    batch = collate_pairs(examples, 2, pack_tokens=24)
    assert batch.packed is not None and batch.packed["ids"].shape[0] < len(examples)  # several pairs per row
    with torch.no_grad():
        a = packed(**batch.model_inputs())
        b = padded(**batch.model_inputs())
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert float(b.std()) > 1e-3
