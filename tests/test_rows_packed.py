"""Rollout rows (a left-padded prompt + its right-padded response) run packed: the layout, the
hidden states against each row run alone, and whole GRPO / PPO runs against padded rows."""

from __future__ import annotations

import pytest
import torch
from run_helpers import ROOT, adapter, max_abs_diff, metric_values

from align.data.packing import PAD_SEGMENT, pack_rollout_rows
from align.methods import load_recipe
from align.models.load import load_model
from align.models.reward_model import backbone_hidden, rows_hidden
from align.recipe import ModelConfig
from align.train import run


def test_pack_rollout_rows_by_hand():
    # width 5, prompts end at column 3. Rows 0 and 1 share a prompt (columns 1-2) with responses of
    # 2 and 1 tokens; row 2: a 3-token prompt and 1 response token. Segments of 5 and 4 tokens.
    p = pack_rollout_rows([1, 1, 0], [2, 1, 1], [0, 0, 1], prompt_width=3, width=5)
    assert p["src"].tolist() == [[1, 2, 3, 4, 8], [10, 11, 12, 13, 0]]
    assert p["segment"].tolist() == [[0, 0, 0, 0, 0], [1, 1, 1, 1, PAD_SEGMENT]]
    assert p["branch"].tolist() == [[0, 0, 1, 1, 2], [0, 0, 0, 1, 0]]
    # row 1's prompt columns read the shared prompt's slots 0-1
    assert p["back"].tolist() == [0, 0, 1, 2, 3, 0, 0, 1, 4, 0, 5, 6, 7, 8, 0]


def rows(plen: list[int], rlen: list[int], tp: int, tr: int, vocab: int, seed: int = 0, same=()):
    """Rollout rows; `same`: (row, row it copies its prompt from) pairs."""
    g = torch.Generator().manual_seed(seed)
    n = len(plen)
    ids = torch.randint(0, vocab, (n, tp + tr), generator=g)
    for i, j in same:
        ids[i, :tp] = ids[j, :tp]
    p, r = torch.tensor(plen), torch.tensor(rlen)
    att = torch.cat([torch.arange(tp)[None] >= (tp - p)[:, None], torch.arange(tr)[None] < r[:, None]], 1)
    att = att.long()
    return ids, att, (att.cumsum(1) - 1).clamp(min=0)


@torch.no_grad()
def test_packed_rows_equal_each_row_alone():
    model = load_model(ModelConfig("tiny-smollm2", "float32"), seed=0).eval()
    # rows 1, 4 and 5 share a prompt (a group): segments 12, 3 + 2 + 4 + 1, 6, 5 in packed rows of 12
    plen, rlen = [7, 3, 5, 1, 3, 3], [5, 2, 1, 4, 4, 1]
    ids, att, pos = rows(plen, rlen, 7, 5, model.config.vocab_size, same=((4, 1), (5, 1)))
    got = rows_hidden(model, ids, att, pos, True, "sdpa", prompt_width=7)
    assert got.shape == (6, 12, model.config.hidden_size) and torch.isfinite(got).all()
    for n in range(6):
        span = att[n].bool()
        alone = backbone_hidden(model, ids[n : n + 1, span], None, pos[n : n + 1, span])[0]
        torch.testing.assert_close(got[n, span], alone, rtol=1e-5, atol=1e-5)


def test_rows_with_a_hole_are_refused():
    ids, att, pos = rows([3, 2], [2, 2], 3, 2, 100)
    att[0, 3] = 0  # a gap inside row 0's span
    with pytest.raises(ValueError, match="each row must be a non-empty prompt ending at column 3"):
        rows_hidden(torch.nn.Module(), ids, att, pos, True, "sdpa", prompt_width=3)


@pytest.mark.parametrize("recipe", ["online_tiny.yaml", "ppo_tiny.yaml"])
def test_a_packed_run_trains_like_padded_rows(tmp_path, recipe):
    """Scoring and update forwards over packed rows (GRPO: each micro-batch's prompt once): the
    same samples, scores, gradients and adapter as padded rows, to fp32 noise."""
    path = ROOT / "tests" / recipe
    out = {}
    for layout in ("padded", "packed"):
        run(load_recipe(path, [f"output_dir={tmp_path / layout}", f"train.layout={layout}"]))
        out[layout] = tmp_path / layout
    key = "train/score"
    assert metric_values(out["padded"], key) == pytest.approx(metric_values(out["packed"], key), rel=1e-5)
    # the gradients agree to fp32 noise (responses that could see each other moved the grad norm by
    # 6%); Adam at lr 3e-3 turns that noise into ~1e-5 on the adapter
    grad = "train/grad_norm"
    assert metric_values(out["padded"], grad) == pytest.approx(metric_values(out["packed"], grad), rel=1e-5)
    assert max_abs_diff(adapter(out["padded"]), adapter(out["packed"])) < 1e-4


def _batch(n: int):
    from align.methods.online_phase import OnlineBatch

    tp, tr = 3, 2
    ids = torch.arange(n)[:, None].repeat(1, tp + tr)  # every token of row i is i: rows are traceable
    att = torch.ones(n, tp + tr, dtype=torch.long)
    return OnlineBatch(
        ids, att, att.cumsum(1) - 1, ids[:, tp:], att[:, tp:].bool(), torch.zeros(n), None, None
    )


@pytest.mark.parametrize("minibatches", [1, 3])
def test_updates_keep_groups_whole(minibatches):
    """GRPO's k completions of a prompt stay in one micro-batch (its prompt then runs once packed):
    whole groups permuted, every row once per epoch, minibatch counts intact."""
    from align.methods.experience import minibatch_updates

    g = torch.Generator().manual_seed(0)
    updates = minibatch_updates(_batch(12), 2, minibatches, 4, g, group=4)
    assert len(updates) == 2 * minibatches
    seen = []
    for micros, rows in updates:
        for m in micros:
            r = m.input_ids[:, 0].tolist()
            assert len({i // 4 for i in r}) == 1 and len(r) == 4  # one whole group
            seen += r
        assert rows == sum(m.input_ids.shape[0] for m in micros)
    assert sorted(seen) == sorted(list(range(12)) * 2)
    # more minibatches than groups: rows one by one, as without groups
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = minibatch_updates(_batch(12), 1, 6, 2, g1, group=4)
    b = minibatch_updates(_batch(12), 1, 6, 2, g2)
    assert [m.input_ids[:, 0].tolist() for ms, _ in a for m in ms] == [
        m.input_ids[:, 0].tolist() for ms, _ in b for m in ms
    ]
