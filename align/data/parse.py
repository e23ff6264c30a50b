"""Parse raw rows (plain, conversational, implicit-prompt, prompt-only) into validated typed records.

Every source format is normalised here so the rest of the toolkit sees one shape, and every
rejection is a `DataError` that names the source, the row position and the offending column:
a user fixing a 100k-line file needs the exact place, not a KeyError from deep in a collator.
This module reads the rows (columns, labels, answers, pairs); the checks of the messages and
transcripts inside them are conversation.py's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from align.data.conversation import (
    _Bad,
    _completion,
    _prompt,
    _split_implicit,
    _starts_with_prompt_turn,
    _strip_prefix,
    _text,
)
from align.data.records import (
    PairRecord,
    PromptRecord,
    RecordError,
    Text,
    UnpairedRecord,
    printable,
)

__all__ = ["RecordError", "parse_pair", "parse_prompt", "parse_unpaired"]  # RecordError lives in records.py


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
