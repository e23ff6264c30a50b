"""prepare(): the cache key covers everything the cached file depends on; tokenizer failures are
bad records like parse failures; data.split / data.eval_split work with a data card."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import align
import align.data.prepare as prep
from align.data.prepare import fingerprint, prepare
from align.data.records import BadRecordsError, PairRecord
from align.data.tokenize import TokenizeConfig
from align.models.load import load_tokenizer
from align.recipe import DataConfig, ModelConfig
from align.util.errors import DataError


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def plain(i: int, chosen: str = "") -> dict:
    return {"prompt": f"Q{i}:", "chosen": chosen or f" yes {i}", "rejected": f" no {i}"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- cache key -------------------------------------------------------------------------------------

RECORDS = [PairRecord("Q:", " a", " b", "d:line 1")]


def key(tok, **change) -> str:
    args = {
        "train": RECORDS,
        "held": [],
        "config": TokenizeConfig(128, 64, "auto"),
        "tokenizer": tok,
        "template_text": tok.chat_template,
        "on_bad_record": "error",
    }
    return fingerprint(**{**args, **change})


def test_fingerprint_changes_with_every_input(tok, monkeypatch: pytest.MonkeyPatch) -> None:
    base = key(tok)
    assert key(tok) == base  # deterministic
    changed = {
        "records": key(tok, train=[PairRecord("Q:", " a", " c", "d:line 1")]),
        "split": key(tok, train=[], held=RECORDS),
        "max_length": key(tok, config=TokenizeConfig(256, 64, "auto")),
        "max_prompt_length": key(tok, config=TokenizeConfig(128, 32, "auto")),
        "chat_template setting": key(tok, config=TokenizeConfig(128, 64, "chatml")),
        "template text": key(tok, template_text=tok.chat_template + " "),
        "on_bad_record": key(tok, on_bad_record="skip"),
    }
    monkeypatch.setattr(align, "__version__", "0.0.0+other")
    changed["align version"] = key(tok)
    monkeypatch.undo()
    monkeypatch.setattr(prep, "TOKENIZE_VERSION", -1)
    changed["tokenize version"] = key(tok)
    assert base not in changed.values() and len(set(changed.values())) == len(changed), changed


def test_fingerprint_follows_the_tokenizers_own_template(tok, tmp_path: Path) -> None:
    import copy

    data = DataConfig(path=str(write_jsonl(tmp_path / "d.jsonl", [plain(i) for i in range(4)])))
    other = copy.deepcopy(tok)
    other.chat_template = tok.chat_template.replace("SmolLM", "SmolLM2")
    assert prepare(data, tok).fingerprint != prepare(data, other).fingerprint
    skip = dataclasses.replace(data, on_bad_record="skip")
    assert prepare(data, tok).fingerprint != prepare(skip, tok).fingerprint


# -- tokenizer failures are bad records --------------------------------------------------------------


class _Fussy:
    """The real tokenizer, except that encoding text with 'BOOM' raises (as tokenizers do on odd input)."""

    def __init__(self, tok) -> None:
        self._tok = tok

    def __getattr__(self, name: str):
        return getattr(self._tok, name)

    def __call__(self, text: str, **kwargs):
        if "BOOM" in text:
            raise ValueError("cannot encode this")
        return self._tok(text, **kwargs)


def test_tokenizer_exceptions_become_record_errors(tok, tmp_path: Path) -> None:
    rows = [plain(i) for i in range(6)]
    rows[2] = plain(2, " BOOM")
    rows[4] = plain(4, " BOOM again")
    data = DataConfig(path=str(write_jsonl(tmp_path / "d.jsonl", rows)), heldout_fraction=0.0)
    with pytest.raises(BadRecordsError) as info:
        prepare(data, _Fussy(tok))
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{data.path}: 2 bad records of 6 (2 untokenizable)")
    assert lines[1:] == [
        f"  {data.path}: line {n}: field 'chosen': untokenizable: ValueError: cannot encode this"
        for n in (3, 5)
    ]
    skip = dataclasses.replace(data, on_bad_record="skip")
    for _ in range(2):  # the second call reads the cache and must report the same
        out = prepare(skip, _Fussy(tok))
        assert [ex["origin"].rsplit(":", 1)[1] for ex in out.train] == [
            "line 1",
            "line 2",
            "line 4",
            "line 6",
        ]
        assert (out.load_stats["read"], out.load_stats["kept"]) == (6, 4)
        assert out.load_stats["skipped"] == {"untokenizable": 2}


def test_template_errors_become_record_errors(tok, tmp_path: Path) -> None:
    template = (
        "{% for m in messages %}{% if 'BOOM' in m['content'] %}{{ raise_exception('no boom here') }}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    rows = [
        {"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": f"a{i}", "rejected": f"b{i}"}
        for i in range(4)
    ]
    rows[1]["chosen"] = "BOOM"
    data = DataConfig(
        path=str(write_jsonl(tmp_path / "d.jsonl", rows)), chat_template=template, on_bad_record="skip"
    )
    out = prepare(data, tok)
    assert out.load_stats["skipped"] == {"template error": 1} and out.load_stats["kept"] == 3
    (message,) = [m for _, m in out.load_stats["examples"]["template error"]]
    assert (
        message.startswith(f"{data.path}: line 2: field 'chosen': template error: ")
        and "no boom here" in message
    )


def test_nothing_left_names_the_reasons(tok, tmp_path: Path) -> None:
    data = DataConfig(path=str(write_jsonl(tmp_path / "d.jsonl", [plain(0, " BOOM")])), on_bad_record="skip")
    with pytest.raises(DataError, match=r"no training examples left .*skipped 1: 1 untokenizable"):
        prepare(data, _Fussy(tok))


# -- data.split / data.eval_split with a card ---------------------------------------------------------


@pytest.fixture
def card(tmp_path: Path) -> Path:
    import datasets

    splits = {
        name: datasets.Dataset.from_list([plain(i, f" {name} {i}") for i in range(n)])
        for name, n in (("train", 5), ("test", 2), ("dev", 3))
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "ds"))
    path = tmp_path / "cards" / "three.md"
    path.parent.mkdir()
    path.write_text(f"---\nname: three\nsource: {tmp_path / 'ds'}\nlicense: MIT\nformat: pairwise\n---\n")
    return path


def chosen(examples: list[dict], tok) -> list[str]:
    return sorted(tok.decode(ex["chosen_ids"]).split()[0] for ex in examples)


def test_card_with_data_split_trains_on_that_split(tok, card: Path) -> None:
    out = prepare(DataConfig(card=str(card), split="dev", heldout_fraction=0.0), tok)
    assert chosen(out.train, tok) == ["dev"] * 3 and out.eval == []
    out = prepare(DataConfig(card=str(card), split="dev", eval_split="test"), tok)
    assert chosen(out.train, tok) == ["dev"] * 3 and chosen(out.eval, tok) == ["test"] * 2
    out = prepare(DataConfig(card=str(card), eval_split="test"), tok)  # train: the default split
    assert chosen(out.train, tok) == ["train"] * 5 and chosen(out.eval, tok) == ["test"] * 2


@pytest.mark.parametrize("key", ["split", "eval_split"])
def test_card_with_unknown_split_names_the_available_ones(tok, card: Path, key: str) -> None:
    with pytest.raises(
        DataError, match=r"field 'split': unknown split 'validation'; available: train, test, dev"
    ):
        prepare(DataConfig(card=str(card), **{key: "validation"}), tok)


def test_card_format_must_match_the_recipe(tok, card: Path) -> None:
    card.write_text(card.read_text().replace("format: pairwise", "format: unpaired"))
    with pytest.raises(
        DataError, match=r"field 'format': the card holds unpaired data, the recipe says pairwise"
    ):
        prepare(DataConfig(card=str(card), format="pairwise"), tok)
    with pytest.raises(
        DataError, match=r"field 'format': this method needs pairs; the source holds unpaired"
    ):
        prepare(DataConfig(card=str(card)), tok, want="pairwise")  # format: auto, a DPO-family method
