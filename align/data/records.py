"""Typed preference records: the one shape every source format is normalised into.

A pairwise record is either *plain* (prompt/chosen/rejected are strings; no chat template) or
*conversational* (prompt is a list of chat messages, chosen/rejected are lists of assistant
messages). Implicit-prompt transcripts are converted into the conversational form by the parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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


@dataclass
class LoadStats:
    """Counts reported in the log after loading: nothing is skipped silently."""

    read: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


OnBadRecord = Literal["error", "skip"]
