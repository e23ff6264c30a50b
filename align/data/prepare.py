"""Recipe `data:` section -> tokenized train / held-out examples, tokenized once and cached.

The main process tokenizes and writes the result under ALIGN_CACHE keyed by a fingerprint of
the records, the tokenizer, the chat template actually used and every setting that changes the
result; other ranks wait and read it, so a multi-process launch does not tokenize on every rank
and a rerun does not tokenize at all.

Bad records never stop the scan: the whole source is parsed and tokenized first, so that with
`on_bad_record: error` one `BadRecordsError` reports every bad record (counts by reason, the
first places) instead of the first one only; with `skip` they are counted and left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import align
from align.data.cards import load_card, load_card_records, split_records
from align.data.records import (
    BadRecordsError,
    LoadStats,
    PairRecord,
    PromptRecord,
    RecordError,
    SFTRecord,
    UnpairedRecord,
)
from align.data.sources import load_records
from align.data.tokenize import TOKENIZE_VERSION, TokenizeConfig, Tokenizer, summarize
from align.util.errors import DataError
from align.util.files import cache_dir

log = logging.getLogger("align.data")
Record = PairRecord | UnpairedRecord | PromptRecord | SFTRecord


@dataclass
class PreparedData:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    fingerprint: str
    source: str
    load_stats: dict[str, Any] = field(default_factory=dict)
    token_stats: dict[str, int] = field(default_factory=dict)
    unpaired_from_pairs: bool = False  # KTO on pairwise data: each pair became two records


NEEDS = {
    "pairwise": "pairs",
    "unpaired": "unpaired records (or pairs to unpair)",
    "prompts": "prompts (of pairs, unpaired or prompt-only records)",
}


def formats(data, card, want: str | None) -> tuple[str, bool]:
    """(format of the source, whether to unpair it) for a method that reads `want` records.

    `want` is "pairwise", "unpaired", "prompts" (PPO: the prompts of a source of any format), "sft"
    (SFT records, or the chosen replies of pairs, the desirable completions of unpaired records), or
    None (the source's own records, for `align data inspect`). `data.format: auto` takes the
    card's format, else what the method reads. Unpaired methods (KTO) unpair pairwise sources
    unless `data.unpair: false`; pairwise methods cannot use unpaired sources; a prompt-only source
    has nothing to learn a preference from, so it feeds prompt methods only."""
    where = str(card.path) if card is not None else data.path
    if card is not None:
        if data.format not in ("auto", card.format):
            raise DataError(
                where, None, "format", f"the card holds {card.format} data, the recipe says {data.format}"
            )
        source = card.format
    else:
        source = data.format if data.format != "auto" else (want or "pairwise")
    want = want or ("unpaired" if data.unpair else source)
    if source == "sft" and want != "sft":
        raise DataError(
            where,
            None,
            "format",
            f"this method needs {NEEDS[want]}; the source holds SFT records (conversations, prompt + "
            "completion, or text), which are for method 'sft'",
        )
    if source == "prompts" and want == "sft":
        raise DataError(
            where, None, "format", "method 'sft' needs completions; the source holds prompts only"
        )
    if source == "prompts" and want != "prompts":
        raise DataError(
            where,
            None,
            "format",
            f"this method needs {NEEDS[want]}; the source holds prompts only (prompt-only data is for "
            "methods that sample their own responses: ppo, rloo, grpo)",
        )
    if want == "pairwise" and (source == "unpaired" or data.unpair):
        raise DataError(where, None, "format", "this method needs pairs; the source holds unpaired records")
    unpairing = want == "unpaired" and source == "pairwise"
    if unpairing and data.unpair is False:
        raise DataError(
            where, None, "unpair", "pairwise records for an unpaired method need data.unpair: true"
        )
    if data.unpair and not unpairing:
        raise DataError(where, None, "unpair", "data.unpair applies to pairwise sources for unpaired methods")
    return source, unpairing


def _records(data, want: str | None) -> tuple[list[Record], list[Record], str, str, LoadStats, bool]:
    """Train and held-out records (named split or seeded fraction), the source shown to the user,
    the data source named in errors, the load stats, and whether pairs were unpaired. Bad records
    are collected, not raised. Pairs to unpair are split into held-out and train first (both
    halves of a pair stay on the same side); so are the pairs or unpaired records whose prompts
    alone a prompt method reads."""
    stats = LoadStats()
    card = load_card(data.card) if data.card is not None else None
    source_format, unpairing = formats(data, card, want)
    if card is not None:
        source, data_source = str(card.path), card.source
        load = lambda role, split: load_card_records(
            card,
            role=role,
            split=split,
            on_bad_record="skip",
            stats=stats,
            label_threshold=data.label_threshold,
        )[0]
        named_eval = bool(data.eval_split or "eval" in card.splits)
        fraction = data.heldout_fraction if data.heldout_fraction is not None else card.heldout_fraction
    else:
        source = data_source = data.path
        load = lambda role, split: load_records(
            source_format,
            data.path,
            columns=data.columns or None,
            split=split,
            on_bad_record="skip",
            stats=stats,
            label_threshold=data.label_threshold,
        )[0]
        named_eval = bool(data.eval_split)
        fraction = data.heldout_fraction if data.heldout_fraction is not None else 0.1
    train = load("train", data.split)
    if named_eval:
        held = load("eval", data.eval_split)
    else:
        train, held = split_records(train, heldout_fraction=fraction or 0.0, seed=0)
    if unpairing:
        n = len(train)
        train, held = unpair(train), unpair(held)
        log.info(
            "%s: %d training pairs unpaired into %d desirable + %d undesirable records", data_source, n, n, n
        )
    if want == "prompts" and source_format != "prompts":
        train, held = prompts_of(train), prompts_of(held)
        log.info("%s: the prompts of %d %s training records", data_source, len(train), source_format)
    if want == "sft" and source_format != "sft":
        n = len(train)
        train, held = sft_of(train), sft_of(held)
        what = "chosen replies of" if source_format == "pairwise" else "desirable completions of"
        log.info("%s: SFT on the %s %d training records (%d kept)", data_source, what, n, len(train))
    return train, held, source, data_source, stats, unpairing


def unpair(pairs: list[PairRecord]) -> list[UnpairedRecord]:
    """Each pair -> its chosen completion (desirable) and its rejected one (undesirable)."""
    out = []
    for p in pairs:
        out.append(UnpairedRecord(p.prompt, p.chosen, True, origin=f"{p.origin} (chosen)"))
        out.append(UnpairedRecord(p.prompt, p.rejected, False, origin=f"{p.origin} (rejected)"))
    return out


def prompts_of(records: list[PairRecord] | list[UnpairedRecord]) -> list[PromptRecord]:
    """Each record's prompt alone: a method that samples its own responses reads nothing else."""
    return [PromptRecord(r.prompt, origin=r.origin) for r in records]


def sft_of(records: list[PairRecord] | list[UnpairedRecord]) -> list[SFTRecord]:
    """SFT on what the data prefers: each pair's chosen reply, each desirable completion."""
    if records and isinstance(records[0], UnpairedRecord):
        return [SFTRecord(r.prompt, r.completion, origin=r.origin) for r in records if r.label]
    return [SFTRecord(r.prompt, r.chosen, origin=r.origin) for r in records]


def tokenizer_fingerprint(tok) -> str:
    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    h.update(
        backend.to_str().encode()
        if backend is not None
        else json.dumps(tok.get_vocab(), sort_keys=True).encode()
    )
    h.update(str(getattr(tok, "chat_template", None)).encode())
    h.update(json.dumps([tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]).encode())
    return h.hexdigest()[:16]


def _record_json(r: Record) -> str:
    """A list per pair/unpaired record, an object per prompt-only one: the formats never collide."""
    if isinstance(r, PromptRecord):
        answer = {} if r.answer is None else {"answer": r.answer}
        return json.dumps({"prompt": r.prompt, **answer}, sort_keys=True)
    if isinstance(r, UnpairedRecord):
        return json.dumps([r.prompt, r.completion, r.label], sort_keys=True)
    if isinstance(r, SFTRecord):
        return json.dumps({"sft": [r.prompt, r.completion]}, sort_keys=True)
    return json.dumps([r.prompt, r.chosen, r.rejected], sort_keys=True)


def fingerprint(
    train: list[Record],
    held: list[Record],
    config: TokenizeConfig,
    tokenizer,
    template_text: str | None,
    on_bad_record: str,
) -> str:
    """Cache key: everything the cached file depends on, including this code's version."""
    h = hashlib.sha256()
    for part in ("train", train, "eval", held):
        if isinstance(part, str):
            h.update(part.encode())
        else:
            for r in part:
                h.update(_record_json(r).encode())
    settings = {
        "align": align.__version__,
        "tokenize_version": TOKENIZE_VERSION,
        "config": asdict(config),
        "template": template_text,
        "on_bad_record": on_bad_record,
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    return h.hexdigest()[:16]


def prepare(
    data, tokenizer, accelerator=None, *, strict: bool = True, want: str | None = None
) -> PreparedData:
    """Load, split, tokenize (cached) and index examples for the recipe's `data:` section;
    `want` is the record kind the method reads ("pairwise" / "unpaired" / "prompts"; None: the
    source's own, see `formats`).

    `strict=False` (for `align data inspect`) returns what is good and leaves reporting the bad
    records (in `load_stats`) to the caller instead of raising for them.
    """
    cfg = TokenizeConfig(data.max_length, data.max_prompt_length, data.chat_template)
    is_main = accelerator is None or accelerator.is_main_process
    train_r, eval_r, source, data_source, stats, unpaired_pairs = _records(data, want)
    if data.max_train_examples is not None:
        train_r = train_r[: data.max_train_examples]
    if data.max_eval_examples is not None:
        eval_r = eval_r[: data.max_eval_examples]
    tk = Tokenizer(tokenizer, cfg)
    fp = fingerprint(train_r, eval_r, cfg, tokenizer, tk.template_text, data.on_bad_record)
    path = cache_dir() / "tokenized" / f"{fp}.json"
    if not path.exists() and is_main:
        bad: list[list[Any]] = []
        out = {"train": _tokenize(tk, train_r, bad), "eval": _tokenize(tk, eval_r, bad)}
        out.update(stats=dict(tk.stats.counts), bad=bad)
        log.info("tokenized %s", tk.stats.summary())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, path)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    cached = json.loads(path.read_text())
    for args in cached.get("bad", []):  # records the tokenizer rejected are bad records like any other
        stats.kept -= 1
        stats.reject(RecordError(*args))
    if cached.get("bad"):
        log.info(
            "%s: %d more bad records found by tokenizing; in all: %s",
            data_source,
            len(cached["bad"]),
            stats.counts_text(),
        )
    for split in ("train", "eval"):
        for i, ex in enumerate(cached[split]):
            ex["index"] = i
    if strict and data.on_bad_record == "error" and stats.bad:
        raise BadRecordsError(data_source, stats)
    if strict and not cached["train"]:
        raise DataError(
            data_source,
            None,
            None,
            f"no training examples left after loading, skipping and truncation (read {stats.read}, "
            f"skipped {stats.bad}: {stats.counts_text()}; tokenized {summarize(cached['stats'])})",
        )
    if strict and cached["train"] and "label" in cached["train"][0]:
        check_classes(cached["train"], data_source)
    return PreparedData(
        cached["train"], cached["eval"], fp, source, stats.as_dict(), cached["stats"], unpaired_pairs
    )


def label_counts(examples: list[dict[str, Any]]) -> tuple[int, int]:
    """(desirable, undesirable) among tokenized unpaired examples."""
    n_up = sum(1 for e in examples if e["label"])
    return n_up, len(examples) - n_up


def check_classes(examples: list[dict[str, Any]], source: str) -> None:
    """KTO needs desirable and undesirable examples: one class alone has no reference point."""
    n_up, n_down = label_counts(examples)
    if not (n_up and n_down):
        which = "desirable" if n_up else "undesirable"
        raise DataError(
            source,
            None,
            "label",
            f"all {len(examples)} training records are {which}; KTO needs both desirable and "
            "undesirable ones (check the label column, its mapping, or data.label_threshold)",
        )


def _tokenize(tk: Tokenizer, records: list[Record], bad: list[list[Any]]) -> list[dict[str, Any]]:
    """Tokenize every record; one that cannot be tokenized goes to `bad` (RecordError arguments)."""
    out = []
    for r in records:
        try:
            kind = {
                PairRecord: tk.pair,
                UnpairedRecord: tk.unpaired,
                PromptRecord: tk.prompt,
                SFTRecord: tk.sft,
            }
            ex = kind[type(r)](r)
        except RecordError as e:
            bad.append([e.source, e.where, e.field, e.category, e.detail])
            continue
        if ex is not None:
            ex["origin"] = r.origin
            if getattr(r, "answer", None) is not None:  # what a verifiable reward checks replies against
                ex["answer"] = r.answer
            out.append(ex)
    return out
