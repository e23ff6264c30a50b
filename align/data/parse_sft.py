"""Parse supervised (SFT) rows: a conversation, a prompt with a completion, or plain text.

Which one a row is comes from the columns it has (after `data.columns` mapping), first match wins:

1. `messages`: a list of chat messages (optional system first, then user / assistant alternating,
   ending with an assistant turn); the loss is on every assistant turn.
2. `completion` (with `prompt`, a string or messages; or without one, an implicit-prompt transcript
   as for unpaired data): the loss is on the completion only.
3. `text`: a plain string; the loss is on every token.

Extra columns are ignored, as for the other formats. The checks are those of parse.py and
conversation.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from align.data.conversation import _Bad, _messages, _text
from align.data.parse import _check_row, _column_lookup, _names, _normalise, _present
from align.data.records import Message, RecordError, SFTRecord

SFT_FIELDS = ("messages", "prompt", "completion", "text")


def parse_sft(
    row: Mapping[str, Any], *, source: str, where: str, columns: Mapping[str, str] | None = None
) -> SFTRecord:
    """Normalise one SFT row; `columns` maps messages/prompt/completion/text to the row's names."""
    col = _column_lookup(columns)
    try:
        _check_row(row)
        if col("messages") in row:
            column = col("messages")
            value = _present(row, column)
            if not isinstance(value, list):
                raise _Bad(column, "wrong type", f"expected a list of messages, got {type(value).__name__}")
            record = SFTRecord(None, _conversation(_messages(value, column), column))
        elif col("completion") in row:
            prompt, (completion,) = _normalise(row, col("prompt"), [col("completion")])
            record = SFTRecord(prompt, completion)
        elif col("text") in row:
            column = col("text")
            text = _present(row, column)
            if not isinstance(text, str):
                raise _Bad(column, "wrong type", f"expected a string, got {type(text).__name__}")
            if not _text(text, column).strip():
                raise _Bad(column, "empty completion")
            record = SFTRecord(None, text)
        else:
            raise _Bad(
                None,
                "missing field",
                f"row has columns {_names(row)}; an SFT record needs {col('messages')!r}, "
                f"{col('prompt')!r} + {col('completion')!r}, or {col('text')!r} (map others with data.columns)",
            )
    except _Bad as bad:
        raise RecordError(source, where, bad.field, bad.category, bad.detail) from None
    return SFTRecord(record.prompt, record.completion, origin=f"{source}:{where}")


def _conversation(messages: list[Message], column: str) -> list[Message]:
    """Optional system first, then user / assistant alternating from a user turn, ending with an
    assistant turn (a trailing user turn would be computed and never trained on)."""
    expected = "user"
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system" and i == 0:
            continue
        if role != expected:
            detail = "system must be the first message" if role == "system" else f"expected role '{expected}'"
            raise _Bad(f"{column}[{i}].role", "roles out of order", f"{detail}, got '{role}'")
        expected = "assistant" if role == "user" else "user"
    if not messages or messages[-1]["role"] != "assistant":
        raise _Bad(column, "roles out of order", "a conversation for SFT must end with an assistant turn")
    if not "".join(m["content"] for m in messages if m["role"] == "assistant").strip():
        raise _Bad(column, "empty completion", "every assistant turn is empty")
    return messages
