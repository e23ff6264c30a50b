"""Hypothesis strategies for test_fuzz_corpora.py: data files of every kind whose bad records are known.

Each generated `Corpus` says how many records its reader must count, which positions (1-based
line / record / row) hold a bad record, and whether the file as a whole is unreadable. Good rows
are built so that no truncation can make chosen and rejected identical or empty (they differ in
their first token), so every difference from the oracle is a bug, not a tokenization drop.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

INVALID = "\ue000"  # placeholder written as an invalid UTF-8 byte (never drawn as text)
WORDS = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r" + INVALID), max_size=12)
LINE_WORDS = st.text(  # no newlines: HH transcripts must not grow extra turns
    st.characters(exclude_categories=("Cs",), exclude_characters="\r\n" + INVALID), max_size=12
)
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | WORDS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(WORDS, inner, max_size=3),
    max_leaves=8,
)


@dataclass
class Corpus:
    path: Path
    rows: int = 0  # records the reader counts
    bad: set[int] = field(default_factory=set)  # their positions
    file_error: bool = False  # the file as a whole cannot be read

    @property
    def good(self) -> int:
        return self.rows - len(self.bad)


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


@st.composite
def texts(draw: st.DrawFn, mark: str, words: st.SearchStrategy[str] = WORDS) -> str:
    """Non-blank text starting with `mark` (chosen ✓, rejected ✗), so the two differ in token one."""
    return f"{mark} {draw(words)} {mark}" + ("z" * draw(st.sampled_from([0, 0, 0, 0, 0, 0, 0, 0, 0, 3000])))


@st.composite
def good_rows(draw: st.DrawFn, styles: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """(style, row): plain strings, TRL conversational (optionally repeating the prompt), implicit
    message lists, ultrafeedback (prompt string + whole conversations), or HH transcripts."""
    style = draw(st.sampled_from(styles))
    if style == "hh":
        turns = draw(st.lists(st.tuples(texts("q", LINE_WORDS), texts("a", LINE_WORDS)), max_size=2))
        head = "".join(f"\n\nHuman: {q}\n\nAssistant: {a}" for q, a in turns)
        head += f"\n\nHuman: {draw(texts('q', LINE_WORDS))}\n\nAssistant:"
        chosen, rejected = draw(texts("✓", LINE_WORDS)), draw(texts("✗", LINE_WORDS))
        return style, {"chosen": f"{head} {chosen}", "rejected": f"{head} {rejected}"}
    if style == "plain":
        return style, {"prompt": draw(texts("q")), "chosen": draw(texts("✓")), "rejected": draw(texts("✗"))}
    system = [msg("system", draw(WORDS))] if draw(st.booleans()) else []
    history = [
        m
        for _ in range(draw(st.integers(0, 2)))
        for m in (msg("user", draw(WORDS)), msg("assistant", draw(WORDS)))
    ]
    prompt = [*system, *history, msg("user", draw(texts("q")))]
    chosen, rejected = [msg("assistant", draw(texts("✓")))], [msg("assistant", draw(texts("✗")))]
    if style == "implicit":
        return style, {"chosen": prompt + chosen, "rejected": prompt + rejected}
    if style == "ultrafeedback":
        return style, {
            "prompt": prompt[-1]["content"],
            "chosen": prompt[-1:] + chosen,
            "rejected": prompt[-1:] + rejected,
        }
    if draw(st.booleans()):  # TRL: completions may repeat the prompt
        chosen, rejected = prompt + chosen, prompt + rejected
    elif draw(st.booleans()):
        chosen, rejected = chosen[0]["content"], rejected[0]["content"]
    return style, {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _text_fields(row: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(container, key) of every text the parser reads: top-level strings and message contents."""
    out: list[tuple[Any, Any]] = []
    for key in ("prompt", "chosen", "rejected"):
        value = row.get(key)
        if isinstance(value, str):
            out.append((row, key))
        elif isinstance(value, list):
            out += [(m, "content") for m in value]
    return out


