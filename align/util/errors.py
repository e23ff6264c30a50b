"""User-facing errors: each names what the user must fix, never a bare KeyError."""

from __future__ import annotations


class AlignError(Exception):
    """Base class for errors the CLI prints as one clear message (no traceback)."""

    exit_code = 2


class RecipeError(AlignError):
    """The recipe (YAML or an override) is invalid."""


class DataError(AlignError):
    """A data record or source is invalid.

    Carries the source, the record position (1-based line number for jsonl, 0-based index
    otherwise) and the offending field so the message can point at the exact place.
    """

    def __init__(self, source: str, where: str | None, field: str | None, reason: str) -> None:
        self.source, self.where, self.field, self.reason = source, where, field, reason
        parts = [source]
        if where is not None:
            parts.append(where)
        if field is not None:
            parts.append(f"field '{field}'")
        super().__init__(f"{': '.join(parts)}: {reason}")


class ModelError(AlignError):
    """A model or tokenizer could not be resolved or loaded."""


class PushError(AlignError):
    """A push to a model hub did not complete (or could not start); the message says what reached the
    hub and what did not."""


class TrainingError(AlignError):
    """Training cannot go on (e.g. the loss or gradients stayed non-finite)."""


class Interrupted(AlignError):
    """Stopped by SIGINT/SIGTERM after writing a checkpoint; the message holds the resume command."""

    exit_code = 75  # align.engine.interrupt.EXIT_INTERRUPTED
