"""Tokenization invariants on the real SmolLM2 tokenizer (offline, cached under ALIGN_CACHE).

SmolLM2: pad == eos == <|im_end|> (id 2), bos == <|im_start|> (id 1), a ChatML template that
injects a default system prompt when the conversation has none. See align/data/tokenize.py.
"""

from __future__ import annotations

import copy

import pytest

from align.data.records import PairRecord, UnpairedRecord
from align.data.tokenize import TokenizeConfig, Tokenizer
from align.models.load import load_tokenizer
from align.recipe import ModelConfig
from align.util.errors import DataError

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def U(s: str) -> dict:
    return {"role": "user", "content": s}


def A(s: str) -> dict:
    return {"role": "assistant", "content": s}


def S(s: str) -> dict:
    return {"role": "system", "content": s}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ModelConfig("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def no_template_tok(tok):
    t = copy.deepcopy(tok)
    t.chat_template = None
    return t


def make(tok, max_length: int = 512, max_prompt_length: int = 256, template: str = "auto") -> Tokenizer:
    return Tokenizer(tok, TokenizeConfig(max_length, max_prompt_length, template))


def chat_ids(tok, messages: list[dict]) -> list[int]:
    return list(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def test_smollm2_special_tokens(tok):
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id == 2
    assert tok.bos_token == "<|im_start|>" and tok.bos_token_id == 1
    assert tok.chat_template and DEFAULT_SYSTEM in tok.chat_template


PROMPTS = {
    "single": [U("What is 7 times 6?")],
    "single+system": [S("Answer tersely."), U("What is 7 times 6?")],
    "multi": [U("What is 2 + 2?"), A("The answer is 4."), U("And 7 times 6?")],
    "multi+system": [S("Answer tersely."), U("Hi!"), A("Hello! How can I help?"), U("What is 7 times 6?")],
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_chat_prompt_is_true_prefix_and_completion_ends_with_one_eos(tok, name):
    prompt = PROMPTS[name]
    chosen, rejected = [A("The answer is 42.")], [A("The answer is 43.")]
    tk = make(tok)
    ex = tk.pair(PairRecord(prompt, chosen, rejected, origin="prefs.jsonl:line 1"))
    p = ex["prompt_ids"]
    for key, completion in (("chosen_ids", chosen), ("rejected_ids", rejected)):
        c = ex[key]
        full = chat_ids(tok, prompt + completion)
        # prompt ids are exactly the start of the templated prompt+completion, and so is prompt+completion
        assert full[: len(p)] == p
        assert full[: len(p) + len(c)] == p + c
        # the template's trailing "\n" after <|im_end|> is not part of the completion
        assert tok.decode(full[len(p) + len(c) :]) == "\n"
        assert c[-1] == tok.eos_token_id and c.count(tok.eos_token_id) == 1
        assert tok.decode(c) == completion[0]["content"] + "<|im_end|>"
        assert p[0] == tok.bos_token_id and p[1] != tok.bos_token_id
    text = tok.decode(p)
    assert text.endswith("<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")
    has_system = prompt[0]["role"] == "system"
    assert (DEFAULT_SYSTEM in text) is (not has_system)
    # every prompt turn ends with <|im_end|>: eos ids inside the prompt are expected
    assert p.count(tok.eos_token_id) == len(prompt) + (0 if has_system else 1)
    assert tk.stats.counts["records"] == 1
    assert tk.stats.counts["prompt_truncated"] == tk.stats.counts["completion_truncated"] == 0


def test_multi_message_completion_keeps_inner_eos_only(tok):
    prompt = PROMPTS["multi+system"]
    chosen = [A("It is 42."), A("Anything else?")]
    ex = make(tok).pair(PairRecord(prompt, chosen, [A("It is 43.")], origin="x:line 2"))
    c = ex["chosen_ids"]
    assert c[-1] == tok.eos_token_id
    assert c.count(tok.eos_token_id) == 2  # one per assistant message, nothing after the last
    assert tok.decode(c) == "It is 42.<|im_end|>\n<|im_start|>assistant\nAnything else?<|im_end|>"
    full = chat_ids(tok, prompt + chosen)
    assert full[: len(ex["prompt_ids"]) + len(c)] == ex["prompt_ids"] + c
    assert ex["rejected_ids"].count(tok.eos_token_id) == 1


def test_plain_records_get_exactly_one_eos(tok):
    tk = make(tok)
    ex = tk.pair(PairRecord("Question: what is 7 * 6?\nAnswer:", " 42", " 43<|im_end|>", origin="p:line 1"))
    assert tok.decode(ex["prompt_ids"]) == "Question: what is 7 * 6?\nAnswer:"
    assert tok.bos_token_id not in ex["prompt_ids"]  # SmolLM2's tokenizer adds no BOS to plain text
    for key, text in (("chosen_ids", " 42<|im_end|>"), ("rejected_ids", " 43<|im_end|>")):
        c = ex[key]
        assert tok.decode(c) == text
        assert c[-1] == tok.eos_token_id and c.count(tok.eos_token_id) == 1  # not two for " 43<|im_end|>"


def test_plain_prompt_already_starting_with_bos_text_has_one_bos(tok):
    prompt = "<|im_start|>user\nWhat is 7 * 6?<|im_end|>\n<|im_start|>assistant\n"
    ex = make(tok).pair(PairRecord(prompt, "42", "43", origin="p:line 1"))
    p = ex["prompt_ids"]
    assert p[0] == tok.bos_token_id and p[1] != tok.bos_token_id
    assert tok.decode(p) == prompt
    assert tok.decode(ex["chosen_ids"]) == "42<|im_end|>"


class _BosAddingTokenizer:
    """The real tokenizer, but adding BOS to text like Llama-style tokenizers do."""

    def __init__(self, tok) -> None:
        self._tok = tok
        self.bos_token_id, self.eos_token_id = tok.bos_token_id, tok.eos_token_id
        self.chat_template = tok.chat_template

    def __call__(self, text: str, add_special_tokens: bool = True):
        ids = list(self._tok(text, add_special_tokens=False)["input_ids"])
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def test_bos_adding_tokenizer_does_not_double_bos(tok):
    tk = make(_BosAddingTokenizer(tok))
    plain = tk.pair(PairRecord("Q: hi\nA:", " hello", " bye", origin="p:line 1"))
    assert plain["prompt_ids"][0] == tok.bos_token_id and plain["prompt_ids"][1] != tok.bos_token_id
    already = tk.pair(PairRecord("<|im_start|>user\nhi", " hello", " bye", origin="p:line 2"))
    assert already["prompt_ids"].count(tok.bos_token_id) == 1 and already["prompt_ids"][0] == tok.bos_token_id


def test_no_sequence_starts_with_two_bos(tok):
    tk = make(tok)
    records = [PairRecord(p, [A("yes")], [A("no")], origin=f"c:{n}") for n, p in PROMPTS.items()]
    records += [
        PairRecord("plain prompt", " yes", " no", origin="p:1"),
        PairRecord("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "yes", "no", origin="p:2"),
    ]
    for rec in records:
        ex = tk.pair(rec)
        for key in ("chosen_ids", "rejected_ids"):
            ids = ex["prompt_ids"] + ex[key]
            assert ids[:2] != [tok.bos_token_id, tok.bos_token_id], rec.origin


def test_truncation_drops_old_turns_then_cuts_completion_right(tok):
    question = U("What is 7 times 6?")
    long_prompt = [U("Tell me about the moon. " * 10), A("The moon orbits the earth. " * 10), question]
    chosen = [A("Seven times six is forty-two, which you can check by adding seven six times.")]
    rejected = [A("43")]
    full = make(tok).pair(PairRecord(long_prompt, chosen, rejected, origin="t:line 1"))
    c0, r0 = full["chosen_ids"], full["rejected_ids"]
    assert len(full["prompt_ids"]) > 100 and len(c0) > 12 and len(r0) < 8

    tk = make(tok, max_length=50, max_prompt_length=40)
    ex = tk.pair(PairRecord(long_prompt, chosen, rejected, origin="t:line 1"))
    p, c, r = ex["prompt_ids"], ex["chosen_ids"], ex["rejected_ids"]
    # the old exchange is gone as a whole; what is left is exactly the template's rendering of the question
    assert p == list(
        tok.apply_chat_template([question], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    assert len(p) == 38
    # chosen: right-truncated to fit max_length, so it ends mid-answer with no EOS
    assert len(p) + len(c) == 50 and c == c0[:12]
    assert tok.eos_token_id not in c
    # rejected fits: untouched, still ends with EOS
    assert r == r0 and r[-1] == tok.eos_token_id
    counts = tk.stats.counts
    assert counts == {"records": 1, "prompt_turns_dropped": 1, "completion_truncated": 1}
    assert tk.stats.summary() == (
        "1 records: 1 chat prompts lost older turns, 0 chat prompts had a turn's text cut, "
        "0 plain prompts cut, 1 completions truncated; 0 dropped"
    )


def test_plain_prompt_without_bos_truncated_from_left(tok):
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    p0 = list(tok(prompt, add_special_tokens=False)["input_ids"])
    tk = make(tok, max_length=12, max_prompt_length=5)
    ex = tk.pair(PairRecord(prompt, " thirteen", " fourteen", origin="p:1"))
    assert ex["prompt_ids"] == p0[-5:]
    assert tok.decode(ex["prompt_ids"]).strip().endswith("twelve")
    assert tk.stats.counts == {"records": 1, "prompt_tokens_cut": 1}


def test_plain_prompt_starting_with_bos_text_is_not_glued_to_its_tail(tok):
    """SmolLM2 adds no BOS to text, so a cut plain prompt does not keep the leading <|im_start|>."""
    prompt = "<|im_start|>user\n" + "one two three four five six seven eight nine ten"
    tk = make(tok, max_length=12, max_prompt_length=5)
    assert tk.plain_bos is False
    ex = tk.pair(PairRecord(prompt, " eleven", " twelve", origin="p:1"))
    assert (
        tok.bos_token_id not in ex["prompt_ids"]
        and tok.decode(ex["prompt_ids"]) == " six seven eight nine ten"
    )


def test_bos_adding_tokenizer_keeps_bos_when_cutting_plain_prompts(tok):
    tk = make(_BosAddingTokenizer(tok), max_length=12, max_prompt_length=5)
    assert tk.plain_bos is True
    ex = tk.pair(PairRecord("one two three four five six seven eight", " nine", " ten", origin="p:1"))
    p = ex["prompt_ids"]
    assert len(p) == 5 and p[0] == tok.bos_token_id and tok.decode(p[1:]) == " five six seven eight"


def test_empty_completion_is_dropped_and_counted(tok):
    # Recipes reject max_prompt_length >= max_length, so a completion can only end up empty when the
    # prompt alone fills max_length; force that to exercise the drop (zero-token completions are NaN).
    tk = make(tok, max_length=512, max_prompt_length=256)
    tk.config = TokenizeConfig(max_length=8, max_prompt_length=8)
    prompt = "A question long enough to fill eight tokens by itself."
    assert tk.pair(PairRecord(prompt, " yes", " no", "d:1")) is None
    assert tk.unpaired(UnpairedRecord(prompt, " yes", True, "d:2")) is None
    assert tk.stats.counts["dropped_empty_completion"] == 2
    assert "; 2 dropped (2 completion empty after truncation)" in tk.stats.summary()
    # a short prompt still leaves room
    tk.config = TokenizeConfig(max_length=40, max_prompt_length=8)
    ex = tk.pair(PairRecord("hi", " yes", " no", "d:3"))
    assert ex is not None and ex["chosen_ids"][-1] == tok.eos_token_id
    assert tk.stats.counts["dropped_empty_completion"] == 2


def test_pair_identical_after_truncation_is_dropped_and_counted(tok):
    tk = make(tok, max_length=50, max_prompt_length=40)
    prompt = [U("What is 7 times 6?")]  # 38 tokens: 12 left for the completions
    same_start = "The answer is forty-two, and here is a long explanation of why that is"
    rec = PairRecord(prompt, [A(same_start + " so.")], [A(same_start + " not so.")], "d:1")
    assert tk.pair(rec) is None
    assert tk.stats.counts == {
        "records": 1,
        "completion_truncated": 2,
        "dropped_identical_after_truncation": 1,
    }
    assert "1 dropped (1 chosen == rejected after truncation)" in tk.stats.summary()
    # with room for the difference the pair is kept
    assert make(tok, max_length=80, max_prompt_length=40).pair(rec) is not None


def test_unpaired_shares_the_invariants(tok):
    tk = make(tok)
    ex = tk.unpaired(UnpairedRecord([U("What is 7 times 6?")], [A("42")], False, "u:1"))
    full = chat_ids(tok, [U("What is 7 times 6?"), A("42")])
    assert (
        full[: len(ex["prompt_ids"]) + len(ex["completion_ids"])] == ex["prompt_ids"] + ex["completion_ids"]
    )
    assert tok.decode(ex["completion_ids"]) == "42<|im_end|>" and ex["label"] is False


def test_chatml_option_without_tokenizer_template(no_template_tok):
    tok = no_template_tok
    assert tok.chat_template is None
    tk = make(tok, template="chatml")
    ex = tk.pair(PairRecord([S("Be brief."), U("Hi")], [A("Hello!"), A("Bye.")], [A("Go away.")], "c:line 4"))
    assert tok.decode(ex["prompt_ids"]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.decode(ex["chosen_ids"]) == "Hello!<|im_end|>\n<|im_start|>assistant\nBye.<|im_end|>"
    assert tok.decode(ex["rejected_ids"]) == "Go away.<|im_end|>"
    # the built-in ChatML template has no default system prompt
    no_sys = tk.pair(PairRecord([U("Hi")], [A("Hello!")], [A("Go away.")], "c:line 5"))
    assert tok.decode(no_sys["prompt_ids"]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert no_sys["prompt_ids"][:2] == [tok.bos_token_id, tok.encode("user", add_special_tokens=False)[0]]


def test_conversational_record_without_any_template_names_the_record(no_template_tok):
    tk = make(no_template_tok)  # chat_template "auto" and the tokenizer has none
    rec = PairRecord([U("Hi")], [A("Hello!")], [A("Go away.")], origin="prefs.jsonl:line 7")
    with pytest.raises(DataError) as err:
        tk.pair(rec)
    msg = str(err.value)
    assert (
        msg.startswith("prefs.jsonl: line 7: field 'prompt': no chat template")
        and "chat_template: chatml" in msg
    )
    assert "\n" not in msg
    # plain records need no template
    ex = tk.pair(PairRecord("Q: hi\nA:", " hello", " bye", origin="prefs.jsonl:line 8"))
    assert no_template_tok.decode(ex["chosen_ids"]) == " hello<|im_end|>"
