"""parse_pair / parse_unpaired / parse_prompt: every accepted format, and every rejection names source,
place and field."""

from __future__ import annotations

import pytest

from align.data.parse import RecordError, parse_pair, parse_prompt, parse_unpaired
from align.util.errors import DataError


def sys(text: str) -> dict:
    return {"role": "system", "content": text}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def pair(row: dict, columns: dict | None = None):
    return parse_pair(row, source="data.jsonl", where="line 12", columns=columns)


def bad_pair(row: dict, field: str, category: str) -> RecordError:
    with pytest.raises(DataError) as info:
        pair(row)
    err = info.value
    assert isinstance(err, RecordError)
    assert "data.jsonl" in str(err) and "line 12" in str(err) and f"field '{field}'" in str(err), str(err)
    assert err.field == field and err.category == category, str(err)
    return err


# --- (a) plain ---------------------------------------------------------------------------------


def test_plain_pair() -> None:
    rec = pair({"prompt": "Q?", "chosen": "good", "rejected": "bad", "extra": 1})
    assert (rec.prompt, rec.chosen, rec.rejected) == ("Q?", "good", "bad")
    assert rec.origin == "data.jsonl:line 12" and not rec.conversational


def test_column_mapping() -> None:
    row = {"question": "Q?", "response_j": "good", "response_k": "bad"}
    rec = pair(row, {"prompt": "question", "chosen": "response_j", "rejected": "response_k"})
    assert (rec.prompt, rec.chosen, rec.rejected) == ("Q?", "good", "bad")


def test_column_mapping_errors_name_the_users_column() -> None:
    with pytest.raises(DataError, match="field 'response_k': missing field"):
        pair(
            {"question": "Q", "response_j": "a"},
            {"prompt": "question", "chosen": "response_j", "rejected": "response_k"},
        )


# --- (b) conversational ------------------------------------------------------------------------


def test_conversational_pair() -> None:
    prompt = [sys("be nice"), user("hi"), bot("hello"), user("how are you?")]
    rec = pair({"prompt": prompt, "chosen": [bot("fine")], "rejected": [bot("go away")]})
    assert rec.conversational and rec.prompt == prompt
    assert rec.chosen == [bot("fine")] and rec.rejected == [bot("go away")]


def test_conversational_wraps_string_completions() -> None:
    rec = pair({"prompt": [user("hi")], "chosen": "hello", "rejected": [bot("bye")]})
    assert rec.chosen == [bot("hello")] and rec.rejected == [bot("bye")]


def test_extra_message_keys_are_dropped() -> None:
    rec = pair({"prompt": [{**user("hi"), "name": None}], "chosen": "a", "rejected": "b"})
    assert rec.prompt == [user("hi")]


def test_completions_repeating_the_prompt_are_stripped() -> None:
    prompt = [user("hi")]
    rec = pair({"prompt": prompt, "chosen": [user("hi"), bot("a")], "rejected": [user("hi"), bot("b")]})
    assert rec.prompt == prompt and rec.chosen == [bot("a")] and rec.rejected == [bot("b")]


def test_prompt_string_with_full_conversations() -> None:
    """ultrafeedback_binarized style: a prompt string and whole conversations in chosen/rejected."""
    rec = pair({"prompt": "hi", "chosen": [user("hi"), bot("a")], "rejected": [user("hi"), bot("b")]})
    assert rec.prompt == [user("hi")] and rec.chosen == [bot("a")]
    bad_pair(
        {"prompt": "other", "chosen": [user("hi"), bot("a")], "rejected": [user("hi"), bot("b")]},
        "prompt",
        "prompt mismatch",
    )


# --- (c) implicit prompt ------------------------------------------------------------------------


def test_implicit_hh_strings_cut_back_to_the_marker() -> None:
    """The answers share their first words; the prompt must still end at the assistant marker."""
    chosen = "\n\nHuman: Is the sky blue?\n\nAssistant: Yes, it is blue."
    rejected = "\n\nHuman: Is the sky blue?\n\nAssistant: Yes, it is green."
    rec = pair({"chosen": chosen, "rejected": rejected})
    assert rec.prompt == [user("Is the sky blue?")]
    assert rec.chosen == [bot("Yes, it is blue.")] and rec.rejected == [bot("Yes, it is green.")]
    assert rec.conversational


