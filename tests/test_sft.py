"""method: sft on the tiny model: packed rows equal padded rows and the full-vocabulary oracle,
the step-level token normalisation (1 x 4 == 4 x 1), a tiny run with held-out loss and
perplexity before and after, and the recipe checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from model_helpers import lora_grads, naive_logps, nontrivial_lora
from run_helpers import adapter, max_abs_diff, run_tiny

from align.data.batches import collate_sft
from align.data.packing import block_mask
from align.data.records import SFTRecord
from align.data.tokenize import TokenizeConfig, Tokenizer
from align.methods import load_recipe
from align.models.load import load_tokenizer, tiny_model
from align.models.logprobs import SequenceScorer
from align.objectives import sft_loss
from align.recipe import ModelConfig
from align.util.errors import RecipeError
from tests.run_helpers import TINY


def U(s: str) -> dict:
    return {"role": "user", "content": s}


def A(s: str) -> dict:
    return {"role": "assistant", "content": s}


RECORDS = [
    SFTRecord(None, [U("Hi!"), A("Hello! How can I help?"), U("What is 7 times 6?"), A("42.")]),
    SFTRecord(None, "The capital of France is Paris."),
    SFTRecord("Q: What is 2 + 2?\nA:", " 4"),
    SFTRecord([U("Name a colour.")], [A("Blue.")]),
    SFTRecord(None, [U("a"), A("b"), U("c"), A("d"), U("e"), A("f")]),
]


@pytest.fixture(scope="module")
def examples():
    tok = load_tokenizer(ModelConfig("smollm2-135m-instruct"))
    tk = Tokenizer(tok, TokenizeConfig(max_length=128, max_prompt_length=96))
    return [{**tk.sft(r), "index": i} for i, r in enumerate(RECORDS)], tok.pad_token_id


@pytest.fixture(scope="module")
def model():
    return nontrivial_lora(tiny_model(seed=0)).eval()


def test_packed_rows_hold_several_sequences_without_cross_attention(examples):
    exs, pad = examples
    packed = collate_sft(exs, pad, pack_tokens=512).packed
    assert packed["ids"].shape[0] == 1  # all five sequences in one row
    seg = packed["segment"][0]
    assert set(seg.tolist()) - {-1} == set(range(len(exs)))
    mask = block_mask(packed["segment"], packed["branch"])[0, 0]
    real = seg >= 0
    same = seg[:, None] == seg[None, :]
    causal = torch.ones_like(mask).tril().bool()
    assert torch.equal(mask[real][:, real], (same & causal)[real][:, real])  # causal, own sequence only
    for k, ex in enumerate(exs):  # positions restart at 0 for every sequence
        assert packed["pos"][packed["segment"] == k].tolist() == list(range(len(ex["input_ids"])))
    assert packed["n_tokens"].tolist() == [sum(e["loss_mask"]) for e in exs]


@pytest.mark.parametrize("pack_tokens", [512, 64])  # one row; several rows
def test_packed_loss_and_grads_equal_padded_rows_and_the_oracle(model, examples, pack_tokens):
    exs, pad = examples
    batch = collate_sft(exs, pad, pack_tokens=pack_tokens)
    padded = SequenceScorer(model, layout="padded")(**{**batch.model_inputs(), "packed": None})
    packed = SequenceScorer(model, layout="packed")(**batch.model_inputs())
    oracle = naive_logps(model, batch)
    torch.testing.assert_close(packed.sum, oracle, atol=1e-4, rtol=0)
    torch.testing.assert_close(padded.sum, oracle, atol=1e-4, rtol=0)
    assert packed.n_tokens.tolist() == padded.n_tokens.tolist() == [sum(e["loss_mask"]) for e in exs]
    loss_packed = sft_loss(packed).loss.mean()
    loss_padded = sft_loss(padded).loss.mean()
    torch.testing.assert_close(loss_packed, loss_padded, atol=1e-6, rtol=0)
    # and the loss is the per-token mean NLL over the batch's loss tokens
    want = -oracle.sum() / sum(sum(e["loss_mask"]) for e in exs)
    torch.testing.assert_close(loss_packed, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        lora_grads(
            model, sft_loss(SequenceScorer(model, layout="packed")(**batch.model_inputs())).loss.mean()
        ),
        lora_grads(
            model,
            sft_loss(
                SequenceScorer(model, layout="padded")(**{**batch.model_inputs(), "packed": None})
            ).loss.mean(),
        ),
        atol=1e-6,
        rtol=1e-4,
    )


def test_a_packed_sequence_is_scored_as_if_alone(model, examples):
    """Cross-example attention would change a sequence's log-probs when another joins its row."""
    exs, pad = examples
    together = SequenceScorer(model, layout="packed")(**collate_sft(exs, pad).model_inputs())
    for k, ex in enumerate(exs):
        alone = SequenceScorer(model, layout="packed")(**collate_sft([ex], pad).model_inputs())
        torch.testing.assert_close(together.sum[k], alone.sum[0], atol=1e-4, rtol=0)


