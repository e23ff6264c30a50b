"""Data cards (front matter, lookup, source resolution, named splits) and the seeded held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.data.cards import available_cards, load_card, load_card_records, split_records
from align.util.errors import DataError, RecipeError

CARD = """---
name: tiny-prefs
source: data/tiny.jsonl
license: CC-BY-4.0
format: pairwise
columns: {prompt: question}
size: 3
---
# Tiny preferences

Three hand-written pairs for smoke tests.
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fake repo: data_cards/tiny-prefs.md pointing at data/tiny.jsonl."""
    (tmp_path / "data").mkdir()
    rows = [{"question": f"q{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(3)]
    (tmp_path / "data" / "tiny.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "data_cards").mkdir()
    (tmp_path / "data_cards" / "tiny-prefs.md").write_text(CARD)
    return tmp_path


def test_load_card_by_name(repo: Path) -> None:
    card = load_card("tiny-prefs", [repo / "data_cards"])
    assert (card.name, card.license, card.format, card.size) == ("tiny-prefs", "CC-BY-4.0", "pairwise", 3)
    assert card.columns == {"prompt": "question"} and card.splits == {} and card.heldout_fraction is None
    assert Path(card.source) == (repo / "data" / "tiny.jsonl").resolve()
    assert card.description.startswith("# Tiny preferences")
    assert card.path == repo / "data_cards" / "tiny-prefs.md"


def test_load_card_by_path_and_its_records(repo: Path) -> None:
    (repo / "data_cards" / "tiny-prefs.md").write_text(CARD.replace("size: 3", "heldout_fraction: 0.25"))
    card = load_card(str(repo / "data_cards" / "tiny-prefs.md"))
    assert card.heldout_fraction == 0.25
    records, stats = load_card_records(card)
    assert [r.prompt for r in records] == ["q0", "q1", "q2"] and stats.kept == 3
    with pytest.raises(DataError, match="no 'eval' split"):
        load_card_records(card, role="eval")


def test_unknown_name_suggests_the_closest(repo: Path) -> None:
    (repo / "data_cards" / "README.md").write_text("not a card")
    with pytest.raises(DataError) as info:
        load_card("tiny-pref", [repo / "data_cards"])
    message = str(info.value)
    assert "did you mean 'tiny-prefs'?" in message and "available: tiny-prefs" in message
    assert available_cards([repo / "data_cards"]) == ["tiny-prefs"]


def test_missing_card_file() -> None:
    with pytest.raises(DataError, match="data card file not found"):
        load_card("/nowhere/card.md")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (CARD.replace("license: CC-BY-4.0\n", ""), r"field 'license': missing required key"),
        (CARD.replace("format: pairwise", "format: triples"), r"field 'format': expected one of"),
        (CARD.replace("columns: {prompt: question}", "columns: [a]"), r"field 'columns'"),
        (CARD.replace("name: tiny-prefs", "name: [x]"), r"field 'name': expected a string"),
        (CARD.replace("size: 3", "heldout_fraction: 1.5"), r"field 'heldout_fraction'"),
        ("# no front matter\n", "must start with '---'"),
        ("---\nname: x\n", "not closed"),
        ("---\nname: [unclosed\n---\n", "invalid YAML"),
        ("---\n- a list\n---\n", "must be a YAML mapping"),
    ],
)
def test_bad_cards_name_the_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.md"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        load_card(str(path))
    assert str(info.value).startswith(str(path))


def test_named_split_from_the_card(tmp_path: Path) -> None:
    import datasets

    rows = [{"prompt": f"p{i}", "completion": "a", "label": i % 2} for i in range(4)]
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:3]), "test": datasets.Dataset.from_list(rows[3:])}
    )
    dd.save_to_disk(str(tmp_path / "kto"))
    (tmp_path / "cards").mkdir()
    card_text = f"---\nname: kto\nsource: {tmp_path / 'kto'}\nlicense: MIT\nformat: unpaired\nsplits: {{train: train, eval: test}}\n---\n"
    (tmp_path / "cards" / "kto.md").write_text(card_text)
    card = load_card("kto", [tmp_path / "cards"])
    assert len(load_card_records(card)[0]) == 3
    evaluation, _ = load_card_records(card, role="eval")
    assert [(r.prompt, r.label) for r in evaluation] == [("p3", True)]


def test_unresolvable_relative_source_is_a_dataset_name(repo: Path) -> None:
    text = CARD.replace("data/tiny.jsonl", "org/some-dataset")
    (repo / "data_cards" / "hub.md").write_text(text)
    assert load_card("hub", [repo / "data_cards"]).source == "org/some-dataset"


def test_split_records_is_seeded_deterministic_and_disjoint() -> None:
    records = list(range(100))
    train, heldout = split_records(records, heldout_fraction=0.1, seed=7)
    assert (train, heldout) == split_records(records, heldout_fraction=0.1, seed=7)
    assert len(heldout) == 10 and len(train) == 90
    assert sorted(train + heldout) == records and not set(train) & set(heldout)
    assert train == sorted(train) and heldout == sorted(heldout)  # order preserved
    assert split_records(records, heldout_fraction=0.1, seed=8)[1] != heldout


def test_split_records_edges() -> None:
    assert split_records([1, 2, 3], heldout_fraction=0.0, seed=0) == ([1, 2, 3], [])
    train, heldout = split_records([1, 2, 3], heldout_fraction=0.01, seed=0)
    assert len(heldout) == 1 and len(train) == 2
    assert split_records([], heldout_fraction=0.5, seed=0) == ([], [])
    with pytest.raises(RecipeError):
        split_records([1], heldout_fraction=1.0, seed=0)