def test_implicit_hh_multi_turn() -> None:
    head = "\n\nHuman: hi\n\nAssistant:  hello \n\nHuman: tell me a joke\n\nAssistant:"
    rec = pair({"prompt": None, "chosen": head + " a joke", "rejected": head + " no"})
    assert rec.prompt == [user("hi"), bot("hello"), user("tell me a joke")]
    assert rec.chosen == [bot("a joke")] and rec.rejected == [bot("no")]


def test_implicit_hh_without_leading_newlines() -> None:
    rec = pair({"chosen": "Human: q\n\nAssistant: a", "rejected": "Human: q\n\nAssistant: b"})
    assert rec.prompt == [user("q")]


def test_implicit_message_lists() -> None:
    shared = [sys("s"), user("hi"), bot("hello"), user("joke?")]
    rec = pair({"chosen": [*shared, bot("ha")], "rejected": [*shared, bot("no")]})
    assert rec.prompt == shared and rec.chosen == [bot("ha")] and rec.rejected == [bot("no")]


def test_implicit_message_lists_with_shared_first_answer_cut_back_to_user() -> None:
    shared = [user("hi")]
    rec = pair({"chosen": [*shared, bot("same"), bot("x")], "rejected": [*shared, bot("same"), bot("y")]})
    assert rec.prompt == shared and rec.chosen == [bot("same"), bot("x")]


