"""Records -> token ids, with the invariants alignment code usually breaks.

- Conversational records use the tokenizer's chat template (or a built-in ChatML one when asked);
  plain records are tokenized as text (prompt with the tokenizer's special tokens, completion
  without) for base models.
- The prompt is a true prefix of prompt+completion: we tokenize the conversation with and without
  the completion and require the former to start with the latter (else we say so, naming the
  record), instead of silently cutting at the point of divergence.
- Exactly one EOS ends each completion; anything a template renders after it (ChatML's "\n")
  is not part of the completion: generation stops at EOS, so training should too.
- One BOS at most: a template that renders BOS as text is not given a second one.
- Truncation: the prompt to `max_prompt_length` from the left (a leading BOS is kept), then the
  completion to fit `max_length` from the right. A record whose completion would be empty is
  dropped (a zero-token completion makes log-ratio losses NaN) and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from align.data.records import Message, PairRecord, Text, UnpairedRecord
from align.errors import DataError

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TokenizeConfig:
    max_length: int = 512
    max_prompt_length: int = 256
    chat_template: str = "auto"  # "auto" (tokenizer's own), "chatml", or a Jinja template string


@dataclass
class TokenizeStats:
    counts: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        c = self.counts
        return (
            f"{c['records']} records: {c['prompt_truncated']} prompts truncated, "
            f"{c['completion_truncated']} completions truncated, {c['dropped_empty_completion']} dropped "
            f"(completion empty after truncation), {c['skipped_untokenizable']} skipped (template could not render)"
        )


class Tokenizer:
    """Applies one TokenizeConfig with one tokenizer; `pair()` / `unpaired()` return id lists."""

    def __init__(self, tokenizer, config: TokenizeConfig) -> None:
        self.tok = tokenizer
        self.config = config
        self.eos = tokenizer.eos_token_id
        self.bos = tokenizer.bos_token_id
        if config.max_prompt_length >= config.max_length:
            raise ValueError("max_prompt_length must be smaller than max_length")
        template = config.chat_template
        self.template = None if template == "auto" else CHATML if template == "chatml" else template
        self.stats = TokenizeStats()

    # -- rendering -------------------------------------------------------------------------
    def _chat_ids(self, messages: list[Message], generation_prompt: bool, origin: str) -> list[int]:
        if self.template is None and not getattr(self.tok, "chat_template", None):
            raise DataError(
                origin,
                None,
                "prompt",
                "conversational record but the tokenizer has no chat template; set "
                "`data.chat_template: chatml` (or a Jinja template) in the recipe, or use plain-text records",
            )
        out = self.tok.apply_chat_template(
            messages,
            chat_template=self.template,
            add_generation_prompt=generation_prompt,
            tokenize=True,
            return_dict=True,
        )
        return list(out["input_ids"])

    def _plain_prompt(self, text: str) -> list[int]:
        ids = list(self.tok(text, add_special_tokens=True)["input_ids"])
        if self.bos is not None and len(ids) > 1 and ids[0] == ids[1] == self.bos:
            ids = ids[1:]  # the text already started with BOS
        return ids

    def _completion(
        self, prompt: Text, completion: Text, origin: str, field_name: str
    ) -> tuple[list[int], list[int]]:
        if isinstance(prompt, list):
            assert isinstance(completion, list)
            p = self._chat_ids(prompt, True, origin)
            full = self._chat_ids(prompt + completion, False, origin)
            if full[: len(p)] != p:
                raise DataError(
                    origin,
                    None,
                    field_name,
                    "the chat template renders the prompt differently with and without the completion, so "
                    "the prompt is not a prefix of prompt+completion; use a template whose generation prompt "
                    "matches the start of an assistant turn",
                )
            c = full[len(p) :]
            if self.eos in c:  # cut what the template adds after the final EOS (e.g. "\n")
                c = c[: len(c) - c[::-1].index(self.eos)]
            else:
                c = c + [self.eos]
            return p, c
        p = self._plain_prompt(prompt)
        c = list(self.tok(completion, add_special_tokens=False)["input_ids"])
        if not c or c[-1] != self.eos:
            c.append(self.eos)
        return p, c

    # -- truncation ------------------------------------------------------------------------
    def _truncate_prompt(self, p: list[int]) -> list[int]:
        m = self.config.max_prompt_length
        if len(p) <= m:
            return p
        self.stats.counts["prompt_truncated"] += 1
        if self.bos is not None and p[0] == self.bos:
            return [p[0]] + p[len(p) - (m - 1) :]
        return p[len(p) - m :]

    def _fit(self, p: list[int], c: list[int]) -> list[int]:
        room = self.config.max_length - len(p)
        if len(c) > room:
            self.stats.counts["completion_truncated"] += 1
            c = c[: max(room, 0)]
        return c

    # -- public ----------------------------------------------------------------------------
    def pair(self, rec: PairRecord) -> dict | None:
        """{prompt_ids, chosen_ids, rejected_ids} or None when the record must be dropped."""
        self.stats.counts["records"] += 1
        p, c = self._completion(rec.prompt, rec.chosen, rec.origin, "chosen")
        p2, r = self._completion(rec.prompt, rec.rejected, rec.origin, "rejected")
        if p != p2:
            raise DataError(
                rec.origin, None, "prompt", "prompt tokenizes differently for chosen and rejected"
            )
        p = self._truncate_prompt(p)
        c, r = self._fit(p, c), self._fit(p, r)
        if not c or not r:
            self.stats.counts["dropped_empty_completion"] += 1
            return None
        return {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r}

    def unpaired(self, rec: UnpairedRecord) -> dict | None:
        """{prompt_ids, completion_ids, label} or None when the record must be dropped."""
        self.stats.counts["records"] += 1
        p, c = self._completion(rec.prompt, rec.completion, rec.origin, "completion")
        p = self._truncate_prompt(p)
        c = self._fit(p, c)
        if not c:
            self.stats.counts["dropped_empty_completion"] += 1
            return None
        return {"prompt_ids": p, "completion_ids": c, "label": rec.label}
