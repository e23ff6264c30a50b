"""Parse raw rows (plain, conversational, implicit-prompt, prompt-only) into validated typed records.

Every source format is normalised here so the rest of the toolkit sees one shape, and every
rejection is a `DataError` that names the source, the row position and the offending column:
a user fixing a 100k-line file needs the exact place, not a KeyError from deep in a collator.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from align.data.records import (
    Message,
    PairRecord,
    PromptRecord,
    RecordError,
    Text,
    UnpairedRecord,
    printable,
)

ROLES = ("system", "user", "assistant")
HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}


__all__ = ["RecordError", "parse_pair", "parse_prompt", "parse_unpaired"]  # RecordError lives in records.py


class _Bad(Exception):
    """Raised by the helpers below, which do not know the source/position; parse_* adds them."""

    def __init__(self, field: str | None, category: str, detail: str = "") -> None:
        super().__init__(category)
        self.field, self.category, self.detail = field, category, detail


def parse_pair(
    row: Mapping[str, Any], *, source: str, where: str, columns: Mapping[str, str] | None = None
) -> PairRecord:
    """Normalise one preference row; `columns` maps prompt/chosen/rejected to the row's column names."""
    col = _column_lookup(columns)
    try:
        _check_row(row)
        cl, rl = col("chosen"), col("rejected")
        _check_distinct(_required(row, cl), _required(row, rl), cl)
        prompt, (chosen, rejected) = _normalise(row, col("prompt"), [cl, rl])
        _check_distinct(chosen, rejected, cl)
    except _Bad as bad:
        raise RecordError(source, where, bad.field, bad.category, bad.detail) from None
    return PairRecord(prompt, chosen, rejected, origin=f"{source}:{where}")


def parse_unpaired(
    row: Mapping[str, Any],
    *,
    source: str,
    where: str,
    columns: Mapping[str, str] | None = None,
    label_threshold: float | None = None,
) -> UnpairedRecord:
    """Normalise one unpaired (KTO) row: prompt, completion and a label (see `_label`)."""
    col = _column_lookup(columns)
    try:
        _check_row(row)
        label = _label(_present(row, col("label")), col("label"), label_threshold)
        prompt, (completion,) = _normalise(row, col("prompt"), [col("completion")])
    except _Bad as bad:
        raise RecordError(source, where, bad.field, bad.category, bad.detail) from None
    return UnpairedRecord(prompt, completion, label, origin=f"{source}:{where}")


def parse_prompt(
    row: Mapping[str, Any], *, source: str, where: str, columns: Mapping[str, str] | None = None
) -> PromptRecord:
    """Normalise one prompt-only row (for PPO): a prompt string, or messages ending with a user turn.

    A conversation kept under another column name (e.g. `messages`) is read with
    `columns: {prompt: messages}`; an `answer` column (mapped the same way) is kept when present,
    other columns are ignored."""
    col = _column_lookup(columns)
    column = col("prompt")
    try:
        _check_row(row)
        if column not in row:
            raise _Bad(
                column,
                "missing field",
                f"row has columns {_names(row)}; name the prompt column in data.columns (rows whose "
                "prompt is implicit in chosen/rejected or completion need data.format pairwise/unpaired)",
            )
        prompt = _prompt(_present(row, column), column)
        answer = _answer(row.get(col("answer")), col("answer"))
    except _Bad as bad:
        raise RecordError(source, where, bad.field, bad.category, bad.detail) from None
    return PromptRecord(prompt, origin=f"{source}:{where}", answer=answer)


