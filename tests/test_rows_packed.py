"""Rollout rows (a left-padded prompt + its right-padded response) run packed: the layout, the
hidden states against each row run alone, and whole GRPO / PPO runs against padded rows."""

from __future__ import annotations

import pytest
import torch
from run_helpers import ROOT, adapter, max_abs_diff, metric_values

from align.data.packing import PAD_SEGMENT, pack_spans
from align.methods import load_recipe
from align.models.load import load_model
from align.models.reward_model import backbone_hidden, rows_hidden
from align.recipe import ModelConfig
from align.train import run


def test_pack_spans_by_hand():
    # row 0: columns 2-4 of 5, row 1: columns 0-1; both fit one packed row of 8
    p = pack_spans([2, 0], [3, 2], width=5, budget=8)
    assert p["src"].tolist() == [[2, 3, 4, 5, 6]]
    assert p["segment"].tolist() == [[0, 0, 0, 1, 1]]
    assert p["back"].tolist() == [0, 0, 0, 1, 2, 3, 4, 0, 0, 0]
    # a budget below the longest span: one span per row, the shorter row padded
    p = pack_spans([2, 0], [3, 2], width=5, budget=1)
    assert p["src"].tolist() == [[2, 3, 4], [5, 6, 0]]
    assert p["segment"].tolist() == [[0, 0, 0], [1, 1, PAD_SEGMENT]]
    assert p["back"].tolist() == [0, 0, 0, 1, 2, 3, 4, 0, 0, 0]


def rows(plen: list[int], rlen: list[int], tp: int, tr: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = len(plen)
    ids = torch.randint(0, vocab, (n, tp + tr), generator=g)
    p, r = torch.tensor(plen), torch.tensor(rlen)
    att = torch.cat([torch.arange(tp)[None] >= (tp - p)[:, None], torch.arange(tr)[None] < r[:, None]], 1)
    att = att.long()
    return ids, att, (att.cumsum(1) - 1).clamp(min=0)


@torch.no_grad()
@pytest.mark.parametrize("budget", [1, 12, 64])
def test_packed_rows_equal_each_row_alone(budget):
    model = load_model(ModelConfig("tiny-smollm2", "float32"), seed=0).eval()
    plen, rlen = [7, 3, 5, 1], [5, 2, 1, 4]
    ids, att, pos = rows(plen, rlen, 7, 5, model.config.vocab_size)
    got = rows_hidden(model, ids, att, pos, budget, "sdpa")
    assert got.shape == (4, 12, model.config.hidden_size) and torch.isfinite(got).all()
    for n in range(4):
        span = att[n].bool()
        alone = backbone_hidden(model, ids[n : n + 1, span], None, pos[n : n + 1, span])[0]
        torch.testing.assert_close(got[n, span], alone, rtol=1e-5, atol=1e-5)


def test_rows_with_a_hole_are_refused():
    ids, att, pos = rows([3, 2], [2, 2], 3, 2, 100)
    att[0, 3] = 0  # a gap inside row 0's span
    with pytest.raises(ValueError, match="one non-empty span"):
        rows_hidden(torch.nn.Module(), ids, att, pos, 16, "sdpa")


@pytest.mark.parametrize("recipe", ["online_tiny.yaml", "ppo_tiny.yaml"])
def test_a_packed_run_trains_like_padded_rows(tmp_path, recipe):
    """Scoring and update forwards over packed rows: the same samples, scores and adapter as
    padded rows, to fp32 noise (different GEMM shapes sum in another order)."""
    path = ROOT / "tests" / recipe
    out = {}
    for layout in ("padded", "packed"):
        run(load_recipe(path, [f"output_dir={tmp_path / layout}", f"train.layout={layout}"]))
        out[layout] = tmp_path / layout
    key = "train/score"
    assert metric_values(out["padded"], key) == pytest.approx(metric_values(out["packed"], key), rel=1e-5)
    assert max_abs_diff(adapter(out["padded"]), adapter(out["packed"])) < 1e-5
