"""SFT data: which fields make which record, column mapping, bad rows, and what prepare() feeds
`method: sft` from SFT, pairwise (chosen) and unpaired (desirable) sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.data.parse_sft import parse_sft
from align.data.prepare import prepare
from align.data.records import BadRecordsError, RecordError, SFTRecord
from align.models.load import load_tokenizer
from align.recipe import DataConfig, ModelConfig
from align.util.errors import DataError

U = {"role": "user", "content": "Hi"}
A = {"role": "assistant", "content": "Hello!"}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path / "cache"))


def parse(row: dict, columns: dict | None = None) -> SFTRecord:
    return parse_sft(row, source="d.jsonl", where="line 3", columns=columns)


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_fields_pick_the_record_kind():
    assert parse({"messages": [U, A], "text": "ignored"}) == SFTRecord(None, [U, A], "d.jsonl:line 3")
    assert parse({"prompt": "Q:", "completion": " a", "text": "x"}).prompt == "Q:"
    assert parse({"text": "plain", "id": 7}) == SFTRecord(None, "plain", "d.jsonl:line 3")
    rec = parse({"prompt": [U], "completion": [A]})
    assert rec.prompt == [U] and rec.completion == [A]
    # a string completion after a chat prompt becomes an assistant message
    assert parse({"prompt": [U], "completion": "Hello!"}).completion == [A]


def test_column_mapping():
    assert parse({"conversation": [U, A]}, {"messages": "conversation"}).completion == [U, A]
    assert parse({"body": "plain"}, {"text": "body"}).completion == "plain"
    rec = parse({"q": "Q:", "a": " yes"}, {"prompt": "q", "completion": "a"})
    assert (rec.prompt, rec.completion) == ("Q:", " yes")


@pytest.mark.parametrize(
    "row, field, category",
    [
        ({"messages": [U]}, "messages", "roles out of order"),  # ends with a user turn
        ({"messages": [A, U, A]}, "messages[0].role", "roles out of order"),
        ({"messages": [U, {"role": "assistant", "content": " "}]}, "messages", "empty completion"),
        ({"messages": "Hi"}, "messages", "wrong type"),
        ({"messages": [U, {"role": "bot", "content": "x"}]}, "messages[1].role", "unknown role"),
        ({"text": "  "}, "text", "empty completion"),
        ({"text": 5}, "text", "wrong type"),
        ({"prompt": "Q:", "completion": ""}, "completion", "empty completion"),
        ({"chosen": "a", "rejected": "b"}, None, "missing field"),
    ],
)
def test_bad_rows_name_the_place(row, field, category):
    with pytest.raises(RecordError) as info:
        parse(row)
    assert info.value.field == field and info.value.category == category
    assert "d.jsonl: line 3" in str(info.value)


def data(path: str, **kw) -> DataConfig:
    return DataConfig(path=path, max_length=128, max_prompt_length=64, heldout_fraction=0.0, **kw)


def test_sft_file_with_all_three_kinds(tok, tmp_path):
    rows = [
        {"messages": [U, A, U, A]},
        {"prompt": "Q:", "completion": " yes"},
        {"text": "Plain text."},
    ]
    out = prepare(data(write_jsonl(tmp_path / "sft.jsonl", rows), format="sft"), tok, want="sft")
    assert [sum(e["loss_mask"]) for e in out.train] == [
        2 * (len(tok("Hello!", add_special_tokens=False)["input_ids"]) + 1),
        len(tok(" yes", add_special_tokens=False)["input_ids"]) + 1,
        len(tok("Plain text.", add_special_tokens=False)["input_ids"]),  # + EOS - the first token
    ]
    # data.format auto with a path: the method's own format
    again = prepare(data(write_jsonl(tmp_path / "sft2.jsonl", rows)), tok, want="sft")
    assert [e["input_ids"] for e in again.train] == [e["input_ids"] for e in out.train]


def test_bad_sft_rows_are_counted_then_reported(tok, tmp_path):
    rows = [{"text": "ok"}, {"messages": [U]}, {"text": ""}]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(BadRecordsError, match="2 bad records of 3"):
        prepare(data(path, format="sft"), tok, want="sft")
    kept = prepare(data(path, format="sft", on_bad_record="skip"), tok, want="sft")
    assert len(kept.train) == 1


def test_pairs_give_their_chosen_replies(tok, tmp_path):
    rows = [{"prompt": f"Q{i}:", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(4)]
    out = prepare(data(write_jsonl(tmp_path / "p.jsonl", rows), format="pairwise"), tok, want="sft")
    for i, ex in enumerate(out.train):
        trained = [t for t, m in zip(ex["input_ids"], ex["loss_mask"]) if m]
        assert tok.decode(trained) == f" yes {i}<|im_end|>"


def test_unpaired_give_their_desirable_completions(tok, tmp_path):
    rows = [{"prompt": f"Q{i}:", "completion": f" c{i}", "label": i % 2 == 0} for i in range(4)]
    out = prepare(data(write_jsonl(tmp_path / "u.jsonl", rows), format="unpaired"), tok, want="sft")
    assert [e["origin"].rsplit(":", 1)[1] for e in out.train] == ["line 1", "line 3"]  # labels True


def test_the_bundled_pairs_card_feeds_sft_on_chosen(tok):
    out = prepare(
        DataConfig(card="align_prefs_v1", max_train_examples=4, max_eval_examples=2), tok, want="sft"
    )
    assert len(out.train) == 4 and len(out.eval) == 2
    for e in out.train:  # the chosen reply, trained through its one EOS, which ends the sequence
        assert e["input_ids"][-1] == tok.eos_token_id and e["loss_mask"][-1] == 1
        start = e["loss_mask"].index(1)
        assert all(e["loss_mask"][start:]) and e["input_ids"][start:].count(tok.eos_token_id) == 1


def test_sft_sources_are_refused_by_other_methods(tok, tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"text": "a"}, {"text": "b"}])
    with pytest.raises(DataError, match="the source holds SFT records"):
        prepare(data(path, format="sft"), tok, want="pairwise")
    prompts = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a"}])
    with pytest.raises(DataError, match="needs completions"):
        prepare(data(prompts, format="prompts"), tok, want="sft")


def test_inspect_shows_which_tokens_are_trained(tok, tmp_path):
    from align.data.inspect import inspect

    rows = [{"messages": [U, A, U, {"role": "assistant", "content": "Bye."}]}, {"text": "Plain text."}]
    path = write_jsonl(tmp_path / "i.jsonl", rows)
    text = inspect(path, None, ["data.format=sft", "data.heldout_fraction=0"], lambda _: tok)
    assert "loss tokens" in text and "⟦loss: Hello!<|im_end|>⟧" in text and "⟦loss: Bye.<|im_end|>⟧" in text
    assert "⟦masked: \n<|im_start|>user\nHi<|im_end|>" in text  # the "\n" after EOS and user turns: no loss
