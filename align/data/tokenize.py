"""Records -> token ids, with the invariants alignment code usually breaks.

- Conversational records use the tokenizer's chat template (or a built-in ChatML one when asked);
  plain records are tokenized as text (prompt with the tokenizer's special tokens, completion
  without) for base models.
- The prompt is a true prefix of prompt+completion: we tokenize the conversation with and without
  the completion and require the former to start with the latter (else the record is a bad
  record), instead of silently cutting at the point of divergence.
- Exactly one EOS ends each completion; anything a template renders after it (ChatML's "\\n")
  is not part of the completion: generation stops at EOS, so training should too.
- One BOS at most: a template that renders BOS as text is not given a second one.

Truncation keeps the template well formed (a token-level cut of a rendered chat would keep a
turn's tail without its `<|im_start|>role` header, and SmolLM2's BOS *is* `<|im_start|>`):

- Chat prompts longer than `max_prompt_length` lose whole exchanges (a user turn and the answer
  to it), oldest first, so the kept part still starts with a user turn; the system message stays.
  When dropping the next exchange would leave room to spare, the oldest kept user turn is cut
  instead: its content loses tokens from the left (the oldest text) and the message is rendered
  again, header and all, until the prompt fits.
- The last user turn is always kept. When even the system message plus the last user turn does
  not fit, the last user turn's content is cut from the left, with the system message if that
  keeps at least as much of the question as without it (templates like SmolLM2's inject a longer
  default system prompt when there is none), else without it.
- A prompt that cannot fit with at least one character of the last user turn (the template's fixed
  parts alone exceed `max_prompt_length`) drops the record, counted as `dropped_prompt_too_long`.
- Plain-text prompts are cut from the left; a leading BOS is kept only when the tokenizer really
  prepends one to text (SmolLM2's does not).
- Prompt-only records (for PPO, which samples its responses) take this same prompt path, chat
  prompts ending with the generation prompt, and have no completion to cut.
- Then the completions are cut from the right to fit `max_length`. A record whose completion
  becomes empty (log-ratio losses would be NaN) or whose chosen and rejected become identical (no
  preference left) is dropped and counted. Every kind of cut and drop has its own counter.

SFT records (`sft()`) give `input_ids` and a `loss_mask`: a prompt + completion takes the paths
above (loss on the completion); a conversation is rendered whole, the mask covering every
assistant turn through its EOS; plain text is all loss tokens after the first, plus one EOS.
Conversations and text have no prompt limit: they are cut from the right to `max_length`, and a
record left without a loss token is dropped (`dropped_empty_completion`).

Anything the tokenizer or template raises on one record's text becomes that record's
`RecordError`, so `on_bad_record` decides, never a traceback.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from align.data.records import (
    Message,
    PairRecord,
    PromptRecord,
    RecordError,
    SFTRecord,
    Text,
    UnpairedRecord,
)

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Bump when the same records, tokenizer and config would get different ids (part of the cache key).
TOKENIZE_VERSION = 2

TRUNCATIONS = {
    "prompt_turns_dropped": "chat prompts lost older turns",
    "prompt_turn_cut": "chat prompts had a turn's text cut",
    "prompt_tokens_cut": "plain prompts cut",
    "completion_truncated": "completions truncated",
}
DROPS = {
    "dropped_empty_completion": "completion empty after truncation",
    "dropped_identical_after_truncation": "chosen == rejected after truncation",
    "dropped_prompt_too_long": "template alone exceeds max_prompt_length",
}


@dataclass(frozen=True)
class TokenizeConfig:
    max_length: int = 512
    max_prompt_length: int = 256
    chat_template: str = "auto"  # "auto" (tokenizer's own), "chatml", or a Jinja template string


def summarize(counts: Mapping[str, int]) -> str:
    """One line for the log and `align data inspect`: every truncation and drop counter, by kind."""
    cuts = ", ".join(f"{counts.get(k, 0)} {label}" for k, label in TRUNCATIONS.items())
    dropped = sum(counts.get(k, 0) for k in DROPS)
    why = ", ".join(f"{counts[k]} {label}" for k, label in DROPS.items() if counts.get(k))
    return f"{counts.get('records', 0)} records: {cuts}; {dropped} dropped" + (f" ({why})" if why else "")


@dataclass
class TokenizeStats:
    counts: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        return summarize(self.counts)


def record_error(origin: str, field: str | None, category: str, detail: str = "") -> RecordError:
    """A RecordError for a record known by its origin ('data.jsonl:line 12')."""
    source, sep, where = origin.rpartition(":")
    if not sep:
        source, where = origin, None
    return RecordError(source, where, field, category, detail)


class Tokenizer:
    """Applies one TokenizeConfig with one tokenizer; `pair()` / `unpaired()` / `prompt()` / `sft()`
    return id lists."""

    def __init__(self, tokenizer, config: TokenizeConfig) -> None:
        self.tok = tokenizer
        self.config = config
        self.eos = tokenizer.eos_token_id
        self.bos = tokenizer.bos_token_id
        if config.max_prompt_length >= config.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        template = config.chat_template
        self.template = None if template == "auto" else CHATML if template == "chatml" else template
        # the template text actually used, for the cache key
        self.template_text: str | None = self.template or getattr(tokenizer, "chat_template", None)
        self.plain_bos = self._prepends_bos()
        self.stats = TokenizeStats()

    def _prepends_bos(self) -> bool:
        """Whether the tokenizer puts BOS before plain text (what it does, not what its config claims)."""
        if self.bos is None:
            return False
        try:
            return list(self.tok("x", add_special_tokens=True)["input_ids"])[:1] == [self.bos]
        except Exception:  # a tokenizer that cannot encode "x" adds nothing we could keep
            return False

    # -- calls into the tokenizer: whatever they raise on one record's text is that record's error --
    def _call(self, origin: str, field_name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # tokenizers and Jinja templates raise many types on odd input
            jinja = type(err).__module__.startswith("jinja2")
            category = "template error" if jinja else "untokenizable"
            raise record_error(origin, field_name, category, f"{type(err).__name__}: {err}") from None

    def _chat_ids(
        self, messages: list[Message], generation_prompt: bool, origin: str, field_name: str
    ) -> list[int]:
        if self.template is None and not getattr(self.tok, "chat_template", None):
            raise record_error(
                origin,
                "prompt",
                "no chat template",
                "conversational record but the tokenizer has no chat template; set "
                "`data.chat_template: chatml` (or a Jinja template) in the recipe, or use plain-text records",
            )
        out = self._call(
            origin,
            field_name,
            self.tok.apply_chat_template,
            messages,
            chat_template=self.template,
            add_generation_prompt=generation_prompt,
            tokenize=True,
            return_dict=True,
        )
        return list(out["input_ids"])

    def _encode(self, text: str, special: bool, origin: str, field_name: str) -> list[int]:
        return list(self._call(origin, field_name, self.tok, text, add_special_tokens=special)["input_ids"])

    def _plain_ids(self, text: str, origin: str, field_name: str) -> list[int]:
        """Text with the tokenizer's special tokens, and one BOS at most."""
        ids = self._encode(text, True, origin, field_name)
        if self.bos is not None and len(ids) > 1 and ids[0] == ids[1] == self.bos:
            ids = ids[1:]  # the text already started with BOS
        return ids

    # -- prompts -----------------------------------------------------------------------------
    def _prompt(self, prompt: Text, origin: str, events: Counter) -> tuple[Text, list[int]] | None:
        """(the prompt as it will be used, its ids) within max_prompt_length, or None to drop."""
        m = self.config.max_prompt_length
        if isinstance(prompt, list):
            return self._chat_prompt(prompt, origin, events)
        ids = self._plain_ids(prompt, origin, "prompt")
        if len(ids) > m:
            events["prompt_tokens_cut"] += 1
            keep_bos = self.plain_bos and ids[0] == self.bos
            ids = [ids[0], *ids[len(ids) - (m - 1) :]] if keep_bos else ids[len(ids) - m :]
        return prompt, ids

    def _chat_prompt(
        self, messages: list[Message], origin: str, events: Counter
    ) -> tuple[list[Message], list[int]] | None:
        ids = self._chat_ids(messages, True, origin, "prompt")
        m = self.config.max_prompt_length
        if len(ids) <= m:
            return messages, ids
        system = messages[:1] if messages[0]["role"] == "system" else []
        rest = messages[len(system) :]
        turns = len(rest)
        while len(rest) > 1:  # rest is user, assistant, ..., user: drop (user, assistant) exchanges
            shorter = system + rest[2:]
            shorter_ids = self._chat_ids(shorter, True, origin, "prompt")
            if len(shorter_ids) <= m:  # room to spare: cut the oldest kept user turn instead, if it can be
                cut = self._cut_first(system, rest, ids, origin)
                fitted, fitted_ids = cut[:2] if cut else (shorter, shorter_ids)
                events["prompt_turn_cut"] += int(cut is not None)
                events["prompt_turns_dropped"] += int(len(fitted) < len(messages))
                return fitted, fitted_ids
            rest, ids = rest[2:], shorter_ids
        # only the last user turn is left and, with the system message, it does not fit
        bases = [system, []] if system else [[]]  # ids is the rendering of bases[0] + rest
        options = []
        for base in bases:
            cut = self._cut_first(base, rest, ids if base is bases[0] else None, origin)
            if cut is not None:  # (tokens of the question kept, system kept, the cut)
                options.append((cut[2], bool(base), cut))
        if not options:
            events["dropped_prompt_too_long"] += 1
            return None
        _, with_system, (fitted, fitted_ids, _) = max(options, key=lambda o: (o[0], o[1]))
        events["prompt_turn_cut"] += int(fitted[-1] is not rest[0])
        events["prompt_turns_dropped"] += int(turns > 1 or (bool(system) and not with_system))
        return fitted, fitted_ids

    def _cut_first(
        self, base: list[Message], rest: list[Message], ids: list[int] | None, origin: str
    ) -> tuple[list[Message], list[int], int] | None:
        """base + rest with rest[0]'s content cut from the left until it fits: (messages, ids, tokens kept).

        `ids` is the rendering of base + rest when the caller has it. A message that is not cut is
        returned as the same object (the caller tells a cut by identity); None when not even one
        character of rest[0] fits.
        """
        m = self.config.max_prompt_length
        first = rest[0]
        content = self._encode(first["content"], False, origin, "prompt")
        fitted, n = base + rest, len(content)
        if ids is None:
            ids = self._chat_ids(fitted, True, origin, "prompt")
        while len(ids) > m:
            n -= len(ids) - m  # re-rendering a shorter text need not save exactly that many tokens
            if n < 1:
                return None
            text = self._call(
                origin, "prompt", self.tok.decode, content[-n:], clean_up_tokenization_spaces=False
            ).lstrip("\ufffd")  # a cut inside a multi-byte character
            if not text:
                return None
            fitted = [*base, {**first, "content": text}, *rest[1:]]
            ids = self._chat_ids(fitted, True, origin, "prompt")
        return fitted, ids, n

    # -- completions ---------------------------------------------------------------------------
    def _completion(
        self, prompt: Text, p: list[int], completion: Text, origin: str, field_name: str
    ) -> list[int]:
        if isinstance(prompt, list):
            assert isinstance(completion, list)
            full = self._chat_ids(prompt + completion, False, origin, field_name)
            if full[: len(p)] != p:
                raise record_error(
                    origin,
                    field_name,
                    "prompt not a prefix",
                    "the chat template renders the prompt differently with and without the completion; "
                    "use a template whose generation prompt matches the start of an assistant turn",
                )
            c = full[len(p) :]
            if self.eos in c:  # cut what the template adds after the final EOS (e.g. "\n")
                return c[: len(c) - c[::-1].index(self.eos)]
            return c + [self.eos]
        assert isinstance(completion, str)
        c = self._encode(completion, False, origin, field_name)
        return c if c and c[-1] == self.eos else c + [self.eos]

    def _fit(self, p: list[int], c: list[int], events: Counter) -> list[int]:
        room = self.config.max_length - len(p)
        if len(c) > room:
            events["completion_truncated"] += 1
            c = c[: max(room, 0)]
        return c

    def _finish(self, events: Counter, example: dict | None, drop: str | None = None) -> dict | None:
        """Count this record's events only once it is done (a record that raises counts nothing)."""
        if drop:
            events[drop] += 1
        self.stats.counts.update(+events)  # + leaves out the zero counts
        return None if drop else example

    # -- public ----------------------------------------------------------------------------
    def pair(self, rec: PairRecord) -> dict | None:
        """{prompt_ids, chosen_ids, rejected_ids} or None when the record must be dropped."""
        events = Counter(records=1)
        fitted = self._prompt(rec.prompt, rec.origin, events)
        if fitted is None:
            return self._finish(events, None)
        prompt, p = fitted
        c = self._fit(p, self._completion(prompt, p, rec.chosen, rec.origin, "chosen"), events)
        r = self._fit(p, self._completion(prompt, p, rec.rejected, rec.origin, "rejected"), events)
        if not c or not r:
            return self._finish(events, None, "dropped_empty_completion")
        if c == r:
            return self._finish(events, None, "dropped_identical_after_truncation")
        return self._finish(events, {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r})

    def unpaired(self, rec: UnpairedRecord) -> dict | None:
        """{prompt_ids, completion_ids, label} or None when the record must be dropped."""
        events = Counter(records=1)
        fitted = self._prompt(rec.prompt, rec.origin, events)
        if fitted is None:
            return self._finish(events, None)
        prompt, p = fitted
        c = self._fit(p, self._completion(prompt, p, rec.completion, rec.origin, "completion"), events)
        if not c:
            return self._finish(events, None, "dropped_empty_completion")
        return self._finish(events, {"prompt_ids": p, "completion_ids": c, "label": rec.label})

    def sft(self, rec: SFTRecord) -> dict | None:
        """{input_ids, loss_mask} (1 = a token the loss is on; never the first) or None to drop.

        Prompt + completion: the prompt path above, loss on the completion. A conversation: loss on
        every assistant turn (`_conversation`). Plain text: loss on every token after the first,
        with one EOS appended. Then everything is cut from the right to `max_length`."""
        events = Counter(records=1)
        if rec.prompt is not None:
            fitted = self._prompt(rec.prompt, rec.origin, events)
            if fitted is None:
                return self._finish(events, None)
            prompt, p = fitted
            c = self._fit(p, self._completion(prompt, p, rec.completion, rec.origin, "completion"), events)
            ids, mask = p + c, [0] * len(p) + [1] * len(c)
        elif isinstance(rec.completion, list):
            ids, mask = self._conversation(rec.completion, rec.origin)
        else:
            ids = self._plain_ids(rec.completion, rec.origin, "text")
            ids = ids if ids and ids[-1] == self.eos else ids + [self.eos]
            mask = [0] + [1] * (len(ids) - 1)
        if len(ids) > self.config.max_length:
            events["completion_truncated"] += 1
            ids, mask = ids[: self.config.max_length], mask[: self.config.max_length]
        if not any(mask):
            return self._finish(events, None, "dropped_empty_completion")
        return self._finish(events, {"input_ids": ids, "loss_mask": mask})

    def _conversation(self, messages: list[Message], origin: str) -> tuple[list[int], list[int]]:
        """The rendered conversation, and a mask over each assistant turn's tokens through its EOS
        (what the template renders after EOS, ChatML's "\\n", is not trained on; nor is the
        `<|im_start|>assistant` header). Each turn is found by rendering the conversation before it
        with the generation prompt (`_completion`'s prefix check); a template that renders earlier
        turns differently once later ones follow is refused for that record."""
        full = self._chat_ids(messages, False, origin, "messages")
        mask = [0] * len(full)
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            p = self._chat_ids(messages[:i], True, origin, "messages")
            c = self._completion(messages[:i], p, [message], origin, "messages")
            if full[: len(p) + len(c)] != p + c:
                raise record_error(
                    origin,
                    f"messages[{i}]",
                    "turn not a prefix",
                    "the chat template renders this turn differently once later turns follow (or ends "
                    "it without EOS); use a template that renders every turn the same way",
                )
            mask[len(p) : len(p) + len(c)] = [1] * len(c)
        return full, mask

    def prompt(self, rec: PromptRecord) -> dict | None:
        """{prompt_ids} (with the generation prompt, as sampling needs) or None when it must be dropped."""
        events = Counter(records=1)
        fitted = self._prompt(rec.prompt, rec.origin, events)
        return self._finish(events, None if fitted is None else {"prompt_ids": fitted[1]})