def _answer(value: Any, column: str) -> str | None:
    """A checkable answer as text: a string, or a JSON number (CSV and JSON give either); absent or
    null means none. A list or a bool is refused: it would compare as its repr, never matching."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _Bad(column, "bad answer", f"{value!r} is not a finite number")
        return str(value)
    if not isinstance(value, str):
        raise _Bad(
            column, "wrong type", f"expected a string or a number as the answer, got {type(value).__name__}"
        )
    if not _text(value, column).strip():
        raise _Bad(column, "empty answer")
    return value.strip()


def _column_lookup(columns: Mapping[str, str] | None):
    mapping = dict(columns or {})
    return lambda name: mapping.get(name, name)


def _check_row(row: Any) -> None:
    if not isinstance(row, Mapping):
        raise _Bad(None, "not an object", f"expected a JSON object per record, got {type(row).__name__}")


def _present(row: Mapping[str, Any], column: str) -> Any:
    if column not in row:
        raise _Bad(column, "missing field", f"row has columns {_names(row)}")
    if row[column] is None:
        raise _Bad(column, "null field", "the value is null")
    return row[column]


def _names(row: Mapping[str, Any], limit: int = 8) -> str:
    names = [repr(str(k)) for k in list(row)[: limit + 1]]
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "") if names else "(none)"


def _required(row: Mapping[str, Any], column: str) -> Text:
    value = _present(row, column)
    if isinstance(value, str):
        return _text(value, column)
    if not isinstance(value, list):
        raise _Bad(
            column, "wrong type", f"expected a string or a list of messages, got {type(value).__name__}"
        )
    return value


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


def _check_distinct(chosen: Text, rejected: Text, label: str) -> None:
    same = (
        chosen.strip() == rejected.strip()
        if isinstance(chosen, str) and isinstance(rejected, str)
        else chosen == rejected
    )
    if same:
        raise _Bad(
            label,
            "chosen == rejected",
            "the two completions are identical, so the pair carries no preference",
        )


_TEXT_LABELS = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "up": True,
    "down": False,
    "thumbs_up": True,
    "thumbs_down": False,
    "👍": True,
    "👎": False,
}


def _label(value: Any, column: str, threshold: float | None = None) -> bool:
    """Desirable or not: a bool, 0/1, `up`/`down` (thumbs), their text (CSV reads text), or a
    numeric rating when a threshold is set (rating >= threshold is desirable). Without a threshold
    a rating other than 0/1 is an error: guessing the scale would silently flip labels."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TEXT_LABELS:
        return _TEXT_LABELS[text]
    rating = _rating(value)
    if rating is not None and threshold is not None:
        return rating >= threshold
    if rating in (0.0, 1.0):
        return bool(rating)
    if rating is not None:
        raise _Bad(
            column,
            "rating without threshold",
            f"{printable(repr(value), 60)} is a rating; set data.label_threshold (or the card's "
            "label_threshold) to say which ratings are desirable",
        )
    raise _Bad(
        column,
        "bad label",
        f"expected true/false, 0/1, up/down or a numeric rating, got {printable(repr(value), 60)}",
    )


def _rating(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _normalise(row: Mapping[str, Any], prompt_col: str, cols: list[str]) -> tuple[Text, list[Text]]:
    """One path for pairs (two completions) and unpaired rows (one), so the formats cannot drift."""
    values = [_required(row, c) for c in cols]
    prompt = row.get(prompt_col)
    if prompt is None:
        return _split_implicit(
            values, cols, prompt_col, "null field" if prompt_col in row else "missing field"
        )
    prompt = _prompt(prompt, prompt_col)
    if isinstance(prompt, str):
        if all(isinstance(v, list) and _starts_with_prompt_turn(v) for v in values):
            # e.g. ultrafeedback_binarized: a prompt string plus full conversations in the completions
            messages, completions = _split_implicit(values, cols, prompt_col, "")
            if messages[-1]["content"] != prompt.strip():
                raise _Bad(
                    prompt_col, "prompt mismatch", "does not match the last user turn of the conversations"
                )
            return messages, completions
        return prompt, [_completion(v, c, conversational=False) for v, c in zip(values, cols, strict=True)]
    completions = [_strip_prefix(v, prompt) for v in values]
    return prompt, [_completion(v, c, conversational=True) for v, c in zip(completions, cols, strict=True)]


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
