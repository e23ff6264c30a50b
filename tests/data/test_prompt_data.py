"""Prompt-only data (for PPO) on the real SmolLM2 tokenizer: tokenized like every other prompt, cached
under its own key, refused by methods that need completions, and the bundled card it ships with."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from align.data.cards import REPO_ROOT, load_card, load_card_records
from align.data.prepare import fingerprint, prepare
from align.data.records import PairRecord, PromptRecord, UnpairedRecord
from align.data.tokenize import TokenizeConfig
from align.models.load import load_tokenizer
from align.recipe import DataConfig, ModelConfig
from align.util.errors import DataError

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "What is 2+2?"},
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def generation_prompt(tok, messages: list[dict]) -> list[int]:
    out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def test_prompts_tokenize_as_the_policy_will_continue_them(tok, tmp_path: Path) -> None:
    rows = [{"prompt": "Name a colour.", "id": 1}, {"prompt": CHAT}, {"prompt": [CHAT[1]]}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    data = DataConfig(path=path, format="prompts", heldout_fraction=0.0)
    out = prepare(data, tok, want="prompts")
    assert [sorted(ex) for ex in out.train] == [["index", "origin", "prompt_ids"]] * 3
    assert out.train[0]["prompt_ids"] == tok("Name a colour.")["input_ids"]  # plain: text, no template
    assert out.train[1]["prompt_ids"] == generation_prompt(tok, CHAT)
    assert tok.decode(out.train[2]["prompt_ids"]).endswith(
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert out.train[1]["origin"] == f"{path}:line 2" and out.token_stats == {"records": 3}
    auto = prepare(dataclasses.replace(data, format="auto"), tok, want="prompts")  # auto: what PPO reads
    assert auto.train == out.train and auto.fingerprint == out.fingerprint


def test_long_prompts_are_cut_or_dropped_and_counted(tok, tmp_path: Path) -> None:
    long_text = " ".join(f"word{i}" for i in range(60))
    rows = [
        {"prompt": CHAT},
        {"prompt": long_text},
        {"prompt": [CHAT[0], {"role": "user", "content": long_text}]},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    limit = len(generation_prompt(tok, [CHAT[0], CHAT[3]]))  # the system message and the question fit
    data = DataConfig(path=path, format="prompts", heldout_fraction=0.0, max_prompt_length=limit)
    out = prepare(data, tok, want="prompts")
    assert all(len(ex["prompt_ids"]) <= limit for ex in out.train) and len(out.train) == 3
    assert out.train[0]["prompt_ids"] == generation_prompt(tok, [CHAT[0], CHAT[3]])  # exchange dropped
    assert out.train[1]["prompt_ids"] == tok(long_text)["input_ids"][-limit:]  # plain: cut from the left
    assert tok.decode(out.train[2]["prompt_ids"]).endswith("word59<|im_end|>\n<|im_start|>assistant\n")
    stats = out.token_stats
    assert (stats["prompt_turns_dropped"], stats["prompt_tokens_cut"], stats["prompt_turn_cut"]) == (1, 1, 1)
    tiny = prepare(dataclasses.replace(data, max_prompt_length=8), tok, want="prompts", strict=False)
    assert (
        tiny.token_stats["dropped_prompt_too_long"] == 2
    )  # SmolLM2's default system message alone is longer
    assert [ex["origin"].rsplit(":", 1)[1] for ex in tiny.train] == ["line 2"]


def test_bad_prompts_are_bad_records_naming_file_line_and_field(tok, tmp_path: Path) -> None:
    rows = [{"prompt": "ok"}, {"prompt": ""}, {"prompt": [CHAT[1], CHAT[2]]}, {"text": "q"}, {"prompt": 7}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError) as info:
        prepare(DataConfig(path=path, format="prompts"), tok, want="prompts")
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{path}: 4 bad records of 5 (")
    assert [line.strip().split(": ")[1:4] for line in lines[1:]] == [
        ["line 2", "field 'prompt'", "empty prompt"],
        ["line 3", "field 'prompt'", "roles out of order"],
        ["line 4", "field 'prompt'", "missing field"],
        ["line 5", "field 'prompt'", "wrong type"],
    ]


def test_pairs_and_unpaired_records_give_their_prompts(tok, tmp_path: Path) -> None:
    pairs = [{"prompt": [CHAT[1]], "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(4)]
    pairs.append({"prompt": "same", "chosen": "x", "rejected": "x"})  # a bad pair: still checked as a pair
    data = DataConfig(
        path=write_jsonl(tmp_path / "d.jsonl", pairs),
        format="pairwise",
        heldout_fraction=0.0,
        on_bad_record="skip",
    )
    as_pairs = prepare(data, tok, want="pairwise")
    as_prompts = prepare(data, tok, want="prompts")
    assert [sorted(ex) for ex in as_prompts.train] == [["index", "origin", "prompt_ids"]] * 4
    assert [ex["prompt_ids"] for ex in as_prompts.train] == [ex["prompt_ids"] for ex in as_pairs.train]
    assert as_prompts.load_stats["skipped"] == {"chosen == rejected": 1}
    assert as_prompts.fingerprint != as_pairs.fingerprint  # the cached files hold different things
    mapped = dataclasses.replace(data, format="auto", columns={"prompt": "prompt", "chosen": "chosen"})
    with pytest.raises(DataError, match=r"unknown field\(s\) \['chosen'\].*fields of pairwise records"):
        prepare(mapped, tok, want="prompts")  # auto reads what PPO reads: prompts; say how to read pairs
    unpaired = [{"prompt": f"q{i}", "completion": "a", "label": i % 2} for i in range(2)]
    data = DataConfig(
        path=write_jsonl(tmp_path / "u.jsonl", unpaired), format="unpaired", heldout_fraction=0.0
    )
    assert [tok.decode(ex["prompt_ids"]) for ex in prepare(data, tok, want="prompts").train] == ["q0", "q1"]


def test_the_cache_key_tells_the_formats_apart(tok) -> None:
    args = dict(
        held=[], config=TokenizeConfig(128, 64), tokenizer=tok, template_text=None, on_bad_record="error"
    )
    keys = {
        fingerprint([PromptRecord("Q:", "d:line 1")], **args),
        fingerprint([PairRecord("Q:", " a", " b", "d:line 1")], **args),
        fingerprint([UnpairedRecord("Q:", " a", True, "d:line 1")], **args),
        fingerprint([PromptRecord([{"role": "user", "content": "Q:"}], "d:line 1")], **args),
    }
    assert len(keys) == 4


@pytest.mark.parametrize(
    ("want", "needs"), [("pairwise", "pairs"), ("unpaired", "unpaired records \\(or pairs to unpair\\)")]
)
def test_a_prompts_source_is_refused_by_methods_that_need_completions(
    tok, tmp_path: Path, want: str, needs: str
) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q"}])
    message = rf"^{path}: field 'format': this method needs {needs}; the source holds prompts only"
    with pytest.raises(DataError, match=message):
        prepare(DataConfig(path=path, format="prompts"), tok, want=want)
    card = tmp_path / "cards" / "p.md"
    card.parent.mkdir()
    card.write_text(f"---\nname: p\nsource: {path}\nlicense: MIT\nformat: prompts\n---\n")
    with pytest.raises(DataError, match=rf"^{card}: field 'format': this method needs {needs}"):
        prepare(DataConfig(card=str(card)), tok, want=want)
    assert len(prepare(DataConfig(card=str(card)), tok, want="prompts").train) == 1


def test_unpair_does_not_apply_to_prompts(tok, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(
        DataError, match="field 'unpair': data.unpair applies to pairwise sources for unpaired"
    ):
        prepare(DataConfig(path=path, format="pairwise", unpair=True), tok, want="prompts")


# -- the bundled prompt set -------------------------------------------------------------------------


def test_bundled_card_matches_its_file_and_generator(tok) -> None:
    import importlib.util

    card = load_card("align_prompts_v1")
    meta = yaml.safe_load(card.path.read_text().split("---")[1])
    records, stats = load_card_records(card)
    assert (card.format, card.license, card.size, stats.kept, stats.bad) == (
        "prompts",
        "Apache-2.0",
        120,
        120,
        0,
    )
    assert all(r.conversational and r.prompt[-1]["role"] == "user" for r in records)
    rows = [json.loads(line) for line in Path(card.source).read_text().splitlines()]
    counts = {c: sum(1 for r in rows if r["category"] == c) for c in meta["categories"]}
    assert counts == meta["categories"] and sum(counts.values()) == 120
    assert sum(r["prompt"][0]["role"] == "system" for r in rows) == 8
    assert sum(any(m["role"] == "assistant" for m in r["prompt"]) for r in rows) == 10
    spec = importlib.util.spec_from_file_location(
        "build", REPO_ROOT / "data_cards" / "build_align_prompts.py"
    )
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.build() == rows  # the generator reproduces the file (and its checks pass)
    out = prepare(DataConfig(card="align_prompts_v1", max_prompt_length=96), tok, want="prompts")
    assert (len(out.train), len(out.eval)) == (102, 18)  # the card's 15% held-out split
    lengths = [len(ex["prompt_ids"]) for ex in out.train + out.eval]
    assert out.token_stats == {"records": 120} and (min(lengths), max(lengths)) == (
        29,
        77,
    )  # as the card says
