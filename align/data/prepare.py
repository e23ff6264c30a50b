"""Recipe `data:` section -> tokenized train / held-out examples, tokenized once and cached.

The main process tokenizes and writes the result under ALIGN_CACHE keyed by a fingerprint of
the records, the tokenizer and the tokenization settings; other ranks wait and read it, so a
multi-process launch does not tokenize on every rank and a rerun does not tokenize at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from align.data.cards import load_card, load_card_records, split_records
from align.data.records import LoadStats, PairRecord
from align.data.sources import load_pairs
from align.data.tokenize import TokenizeConfig, Tokenizer
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


def _records(data) -> tuple[list[PairRecord], list[PairRecord], str, LoadStats]:
    """Read train and held-out records from a card or a path (named split or seeded fraction)."""
    stats = LoadStats()
    if data.card is not None:
        card = load_card(data.card)
        source = str(card.path)
        train, _ = load_card_records(card, role="train", on_bad_record=data.on_bad_record, stats=stats)
        fraction = data.heldout_fraction if data.heldout_fraction is not None else card.heldout_fraction
        if data.eval_split or "eval" in card.splits:
            held, _ = load_card_records(card, role="eval", on_bad_record=data.on_bad_record, stats=stats)
            return train, held, source, stats
    else:
        source = data.path
        cols = data.columns or None
        train, _ = load_pairs(
            data.path, columns=cols, split=data.split, on_bad_record=data.on_bad_record, stats=stats
        )
        if data.eval_split:
            held, _ = load_pairs(
                data.path, columns=cols, split=data.eval_split, on_bad_record=data.on_bad_record, stats=stats
            )
            return train, held, source, stats
        fraction = data.heldout_fraction if data.heldout_fraction is not None else 0.1
    train, held = split_records(train, heldout_fraction=fraction or 0.0, seed=0)
    return train, held, source, stats


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


def prepare(data, tokenizer, accelerator=None) -> PreparedData:
    """Load, split, tokenize (cached) and index examples for the recipe's `data:` section."""
    cfg = TokenizeConfig(data.max_length, data.max_prompt_length, data.chat_template)
    is_main = accelerator is None or accelerator.is_main_process
    train_r, eval_r, source, load_stats = _records(data)
    if data.max_train_examples is not None:
        train_r = train_r[: data.max_train_examples]
    if data.max_eval_examples is not None:
        eval_r = eval_r[: data.max_eval_examples]
    h = hashlib.sha256()
    for part in ("train", train_r, "eval", eval_r):
        if isinstance(part, str):
            h.update(part.encode())
        else:
            for r in part:
                h.update(_record_json(r).encode())
    h.update(json.dumps(asdict(cfg)).encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    fp = h.hexdigest()[:16]
    path = cache_dir() / "tokenized" / f"{fp}.json"
    if not path.exists() and is_main:
        tk = Tokenizer(tokenizer, cfg)
        skip = data.on_bad_record == "skip"
        out = {
            "train": _tokenize(tk, train_r, skip),
            "eval": _tokenize(tk, eval_r, skip),
            "stats": dict(tk.stats.counts),
        }
        log.info("tokenized %s", tk.stats.summary())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(out))
        os.replace(tmp, path)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    cached = json.loads(path.read_text())
    for split in ("train", "eval"):
        for i, ex in enumerate(cached[split]):
            ex["index"] = i
    if not cached["train"]:
        raise DataError(
            source, None, None, "no training examples left after loading, skipping and truncation"
        )
    return PreparedData(
        cached["train"],
        cached["eval"],
        fp,
        source,
        {"read": load_stats.read, "kept": load_stats.kept, "skipped": load_stats.skipped},
        cached["stats"],
    )


def _tokenize(tk: Tokenizer, records: list[PairRecord], skip: bool) -> list[dict[str, Any]]:
    """Tokenize; with `on_bad_record: skip` a record the template cannot render is counted, not fatal."""
    out = []
    for r in records:
        try:
            ex = tk.pair(r)
        except DataError as e:
            if not skip:
                raise
            tk.stats.counts["skipped_untokenizable"] += 1
            log.warning("skipping %s", e)
            continue
        if ex is not None:
            ex["origin"] = r.origin
            out.append(ex)
    return out
