"""Keep credentials out of everything we write or print.

A secret is the value of `HF_TOKEN` or of any environment variable whose name ends in `_TOKEN`
or `_KEY` (8 characters or more, so `X_KEY=1` does not redact every "1"), or one registered by
`register_secret` (a token read from a file). `redact` replaces each
with `***`; the log filter, the JSON/YAML writers of the run directory, the tracker config and
the CLI's error and traceback printing all pass their text through it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

MASK = "***"
MIN_LEN = 8


_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask `value` too from now on: a secret that is not in the environment (the Hub token of a
    stored login, read from a file by huggingface_hub)."""
    if value and len(value) >= MIN_LEN:
        _registered.add(value)


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    names = [n for n in env if n == "HF_TOKEN" or n.endswith(("_TOKEN", "_KEY"))]
    values = {env[n] for n in names if len(env[n]) >= MIN_LEN}
    if environ is None:
        values |= _registered
    return sorted(values, key=len, reverse=True)  # longest first: a secret may contain another


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, MASK)
    return text


def redact_obj(obj: Any) -> Any:
    """Redact every string inside nested dicts/lists/tuples (recipe dumps, tracker config)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


class RedactingFilter(logging.Filter):
    """Formats the record once, redacts it, and stores the result as a plain message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            clean += "\n" + redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = clean, None
        return True


def install_log_filter() -> None:
    """Attach the filter to every root handler (filters on loggers do not see propagated records)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