SFT = ("method=sft",)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "run"
    return out, run_tiny(out, *SFT, "train.max_steps=6", "optim.lr=3e-3")


def test_tiny_run_lowers_held_out_loss_and_reports_perplexity(tiny_run):
    out, summary = tiny_run
    before, after = summary["before"], summary["after"]
    for m in (before, after):
        assert m["eval/loss"] == pytest.approx(m["eval/count/nll"] / m["eval/count/loss_tokens"])
        assert m["eval/perplexity"] == pytest.approx(math.exp(m["eval/loss"]))
    assert before["eval/count/loss_tokens"] == after["eval/count/loss_tokens"] > 0
    assert after["eval/loss"] < before["eval/loss"] - 0.01
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "sft" and manifest["objective"]["objective"] == "sft"
    assert "per-token mean" in manifest["objective"]["normalisation"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/loss" in r]
    assert len(train) == 6
    # the logged train loss is the step's per-token NLL (one step per line, log_every 1)
    for r in train:
        assert r["train/loss"] == pytest.approx(r["train/count/nll"] / r["train/count/loss_tokens"], rel=1e-5)


def test_the_report_shows_perplexity(tiny_run):
    from align.engine.report import metrics_table

    _, summary = tiny_run
    table = metrics_table(summary["before"], summary["after"])
    assert "perplexity (exp of the per-token loss)" in table and "loss" in table


def test_accumulation_splits_normalise_over_the_whole_step(tmp_path):
    """1 x 4 == 4 x 1: the loss of a step is its total NLL over its total loss tokens, whatever the
    micro-batches (a per-micro-batch mean would weigh short micro-batches up)."""
    one = run_tiny(
        tmp_path / "a", *SFT, "train.max_steps=2", "train.per_device_batch_size=4", "report.eval_before=false"
    )
    four = run_tiny(
        tmp_path / "b",
        *SFT,
        "train.max_steps=2",
        "train.per_device_batch_size=1",
        "train.gradient_accumulation_steps=4",
        "report.eval_before=false",
    )
    assert one["steps"] == four["steps"] == 2
    assert max_abs_diff(adapter(tmp_path / "a"), adapter(tmp_path / "b")) < 1e-6


@pytest.mark.parametrize(
    "override, message",
    [
        ("beta=0.5", "beta: does not apply to 'sft'"),
        ("label_smoothing=0.1", "label_smoothing: does not apply to 'sft'"),
        ("reference=precompute", "no reference model"),
        ("data.format=prompts", "needs completions"),
        ("reward.margin=1.0", "reward: applies to method 'reward' only"),
    ],
)
def test_recipe_checks(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(TINY, ["method=sft", override])


def test_sft_data_is_refused_for_preference_methods():
    with pytest.raises(RecipeError, match="needs pairwise data"):
        load_recipe(TINY, ["data.format=sft"])
