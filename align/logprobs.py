"""Per-sequence completion log-probabilities without full-vocabulary logits everywhere.

Peers run the LM head over every position (prompt and padding included) and then mask. We run
the decoder backbone once, gather the hidden states that predict completion tokens, and apply
the LM head only there, in chunks that are recomputed in backward (activation checkpointing),
so peak memory is bounded by `chunk_tokens x vocab` instead of `batch x seq x vocab`.

`SequenceScorer` is an nn.Module so Accelerate can wrap it (DDP/FSDP hooks see its forward).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from align.objectives.types import SeqLogps


def _token_logps(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = lm_head(hidden).float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def completion_token_logps(
    lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """log p(target_k | hidden_k) for K selected positions, chunked over K (recomputed in backward)."""
    chunks = zip(hidden.split(chunk_tokens), targets.split(chunk_tokens))
    if torch.is_grad_enabled() and hidden.shape[0] > chunk_tokens:
        return torch.cat([checkpoint(_token_logps, lm_head, h, t, use_reentrant=False) for h, t in chunks])
    return torch.cat([_token_logps(lm_head, h, t) for h, t in chunks])


def _causal_lm(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class SequenceScorer(nn.Module):
    """Wraps a (PEFT) causal LM; forward returns completion log-probs per sequence.

    Inputs are right-padded: `attention_mask` marks real tokens, `loss_mask` marks completion
    tokens (both built from lengths, never from `token != pad`: pad == eos in many tokenizers).
    """

    def __init__(self, model: nn.Module, chunk_tokens: int = 1024) -> None:
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens
        lm = _causal_lm(model)
        cfg = getattr(lm, "config", None)
        # Models that post-process logits need the stock forward; we detect the common ones.
        self.fast = (
            getattr(cfg, "final_logit_softcapping", None) is None
            and getattr(cfg, "logit_scale", None) is None
            and lm.get_output_embeddings() is not None
            and getattr(lm, "base_model", None) is not lm
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor
    ) -> SeqLogps:
        sel = loss_mask[:, 1:].bool()
        targets = input_ids[:, 1:][sel]
        rows = sel.nonzero()[:, 0]
        lm = _causal_lm(self.model)
        if self.fast:
            hidden = lm.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            picked = hidden.last_hidden_state[:, :-1][sel]
            tok = completion_token_logps(lm.get_output_embeddings(), picked, targets, self.chunk_tokens)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            picked = logits[:, :-1][sel].float()
            tok = picked.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(picked, dim=-1)
        n = input_ids.shape[0]
        sums = torch.zeros(n, dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)
        counts = sel.sum(dim=1).to(tok.dtype)
        return SeqLogps(sum=sums, n_tokens=counts)
