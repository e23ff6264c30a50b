"""Typed records: the one shape per source format (pairwise, unpaired, prompts, sft) that rows become.

A record is either *plain* (prompt and completions are strings; no chat template) or
*conversational* (prompt is a list of chat messages ending with a user turn, completions are lists
of assistant messages). Implicit-prompt transcripts are converted into the conversational form by
the parser. A prompt-only record (for PPO, which samples its own responses) has no completion,
and optionally an answer a verifiable reward checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from align.util.errors import DataError

MAX_EXAMPLES = 5  # bad-record locations kept per reason, and shown in an error
Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}
Text = str | list[Message]


@dataclass(frozen=True)
class PairRecord:
    """One preference pair. `origin` is e.g. 'data.jsonl:12' for error messages and inspection."""

    prompt: Text
    chosen: Text
    rejected: Text
    origin: str = ""

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


@dataclass(frozen=True)
class UnpairedRecord:
    """One unpaired feedback example (KTO): a completion labelled desirable or not."""

    prompt: Text
    completion: Text
    label: bool
    origin: str = ""

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


@dataclass(frozen=True)
class PromptRecord:
    """One prompt for a method that samples its own responses (PPO). `answer` is the checkable
    answer (text; numbers as their decimal string) a verifiable reward compares replies with."""

    prompt: Text
    origin: str = ""
    answer: str | None = None

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


@dataclass(frozen=True)
class SFTRecord:
    """One supervised example. With a `prompt`, the loss is on `completion` only (text, or assistant
    messages after a chat prompt). Without one, `completion` is plain text (loss on every token) or
    a whole conversation (loss on every assistant turn)."""

    prompt: Text | None
    completion: Text
    origin: str = ""

    @property
    def conversational(self) -> bool:
        return isinstance(self.completion, list)


def printable(text: str, limit: int = 200) -> str:
    """`text` safe for one terminal line: control characters and lone surrogates escaped, long text cut.

    Error messages quote user data (column names, roles); a newline or an unencodable surrogate in
    them would break the one-line error, or crash the print that shows it.
    """
    if not text.isprintable():
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RecordError(DataError):
    """A bad record. `category` (e.g. 'empty completion') is what skip mode counts by."""

    def __init__(
        self, source: str, where: str | None, field: str | None, category: str, detail: str = ""
    ) -> None:
        field = None if field is None else printable(field, 80)
        reason = f"{category}: {printable(detail, 300)}" if detail else category
        super().__init__(source, where, field, reason)
        self.category, self.detail = category, detail

    @property
    def position(self) -> int:
        """The 1-based line/record/row number from `where` ('line 12' -> 12), 0 when unknown."""
        last = (self.where or "").rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0


@dataclass
class LoadStats:
    """Counts reported after loading: nothing is skipped silently, and the first places are kept."""

    read: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    # reason -> the first few bad records' messages, as [position, message] (JSON-friendly)
    examples: dict[str, list[list]] = field(default_factory=dict)

    def reject(self, err: RecordError) -> None:
        reason = err.category
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append([err.position, str(err)])

    @property
    def bad(self) -> int:
        return sum(self.skipped.values())

    def counts_text(self) -> str:
        """'2 empty completion, 1 missing field' (most frequent first), or 'none'."""
        items = sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{n} {reason}" for reason, n in items) or "none"

    def first_messages(self, n: int = MAX_EXAMPLES) -> list[str]:
        """The first `n` bad records' messages in file order (among those kept per reason)."""
        entries = sorted((e for kept in self.examples.values() for e in kept), key=lambda e: e[0])
        return [message for _, message in entries[:n]]

    def as_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "skipped": self.skipped, "examples": self.examples}


class BadRecordsError(DataError):
    """`on_bad_record: error` after a full scan: counts by reason, the first places, and the remedy."""

    def __init__(self, source: str, stats: LoadStats) -> None:
        n = stats.bad
        first = stats.first_messages()
        more = f"\n  … and {n - len(first)} more" if n > len(first) else ""
        reason = (
            f"{n} bad record{'s' if n != 1 else ''} of {stats.read} ({stats.counts_text()}); fix "
            f"{'them' if n != 1 else 'it'}, or set data.on_bad_record=skip to skip and count bad records"
            + (f"; the first {len(first)}:" if more else ":")
            + "".join(f"\n  {m}" for m in first)
            + more
        )
        super().__init__(source, None, None, reason)
        self.stats = stats


OnBadRecord = Literal["error", "skip"]
