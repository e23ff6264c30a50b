"""SFT records on the real SmolLM2 tokenizer: loss masks per format, one EOS per trained turn.

SmolLM2's template renders each turn `<|im_start|>role\\n` + content + `<|im_end|>` + `\\n` (and a
default system turn when there is none); pad = eos = `<|im_end|>`. A trained assistant span must be
the content and its `<|im_end|>`, never the header nor the `\\n` after it.
"""

from __future__ import annotations

import pytest

from align.data.records import SFTRecord
from align.data.tokenize import TokenizeConfig, Tokenizer
from align.models.load import load_tokenizer
from align.recipe import ModelConfig


def U(s: str) -> dict:
    return {"role": "user", "content": s}


def A(s: str) -> dict:
    return {"role": "assistant", "content": s}


def S(s: str) -> dict:
    return {"role": "system", "content": s}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


def make(tok, max_length: int = 512, max_prompt_length: int = 256) -> Tokenizer:
    return Tokenizer(tok, TokenizeConfig(max_length, max_prompt_length))


def spans(ex: dict) -> list[list[int]]:
    """The runs of consecutive loss tokens, as id lists."""
    out, cur = [], []
    for t, m in zip(ex["input_ids"], ex["loss_mask"]):
        if m:
            cur.append(t)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def content_ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


CHATS = {
    "two turns": [U("Hi!"), A("Hello! How can I help?"), U("What is 7 times 6?"), A("42.")],
    "three turns + system": [
        S("Answer tersely."),
        U("2 + 2?"),
        A("4."),
        U("And 3 + 3?"),
        A("6."),
        U("Thanks"),
        A("You're welcome."),
    ],
}


@pytest.mark.parametrize("name", list(CHATS))
def test_every_assistant_turn_is_trained_through_one_eos(tok, name):
    messages = CHATS[name]
    ex = make(tok).sft(SFTRecord(None, messages, origin="chat.jsonl:line 1"))
    # the ids are exactly the template's rendering of the whole conversation
    assert ex["input_ids"] == list(
        tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    )
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    got = spans(ex)
    assert len(got) == len(answers)  # every assistant turn, not just the last
    for span, answer in zip(got, answers):
        assert span == content_ids(tok, answer) + [tok.eos_token_id]  # content + exactly one EOS
        assert span.count(tok.eos_token_id) == 1
    # the token after each span is the template's "\n", untrained; user and system text never are
    ids, mask = ex["input_ids"], ex["loss_mask"]
    ends = [i for i in range(len(ids) - 1) if mask[i] and not mask[i + 1]] + [len(ids) - 2]
    assert all(tok.decode(ids[i + 1]) == "\n" for i in ends)
    trained = tok.decode([t for t, m in zip(ids, mask) if m])
    assert "user" not in trained and "assistant" not in trained and "tersely" not in trained
    assert mask[0] == 0 and sum(mask) == sum(len(s) for s in got)


def test_prompt_and_completion_strings(tok):
    ex = make(tok).sft(SFTRecord("Q: What is 2 + 2?\nA:", " 4"))
    prompt = tok("Q: What is 2 + 2?\nA:")["input_ids"]
    n = len(prompt)
    assert ex["input_ids"][:n] == prompt and ex["loss_mask"][:n] == [0] * n
    assert ex["input_ids"][n:] == content_ids(tok, " 4") + [tok.eos_token_id]
    assert ex["loss_mask"][n:] == [1] * (len(ex["input_ids"]) - n)


def test_prompt_and_completion_messages_train_the_completion_only(tok):
    """A chat prompt with an earlier assistant turn: only the completion is trained (TRL's
    completion_only_loss), unlike a `messages` conversation."""
    prompt = [U("Hi!"), A("Hello!"), U("7 times 6?")]
    ex = make(tok).sft(SFTRecord(prompt, [A("42.")]))
    assert spans(ex) == [content_ids(tok, "42.") + [tok.eos_token_id]]
    p = list(
        tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    assert ex["input_ids"][: len(p)] == p  # the prompt is a true prefix
    assert ex["loss_mask"].index(1) == len(p)


def test_plain_text_trains_every_token_and_ends_with_one_eos(tok):
    tk = make(tok)
    ex = tk.sft(SFTRecord(None, "The capital of France is Paris."))
    ids = content_ids(tok, "The capital of France is Paris.")
    assert ex["input_ids"] == ids + [tok.eos_token_id]
    assert ex["loss_mask"] == [0] + [1] * len(ids)  # every token the model can predict
    # text that already ends with EOS gets no second one
    again = tk.sft(SFTRecord(None, "Paris.<|im_end|>"))
    assert again["input_ids"] == content_ids(tok, "Paris.") + [tok.eos_token_id]


def test_truncation_cuts_from_the_right_and_drops_records_without_loss_tokens(tok):
    messages = CHATS["two turns"]
    full = make(tok).sft(SFTRecord(None, messages))
    first_end = full["loss_mask"].index(1) + len(spans(full)[0])
    tk = make(tok, max_length=first_end + 3, max_prompt_length=8)
    cut = tk.sft(SFTRecord(None, messages))
    assert cut["input_ids"] == full["input_ids"][: first_end + 3]
    assert spans(cut) == spans(full)[:1]  # the first reply whole, the second cut away
    assert tk.stats.counts["completion_truncated"] == 1
    short = make(tok, max_length=10, max_prompt_length=8)
    assert short.sft(SFTRecord(None, messages)) is None  # the template alone fills 10 tokens
    assert short.stats.counts["dropped_empty_completion"] == 1
