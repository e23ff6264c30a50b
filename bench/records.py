"""The records every side of bench/dpo_vs_trl.py trains on: align_prefs_v1 through our data layer,
prompts optionally lengthened with a filler system message (for long-sequence timing)."""

from __future__ import annotations

import json
from pathlib import Path

from peers import BenchConfig

FILLER_TEXT = (
    "Background notes for the assistant: the quick brown fox jumps over the lazy dog while a calm river "
    "flows past green hills under a clear blue sky, and the village market opens early every morning."
)
FILLER = FILLER_TEXT.split(" ")


def build_records(cfg: BenchConfig, path: Path) -> int:
    """Load align_prefs_v1 through our data layer, lengthen prompts if asked, write JSONL; returns count."""
    from align.data.cards import load_card, load_card_records
    from align.models.load import load_tokenizer
    from align.recipe import ModelConfig

    records, _ = load_card_records(load_card("align_prefs_v1"), role="train")
    tok = load_tokenizer(ModelConfig(cfg.load_name))
    rows = []
    for rec in records:
        assert rec.conversational, "align_prefs_v1 is conversational"
        prompt = [dict(m) for m in rec.prompt]
        if cfg.min_prompt_tokens > 0:
            prompt = _lengthen(tok, prompt, cfg.min_prompt_tokens)
        rows.append({"prompt": prompt, "chosen": rec.chosen, "rejected": rec.rejected})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def _prompt_len(tok, prompt: list[dict[str, str]]) -> int:
    return len(
        tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )


def _lengthen(tok, prompt: list[dict[str, str]], target: int) -> list[dict[str, str]]:
    """Prepend (or extend) a system message with filler until the rendered prompt has >= target tokens."""
    if _prompt_len(tok, prompt) >= target:
        return prompt
    base = prompt[0]["content"] + "\n" if prompt[0]["role"] == "system" else ""
    rest = prompt[1:] if prompt[0]["role"] == "system" else prompt
    n_words = max(target - _prompt_len(tok, prompt), 0)
    while True:
        words = [FILLER[i % len(FILLER)] for i in range(n_words)]
        candidate = [{"role": "system", "content": base + " ".join(words)}, *rest]
        missing = target - _prompt_len(tok, candidate)
        if missing <= 0:
            return candidate
        n_words += missing


def build_prompts(model: str, n: int) -> list[tuple[dict, list[int]]]:
    """The first `n` records of align_prefs_v1 (train role, file order) for the PPO and rollout benches:
    each as a JSONL row (prompt messages, chosen, rejected: what our data layer reads, and PPO takes
    the prompts of) and as the prompt's token ids `model`'s chat template renders (generation prompt on)."""
    from align.data.cards import load_card, load_card_records
    from align.models.load import load_tokenizer
    from align.recipe import ModelConfig

    records, _ = load_card_records(load_card("align_prefs_v1"), role="train")
    if len(records) < n:
        raise ValueError(f"align_prefs_v1 has {len(records)} records; the bench needs {n} prompts")
    tok = load_tokenizer(ModelConfig(model))
    out = []
    for rec in records[:n]:
        row = {"prompt": [dict(m) for m in rec.prompt], "chosen": rec.chosen, "rejected": rec.rejected}
        ids = tok.apply_chat_template(
            row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        out.append((row, list(ids["input_ids"])))
    return out