# --- rejections -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "field", "category"),
    [
        ({"prompt": "q", "rejected": "b"}, "chosen", "missing field"),
        ({"prompt": "q", "chosen": "a", "rejected": None}, "rejected", "null field"),
        ({"prompt": "q", "chosen": 3, "rejected": "b"}, "chosen", "wrong type"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, "prompt", "wrong type"),
        ({"prompt": "q", "chosen": "  \n", "rejected": "b"}, "chosen", "empty completion"),
        ({"prompt": [user("q")], "chosen": [bot(" ")], "rejected": "b"}, "chosen", "empty completion"),
        ({"prompt": " ", "chosen": "a", "rejected": "b"}, "prompt", "empty prompt"),
        ({"prompt": [], "chosen": "a", "rejected": "b"}, "prompt", "empty prompt"),
        ({"prompt": "q", "chosen": "same", "rejected": "same "}, "chosen", "chosen == rejected"),
        ({"prompt": [user("q")], "chosen": "x", "rejected": [bot("x")]}, "chosen", "chosen == rejected"),
        ({"prompt": [{"content": "q"}], "chosen": "a", "rejected": "b"}, "prompt[0].role", "missing field"),
        (
            {"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"},
            "prompt[0].content",
            "missing field",
        ),
        (
            {"prompt": [user("q")], "chosen": [{"role": "assistant", "content": 5}], "rejected": "b"},
            "chosen[0].content",
            "wrong type",
        ),
        ({"prompt": ["q"], "chosen": "a", "rejected": "b"}, "prompt[0]", "wrong type"),
        (
            {"prompt": [{"role": "robot", "content": "q"}], "chosen": "a", "rejected": "b"},
            "prompt[0].role",
            "unknown role",
        ),
        (
            {"prompt": [user("q"), user("q2")], "chosen": "a", "rejected": "b"},
            "prompt[1].role",
            "roles out of order",
        ),
        ({"prompt": [user("q"), bot("a")], "chosen": "a", "rejected": "b"}, "prompt", "roles out of order"),
        (
            {"prompt": [user("q"), sys("s")], "chosen": "a", "rejected": "b"},
            "prompt[1].role",
            "roles out of order",
        ),
        (
            {"prompt": [bot("a"), user("q")], "chosen": "a", "rejected": "b"},
            "prompt[0].role",
            "roles out of order",
        ),
        (
            {"prompt": [user("q")], "chosen": [bot("a"), user("u")], "rejected": "b"},
            "chosen[1].role",
            "roles out of order",
        ),
        ({"prompt": "q", "chosen": [bot("a")], "rejected": [bot("b")]}, "chosen", "mixed formats"),
        ({"prompt": "q", "chosen": "a", "rejected": [bot("b")]}, "rejected", "mixed formats"),
        ({"chosen": "text a", "rejected": [bot("b")]}, "rejected", "mixed formats"),
        (
            {"chosen": "Human: q\n\nAnswer: a", "rejected": "Human: q\n\nAnswer: b"},
            "prompt",
            "missing field",
        ),
        (
            {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: r\n\nAssistant: b"},
            "chosen",
            "no shared prompt",
        ),
        (
            {"chosen": "intro\n\nHuman: q\n\nAssistant: a", "rejected": "intro\n\nHuman: q\n\nAssistant: b"},
            "chosen",
            "bad transcript",
        ),
        (
            {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant:   "},
            "rejected",
            "empty completion",
        ),
        (
            {
                "chosen": "\n\nHuman: q\n\nAssistant: a\n\nHuman: more",
                "rejected": "\n\nHuman: q\n\nAssistant: b",
            },
            "chosen[1].role",
            "roles out of order",
        ),
        (
            {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: a"},
            "chosen",
            "chosen == rejected",
        ),
        ({"chosen": [user("q"), bot("a")], "rejected": [user("r"), bot("b")]}, "chosen", "no shared prompt"),
        (
            {"chosen": [user("q"), bot("a")], "rejected": [user("q"), bot("a")]},
            "chosen",
            "chosen == rejected",
        ),
        ({"chosen": [user("q"), bot("a")], "rejected": [user("q")]}, "rejected", "empty completion"),
    ],
)
def test_rejections_name_source_line_and_field(row: dict, field: str, category: str) -> None:
    bad_pair(row, field, category)


def test_non_object_row() -> None:
    with pytest.raises(DataError, match="not an object"):
        pair(["prompt", "chosen"])  # type: ignore[arg-type]


# --- unpaired -----------------------------------------------------------------------------------


def unpaired(row: dict):
    return parse_unpaired(row, source="kto.jsonl", where="record 3", columns=None)


@pytest.mark.parametrize(("raw", "label"), [(True, True), (False, False), (1, True), (0, False)])
def test_unpaired_labels(raw: object, label: bool) -> None:
    rec = unpaired({"prompt": "q", "completion": "a", "label": raw})
    assert (rec.prompt, rec.completion, rec.label, rec.origin) == ("q", "a", label, "kto.jsonl:record 3")


@pytest.mark.parametrize(("raw", "label"), [("true", True), (" False", False), ("1", True), ("0", False)])
def test_unpaired_text_labels_as_read_from_csv(raw: str, label: bool) -> None:
    assert unpaired({"prompt": "q", "completion": "a", "label": raw}).label is label


@pytest.mark.parametrize("raw", ["yes", "2", 2, 0.5, None])
def test_unpaired_bad_labels(raw: object) -> None:
    with pytest.raises(DataError, match=r"kto\.jsonl: record 3: field 'label'"):
        unpaired({"prompt": "q", "completion": "a", "label": raw})


def test_unpaired_conversational_and_implicit() -> None:
    rec = unpaired({"prompt": [user("q")], "completion": "a", "label": 1})
    assert rec.prompt == [user("q")] and rec.completion == [bot("a")]
    rec = unpaired({"completion": "\n\nHuman: q\n\nAssistant: a\n\nHuman: q2\n\nAssistant: b", "label": 0})
    assert rec.prompt == [user("q"), bot("a"), user("q2")] and rec.completion == [bot("b")]
    rec = unpaired({"completion": [user("q"), bot("a")], "label": True})
    assert rec.prompt == [user("q")] and rec.completion == [bot("a")]


def test_unpaired_rejections() -> None:
    with pytest.raises(DataError, match="field 'completion': empty completion"):
        unpaired({"prompt": "q", "completion": " ", "label": 1})
    with pytest.raises(DataError, match="field 'completion': missing field"):
        unpaired({"prompt": "q", "label": 1})


@pytest.mark.parametrize(
    ("raw", "label"), [("up", True), ("down", False), (" UP ", True), ("👍", True), ("👎", False)]
)
def test_unpaired_thumbs_labels(raw: str, label: bool) -> None:
    assert unpaired({"prompt": "q", "completion": "a", "label": raw}).label is label


@pytest.mark.parametrize(
    ("raw", "label"), [(4, True), (5.0, True), ("4.5", True), (3.5, False), (1, False), ("0", False)]
)
def test_unpaired_ratings_with_a_threshold(raw: object, label: bool) -> None:
    rec = parse_unpaired(
        {"prompt": "q", "completion": "a", "label": raw},
        source="kto.jsonl",
        where="record 3",
        label_threshold=4,
    )
    assert rec.label is label


@pytest.mark.parametrize("raw", [5, "4.5", -1])
def test_unpaired_rating_without_threshold_says_how_to_fix_it(raw: object) -> None:
    with pytest.raises(
        DataError, match=r"record 3: field 'label': rating without threshold: .*data.label_threshold"
    ):
        unpaired({"prompt": "q", "completion": "a", "label": raw})


# --- prompt-only (PPO) ----------------------------------------------------------------------------


def prompt_only(row: object, columns: dict | None = None):
    return parse_prompt(row, source="prompts.csv", where="line 7", columns=columns)  # type: ignore[arg-type]


def test_prompt_only_plain_and_chat() -> None:
    rec = prompt_only({"prompt": "Name a colour.", "id": 4, "chosen": None})  # other columns ignored
    assert (rec.prompt, rec.origin, rec.conversational) == ("Name a colour.", "prompts.csv:line 7", False)
    chat = [sys("be brief"), user("hi"), bot("hello"), user("2+2?")]
    rec = prompt_only({"prompt": [*chat[:1], {**chat[1], "name": "x"}, *chat[2:]]})
    assert rec.prompt == chat and rec.conversational  # extra message keys dropped, as for pairs


def test_prompt_only_column_mapping() -> None:
    assert prompt_only({"question": "Why?"}, {"prompt": "question"}).prompt == "Why?"
    conversation = [user("hi"), bot("hello"), user("tell me a joke")]
    assert prompt_only({"messages": conversation}, {"prompt": "messages"}).prompt == conversation
    with pytest.raises(DataError, match=r"prompts\.csv: line 7: field 'messages': missing field"):
        prompt_only({"prompt": "q"}, {"prompt": "messages"})


@pytest.mark.parametrize(
    ("row", "field", "category"),
    [
        ({"prompt": ""}, "prompt", "empty prompt"),
        ({"prompt": " \n"}, "prompt", "empty prompt"),
        ({"prompt": []}, "prompt", "empty prompt"),
        ({"prompt": 3}, "prompt", "wrong type"),
        ({"prompt": {"role": "user", "content": "q"}}, "prompt", "wrong type"),
        ({"prompt": None}, "prompt", "null field"),
        ({"question": "q"}, "prompt", "missing field"),
        ({"prompt": "\ud800"}, "prompt", "invalid text"),
        ({"prompt": [{"role": "robot", "content": "q"}]}, "prompt[0].role", "unknown role"),
        ({"prompt": [{"role": "user", "content": 5}]}, "prompt[0].content", "wrong type"),
        ({"prompt": [user("q"), bot("a")]}, "prompt", "roles out of order"),
        ({"prompt": [user("q"), user("q2")]}, "prompt[1].role", "roles out of order"),
        ({"prompt": [bot("a"), user("q")]}, "prompt[0].role", "roles out of order"),
    ],
)
def test_prompt_only_rejections_name_source_line_and_field(row: dict, field: str, category: str) -> None:
    with pytest.raises(RecordError) as info:
        prompt_only(row)
    err = info.value
    assert str(err).startswith(f"prompts.csv: line 7: field '{field}': {category}"), str(err)
    assert (err.field, err.category) == (field, category)


def test_prompt_only_missing_column_says_how_to_map_it() -> None:
    with pytest.raises(RecordError, match=r"row has columns 'chosen', 'rejected'; name the prompt column"):
        prompt_only({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"})
    with pytest.raises(RecordError, match="not an object"):
        prompt_only(["q"])