@st.composite
def mutated(draw: st.DrawFn, style: str, row: dict[str, Any], typed: bool) -> tuple[dict[str, Any], bool]:
    """(row, is_bad). `typed`: the format keeps JSON types (jsonl/json), so type junk is possible."""
    key = draw(st.sampled_from(["chosen", "rejected"]))
    harmless = ["extra field"]
    bad = ["drop", "null", "blank", "same"]
    if typed:
        bad += ["wrong type", "surrogate", "nested"]
    if style == "conversational":
        bad += ["bad role", "content type", "order"]
    if style in ("plain", "conversational") and not isinstance(row.get("chosen"), list):
        bad.append("no prompt")
    kind = draw(st.sampled_from(["none"] * 6 + harmless + bad))
    row = json.loads(json.dumps(row))  # a deep copy
    if kind == "extra field":
        row[draw(st.sampled_from(["category", "meta", "id", ""]))] = draw(JUNK)
        if isinstance(row.get("prompt"), list):
            row["prompt"][0]["name"] = draw(JUNK)
    elif kind == "drop":
        del row[key]
    elif kind == "null":
        row[key] = None
    elif kind == "blank":
        row[key] = draw(st.sampled_from(["", "  ", "\n"]))
    elif kind == "same":
        row["rejected"] = row["chosen"]
    elif kind == "wrong type":
        row[key] = draw(st.sampled_from([0, 1.5, True, {"content": "x"}]))
    elif kind == "surrogate":
        container, name = draw(st.sampled_from(_text_fields(row)))
        container[name] = container[name] + "\ud800"
    elif kind == "nested":
        row[key] = [[[[["deep"]]]]]
    elif kind == "bad role":
        row["prompt"][0]["role"] = draw(st.sampled_from(["robot", 1, None, "User"]))
    elif kind == "content type":
        row["prompt"][-1]["content"] = draw(st.sampled_from([5, ["x"], {"text": "x"}]))
    elif kind == "order":
        row["prompt"].append(msg("assistant", "extra"))
    elif kind == "no prompt":
        del row["prompt"]
    return row, kind in bad


@st.composite
def records(draw: st.DrawFn, styles: tuple[str, ...], typed: bool) -> list[tuple[dict[str, Any], bool]]:
    out = []
    for _ in range(draw(st.integers(0, 7))):
        style, row = draw(good_rows(styles))
        out.append(draw(mutated(style, row, typed)))
    return out


# -- files -------------------------------------------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


