"""`align data inspect`: what the tokenized data looks like before a run spends time on it.

It never stops at a bad record: it lists every reason with its count and first places, and still
shows the counts, lengths and examples of the good records.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from align.data.prepare import prepare
from align.data.sources import FILE_SUFFIXES
from align.data.tokenize import summarize
from align.recipe import read_recipe


def _percentiles(values: list[int]) -> str:
    if not values:
        return "-"
    t = torch.tensor(values, dtype=torch.float)
    qs = torch.quantile(t, torch.tensor([0.5, 0.9, 0.99]))
    return f"p50 {qs[0]:.0f}  p90 {qs[1]:.0f}  p99 {qs[2]:.0f}  max {int(t.max())}"


def _skipped(load_stats: dict) -> str:
    reasons = load_stats.get("skipped") or {}
    if not reasons:
        return "0"
    detail = ", ".join(
        f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    return f"{sum(reasons.values())} ({detail})"


def render(tokenizer, ex: dict) -> str:
    """The prompt shown inside ⟦masked: …⟧ (no loss), each completion after it; a prompt-only
    record's prompt inside ⟦prompt: …⟧ (the policy samples its response after it); an SFT
    sequence as its runs, untrained ones inside ⟦masked: …⟧, trained ones inside ⟦loss: …⟧."""
    if "loss_mask" in ex:
        return _render_sft(tokenizer, ex["input_ids"], ex["loss_mask"])
    prompt = tokenizer.decode(ex["prompt_ids"])
    keys = _completion_keys(ex)
    out = [f"⟦masked: {prompt}⟧" if keys else f"⟦prompt: {prompt}⟧"]
    for key in keys:
        name = key.split("_")[0] if "label" not in ex else ("desirable" if ex["label"] else "undesirable")
        out.append(f"  {name:8s} (loss on {len(ex[key])} tokens): {tokenizer.decode(ex[key])!r}")
    return "\n".join(out)


def _render_sft(tokenizer, ids: list[int], mask: list[int]) -> str:
    runs, start = [], 0
    for t in range(1, len(ids) + 1):
        if t == len(ids) or mask[t] != mask[start]:
            runs.append(f"⟦{'loss' if mask[start] else 'masked'}: {tokenizer.decode(ids[start:t])}⟧")
            start = t
    return "".join(runs) + f"\n  (loss on {sum(mask)} of {len(ids)} tokens)"


def _completion_keys(ex: dict) -> tuple[str, ...]:
    """Pairs have two completions; unpaired (KTO) records one, with a label; prompt-only records none."""
    return tuple(k for k in ("completion_ids", "chosen_ids", "rejected_ids") if k in ex)


def _source_key(source: str) -> str:
    """`data.card` for a card name or .md path; `data.path` for an existing path, anything shaped like
    a data file or path (so a missing file reports "file not found", not "unknown data card") or a
    Hub-style `org/name`."""
    if source.endswith(".md"):
        return "data.card"
    p = Path(source).expanduser()
    if p.exists() or "/" in source or source.startswith((".", "~")) or p.suffix.lower() in FILE_SUFFIXES:
        return "data.path"
    return "data.card"


def _bad_records(load_stats: dict, on_bad_record: str) -> list[str]:
    """Every reason with its count and first places: all the bad records at once, not the first."""
    counts = load_stats.get("skipped") or {}
    if not counts:
        return []
    verdict = (
        "a training run stops on these (data.on_bad_record=skip skips and counts them)"
        if on_bad_record == "error"
        else "skipped (data.on_bad_record: skip)"
    )
    lines = [f"bad records: {sum(counts.values())}, {verdict}:"]
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        shown = load_stats["examples"].get(reason, [])
        lines.append(f"  {n} {reason}:")
        lines += [f"    {message}" for _, message in shown]
        if n > len(shown):
            lines.append(f"    … and {n - len(shown)} more")
    return lines


def inspect(source: str, recipe_path: str | None, overrides: list[str], load_tokenizer: Callable) -> str:
    """Counts, lengths, truncation and two rendered examples of a source; `load_tokenizer(model_spec)`
    comes from the caller (align/models/ sits above the data layer)."""
    key = _source_key(source)
    other = "data.path" if key == "data.card" else "data.card"
    # the data as it is, whatever method the recipe names (data.format=prompts under the default dpo)
    recipe = read_recipe(recipe_path, [*overrides, f"{key}={source}", f"{other}="])
    d = recipe.data
    tok = load_tokenizer(recipe.model)
    data = prepare(d, tok, strict=False)
    examples = data.train + data.eval
    lines = [
        f"source: {data.source}",
        f"records: read {data.load_stats['read']}, kept {data.load_stats['kept']}, skipped {_skipped(data.load_stats)}",
        *_bad_records(data.load_stats, d.on_bad_record),
        f"examples: train {len(data.train)}, held-out {len(data.eval)}  (tokenizer of {recipe.model.name})",
        f"tokenization: max_length {d.max_length}, max_prompt_length {d.max_prompt_length}: "
        + summarize(data.token_stats),
        "token lengths:",
    ]
    keys = _completion_keys(examples[0]) if examples else ()
    columns = [("prompt", lambda e: len(e["prompt_ids"]))]
    if examples and "loss_mask" in examples[0]:  # SFT: whole sequences and their loss tokens
        columns = [
            ("sequence", lambda e: len(e["input_ids"])),
            ("loss tokens", lambda e: sum(e["loss_mask"])),
        ]
    columns += [(k.split("_")[0], lambda e, k=k: len(e[k])) for k in keys]
    if keys:
        columns.append(("prompt+longer", lambda e: len(e["prompt_ids"]) + max(len(e[k]) for k in keys)))
    for name, fn in columns:
        lines.append(f"  {name:14s} {_percentiles([fn(e) for e in examples])}")
    if examples and "label" in examples[0]:
        up = sum(1 for e in data.train if e["label"])
        lines.append(f"labels (train): {up} desirable, {len(data.train) - up} undesirable")
    for ex in examples[:2]:
        lines += ["", f"example {ex.get('origin', '')}:", render(tok, ex)]
    return "\n".join(lines)
