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
from align.data.records import BadRecordsError, LoadStats, PairRecord, RecordError
from align.data.sources import load_pairs
from align.data.tokenize import TOKENIZE_VERSION, TokenizeConfig, Tokenizer, summarize
from align.embedded import cache_dir
from align.errors import DataError

log = logging.getLogger("align.data")


@dataclass
class PreparedData:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    fingerprint: str
    source: str
    load_stats: dict[str, Any] = field(default_factory=dict)
    token_stats: dict[str, int] = field(default_factory=dict)


def _records(data) -> tuple[list[PairRecord], list[PairRecord], str, str, LoadStats]:
    """Train and held-out records (named split or seeded fraction), the source shown to the user,
    the data source named in errors, and the load stats. Bad records are collected, not raised."""
    stats = LoadStats()
    if data.card is not None:
        card = load_card(data.card)
        source, data_source = str(card.path), card.source
        if card.format != data.format:
            raise DataError(
                source, None, "format", f"the card holds {card.format} data, the recipe wants {data.format}"
            )
        train, _ = load_card_records(card, role="train", split=data.split, on_bad_record="skip", stats=stats)
        fraction = data.heldout_fraction if data.heldout_fraction is not None else card.heldout_fraction
        if data.eval_split or "eval" in card.splits:
            held, _ = load_card_records(
                card, role="eval", split=data.eval_split, on_bad_record="skip", stats=stats
            )
            return train, held, source, data_source, stats
    else:
        source = data_source = data.path
        cols = data.columns or None
        train, _ = load_pairs(data.path, columns=cols, split=data.split, on_bad_record="skip", stats=stats)
        if data.eval_split:
            held, _ = load_pairs(
                data.path, columns=cols, split=data.eval_split, on_bad_record="skip", stats=stats
            )
            return train, held, source, data_source, stats
        fraction = data.heldout_fraction if data.heldout_fraction is not None else 0.1
    train, held = split_records(train, heldout_fraction=fraction or 0.0, seed=0)
    return train, held, source, data_source, stats


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


def _record_json(r: PairRecord) -> str:
    return json.dumps([r.prompt, r.chosen, r.rejected], sort_keys=True)


def fingerprint(
    train: list[PairRecord],
    held: list[PairRecord],
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


def prepare(data, tokenizer, accelerator=None, *, strict: bool = True) -> PreparedData:
    """Load, split, tokenize (cached) and index examples for the recipe's `data:` section.

    `strict=False` (for `align data inspect`) returns what is good and leaves reporting the bad
    records (in `load_stats`) to the caller instead of raising for them.
    """
    cfg = TokenizeConfig(data.max_length, data.max_prompt_length, data.chat_template)
    is_main = accelerator is None or accelerator.is_main_process
    train_r, eval_r, source, data_source, stats = _records(data)
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
    return PreparedData(cached["train"], cached["eval"], fp, source, stats.as_dict(), cached["stats"])


def _tokenize(tk: Tokenizer, records: list[PairRecord], bad: list[list[Any]]) -> list[dict[str, Any]]:
    """Tokenize every record; one that cannot be tokenized goes to `bad` (RecordError arguments)."""
    out = []
    for r in records:
        try:
            ex = tk.pair(r)
        except RecordError as e:
            bad.append([e.source, e.where, e.field, e.category, e.detail])
            continue
        if ex is not None:
            ex["origin"] = r.origin
            out.append(ex)
    return out