@st.composite
def jsonl_corpora(draw: st.DrawFn, path: Path) -> Corpus:
    corpus = Corpus(path)
    rows = draw(records(("plain", "conversational", "implicit", "ultrafeedback", "hh"), typed=True))
    if rows and draw(st.integers(0, 19)) == 0:  # a pretty-printed JSON array or object saved as .jsonl
        value = [r for r, _ in rows] if draw(st.booleans()) else rows[0][0]
        path.write_text(json.dumps(value, indent=2))
        corpus.file_error = True
        return corpus
    crlf, ascii_only = draw(st.booleans()), draw(st.booleans())
    lines: list[bytes] = []
    for row, is_bad in rows:
        if draw(st.integers(0, 4)) == 0:
            lines.append(b"   " if crlf else b"")  # blank lines are not records, but they count
        line = json.dumps(row, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        junk = draw(st.sampled_from(["none"] * 8 + ["broken", "utf-8", "not an object", "deep"]))
        if junk == "broken":
            line = line[: draw(st.integers(2, len(line) - 1))]
        elif junk == "utf-8":
            cut = draw(st.integers(0, len(line)))
            line = line[:cut] + b"\xff" + line[cut:]
        elif junk == "not an object":
            line = draw(st.sampled_from([b"[1, 2]", b'"text"', b"3", b"null", b"[]"]))
        elif junk == "deep" and draw(st.integers(0, 9)) == 0:
            line = DEEP.encode()
        else:
            junk = "none"
        lines.append(line)
        corpus.rows += 1
        if is_bad or junk != "none":
            corpus.bad.add(len(lines))
    data = (b"\r\n" if crlf else b"\n").join(lines) + (b"\n" if lines and draw(st.booleans()) else b"")
    path.write_bytes((b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + data)
    return corpus


@st.composite
def json_corpora(draw: st.DrawFn, path: Path) -> Corpus:
    corpus = Corpus(path)
    rows = draw(records(("plain", "conversational", "implicit", "ultrafeedback", "hh"), typed=True))
    values: list[Any] = []
    for row, is_bad in rows:
        junk = draw(st.sampled_from([None] * 9 + ["text", 3, [row], None]))
        values.append(row if junk is None else junk)
        corpus.bad.update([len(values)] if is_bad or junk is not None else [])
    corpus.rows = len(values)
    document: Any = {"data": values} if draw(st.booleans()) else values
    text = json.dumps(document, indent=draw(st.sampled_from([None, 2])))
    whole = draw(st.sampled_from(["ok"] * 12 + ["truncated", "object", "scalar", "lines"]))
    whole = "ok" if whole == "lines" and len(values) < 2 else whole
    if whole == "truncated":
        text = text[: len(text) // 2]
    elif whole == "object":
        text = json.dumps({"rows": values})
    elif whole == "scalar":
        text = "42"
    elif whole == "lines" and values:
        text = "\n".join(json.dumps(v) for v in values)
    corpus.file_error = whole != "ok"
    path.write_bytes((b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + text.encode())
    return corpus


@st.composite
def csv_corpora(draw: st.DrawFn, path: Path) -> Corpus:
    corpus = Corpus(path)
    style = draw(st.sampled_from(["plain", "hh"]))
    rows = draw(records((style,), typed=False))
    header = ["prompt", "chosen", "rejected"] if style == "plain" else ["chosen", "rejected"]
    extra = draw(st.sampled_from([[], ["id"], ["category", "score"]]))
    no_prompt = style == "plain" and draw(st.integers(0, 9)) == 0  # every row lacks its prompt
    columns = [c for c in header if not (no_prompt and c == "prompt")] + extra
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    line = 2
    for row, is_bad in rows:
        if draw(st.integers(0, 5)) == 0:
            out.write("\n")
            line += 1
        cells = [str(row.get(c) if row.get(c) is not None else "") for c in columns]
        cells = [c.replace("\r", "") for c in cells]
        junk = draw(st.sampled_from(["none"] * 8 + ["short", "long", "utf-8", "number"]))
        if junk == "short":
            cells = cells[:-1]
        elif junk == "long":
            cells.append("surplus")
        elif junk == "utf-8":
            cells[draw(st.integers(0, len(cells) - 1))] += INVALID
        else:
            if junk == "number" and columns[0] == "prompt" and not is_bad:  # text: "007" stays "007"
                cells[0] = draw(st.sampled_from(["42", "1e3", "-0.5", "007", "True"]))
            junk = "none"
        start = out.tell()
        writer.writerow(cells)
        corpus.rows += 1
        if is_bad or no_prompt or junk != "none":
            corpus.bad.add(line)
        line += out.getvalue()[start:].count("\n")
    data = out.getvalue().encode("utf-8").replace(INVALID.encode(), b"\xff")
    path.write_bytes((b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + data)
    return corpus


def _parquet_row(style: str, row: dict[str, Any], number: int) -> dict[str, Any]:
    """A parquet column has one type: string completions become messages in a conversational file,
    roles and contents that are not text become "robot" / null (still bad), junk columns go, and a
    missing value is null (a missing prompt is a null prompt: the implicit-prompt path, as in JSON)."""
    out: dict[str, Any] = {"id": number}
    for key in ("prompt", "chosen", "rejected"):  # every key in every row: from_pylist reads row 1's
        value = row.get(key)
        if style == "conversational" and isinstance(value, str):
            value = [msg("assistant", value)]
        if isinstance(value, list):
            value = [
                {
                    "role": m["role"] if m.get("role") is None or isinstance(m["role"], str) else "robot",
                    "content": m["content"] if isinstance(m.get("content"), str) else None,
                }
                for m in value
            ]
        out[key] = value
    return out


@st.composite
def parquet_corpora(draw: st.DrawFn, path: Path) -> Corpus:
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = Corpus(path)
    style = draw(st.sampled_from(["plain", "hh", "conversational"]))
    rows = []
    for row, is_bad in draw(records((style,), typed=False)):
        rows.append(_parquet_row(style, row, len(rows)))
        corpus.bad.update([len(rows)] if is_bad else [])
    corpus.rows = len(rows)
    if draw(st.integers(0, 24)) == 0:
        path.write_bytes(b"PAR1 this is not parquet PAR1")
        corpus.file_error = True
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return corpus
