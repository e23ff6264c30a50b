"""Chat messages and transcripts: the turn-level checks every row format shares.

A prompt, a completion or a whole conversation is checked here for its shape only (roles known and in
order, text a tokenizer can take, an implicit prompt split off the transcripts that share it); the
row parsers (parse.py for pairs, unpaired and prompt-only rows, parse_sft.py for SFT rows) find the
columns and turn a `_Bad` into a `RecordError` that names the source and the row.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from align.data.records import Message, Text, printable

ROLES = ("system", "user", "assistant")
HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


class _Bad(Exception):
    """A field is wrong. Raised by helpers that do not know the source or row position; the
    parse_* functions (parse.py, parse_sft.py) add them as a RecordError."""

    def __init__(self, field: str | None, category: str, detail: str = "") -> None:
        super().__init__(category)
        self.field, self.category, self.detail = field, category, detail


def _text(value: str, field: str) -> str:
    """Reject strings no tokenizer can take: lone surrogates (a JSON '\\ud800' escape) are not text."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise _Bad(
                field, "invalid text", f"lone surrogate {value[err.start]!r} at character {err.start}"
            ) from None
    return value


def _prompt(prompt: Any, prompt_col: str) -> Text:
    """A given (not implicit) prompt: non-empty text, or messages in turn order ending with a user turn.

    The one check for every format, prompt-only records included."""
    if isinstance(prompt, str):
        _text(prompt, prompt_col)
        if not prompt.strip():
            raise _Bad(prompt_col, "empty prompt")
        return prompt
    if isinstance(prompt, list):
        messages = _messages(prompt, prompt_col)
        _check_prompt_order(messages, prompt_col)
        return messages
    raise _Bad(
        prompt_col, "wrong type", f"expected a string or a list of messages, got {type(prompt).__name__}"
    )


def _split_implicit(
    values: list[Text], cols: list[str], prompt_col: str, no_prompt: str
) -> tuple[list[Message], list[Text]]:
    """No prompt: the prompt is the transcripts' shared prefix up to the last shared prompt turn.

    With one transcript (unpaired) that is everything before the final assistant answer. Strings
    that are not transcripts mean the prompt is what is wrong: `no_prompt` ('missing field' or
    'null field') says how it is absent.
    """
    if all(isinstance(v, str) for v in values):
        if not all(HH_ASSISTANT in v for v in values):
            raise _Bad(
                prompt_col,
                no_prompt,
                f"no prompt, and {'/'.join(cols)} are not implicit-prompt transcripts "
                "(those need '\\n\\nAssistant:' turns)",
            )
        shared = os.path.commonprefix(values)
        cut = shared.rfind(HH_ASSISTANT)  # the char prefix may run into the answers' shared first words
        if cut < 0:
            raise _Bad(cols[0], "no shared prompt", "the transcripts share no turns before an answer")
        prompt = _hh_messages(values[0][:cut], cols[0])
        tails = [
            _hh_messages(HH_ASSISTANT + v[cut + len(HH_ASSISTANT) :], c)
            for v, c in zip(values, cols, strict=True)
        ]
    elif all(isinstance(v, list) for v in values):
        conversations = [_messages(v, c) for v, c in zip(values, cols, strict=True)]
        n = _shared_len(conversations)
        while n > 0 and conversations[0][n - 1]["role"] != "user":
            n -= 1
        if n == 0:
            raise _Bad(cols[0], "no shared prompt", "the conversations share no prefix ending in a user turn")
        prompt, tails = conversations[0][:n], [conv[n:] for conv in conversations]
    else:
        raise _Bad(
            cols[-1],
            "mixed formats",
            "implicit-prompt completions must all be strings or all be message lists",
        )
    _check_prompt_order(prompt, cols[0])
    return prompt, [_completion(t, c, conversational=True) for t, c in zip(tails, cols, strict=True)]


def _hh_messages(text: str, column: str) -> list[Message]:
    """Convert an Anthropic-HH transcript ('\\n\\nHuman: ...\\n\\nAssistant: ...') into chat messages."""
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise _Bad(column, "bad transcript", "text before the first 'Human:' turn")
    return [
        {"role": _HH_ROLE[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _messages(value: list, column: str) -> list[Message]:
    out: list[Message] = []
    for i, message in enumerate(value):
        at = f"{column}[{i}]"
        if not isinstance(message, Mapping):
            raise _Bad(
                at, "wrong type", f"expected a {{'role', 'content'}} message, got {type(message).__name__}"
            )
        for key in ("role", "content"):
            if key not in message:
                raise _Bad(f"{at}.{key}", "missing field", "every message needs 'role' and 'content'")
            if message[key] is None:
                raise _Bad(f"{at}.{key}", "null field", "every message needs 'role' and 'content'")
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or role not in ROLES:
            raise _Bad(
                f"{at}.role",
                "unknown role",
                f"{printable(repr(role), 60)}; expected one of {', '.join(ROLES)}",
            )
        if not isinstance(content, str):
            raise _Bad(f"{at}.content", "wrong type", f"expected a string, got {type(content).__name__}")
        out.append({"role": role, "content": _text(content, f"{at}.content")})
    return out


def _check_prompt_order(messages: list[Message], column: str) -> None:
    """Optional system first, then user/assistant alternating, ending with user (the model answers next)."""
    if not messages:
        raise _Bad(column, "empty prompt")
    expected = "user"
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system" and i == 0:
            continue
        if role != expected:
            detail = (
                "system must be the first message"
                if role == "system"
                else f"expected role '{expected}', got '{role}'"
            )
            raise _Bad(f"{column}[{i}].role", "roles out of order", detail)
        expected = "assistant" if role == "user" else "user"
    if messages[-1]["role"] != "user":
        raise _Bad(column, "roles out of order", "the prompt must end with a user turn")


def _completion(value: Text, column: str, *, conversational: bool) -> Text:
    if not conversational:
        if isinstance(value, list):
            raise _Bad(column, "mixed formats", "the prompt is a plain string but this is a message list")
        if not value.strip():
            raise _Bad(column, "empty completion")
        return value
    messages = _messages(
        [{"role": "assistant", "content": value}] if isinstance(value, str) else value, column
    )
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            raise _Bad(
                f"{column}[{i}].role", "roles out of order", "a completion may only hold assistant turns"
            )
    if not "".join(m["content"] for m in messages).strip():
        raise _Bad(column, "empty completion")
    return messages


def _starts_with_prompt_turn(value: list) -> bool:
    return bool(value) and isinstance(value[0], Mapping) and value[0].get("role") in ("system", "user")


def _strip_prefix(value: Text, prompt: Sequence[Message]) -> Text:
    """TRL sometimes repeats the prompt inside each completion; drop it when it is there verbatim."""
    if not isinstance(value, list) or len(value) <= len(prompt):
        return value
    head = [
        (m.get("role"), m.get("content")) if isinstance(m, Mapping) else None for m in value[: len(prompt)]
    ]
    return value[len(prompt) :] if head == [(m["role"], m["content"]) for m in prompt] else value


def _shared_len(conversations: list[list[Message]]) -> int:
    """Length of the longest common message prefix (os.path.commonprefix would compare dicts with <)."""
    n = 0
    while all(len(c) > n for c in conversations) and all(c[n] == conversations[0][n] for c in conversations):
        n += 1
    return n
