"""Per-sequence completion log-probabilities without full-vocabulary logits everywhere.

Peers run the LM head over every position (prompt and padding included) and then mask. We run
the decoder backbone once, gather the hidden states that predict completion tokens, and apply
the LM head only there, in chunks that are recomputed in backward (activation checkpointing),
so peak memory is bounded by `chunk_tokens x vocab` instead of `batch x seq x vocab`.

`SequenceScorer` is an nn.Module so Accelerate can wrap it (DDP/FSDP hooks see its forward).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from align.data.packing import block_mask
from align.objectives.types import SeqLogps
from align.util.ranks import any_rank

log = logging.getLogger("align.logprobs")


def _logits_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target], in float32, without materialising the full log-softmax."""
    logits = logits.float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _token_logps(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return _logits_logps(lm_head(hidden), targets)


def completion_token_logps(
    lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int
) -> torch.Tensor:
    """log p(target_k | hidden_k) for K selected positions, chunked over K (recomputed in backward)."""
    chunks = zip(hidden.split(chunk_tokens), targets.split(chunk_tokens))
    if torch.is_grad_enabled() and hidden.shape[0] > chunk_tokens:
        return torch.cat([checkpoint(_token_logps, lm_head, h, t, use_reentrant=False) for h, t in chunks])
    return torch.cat([_token_logps(lm_head, h, t) for h, t in chunks])


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attn_implementation(model: nn.Module) -> str:
    """The attention kernel a (PEFT) causal LM runs ("sdpa" when its config names none)."""
    cfg = getattr(causal_lm(model), "config", None)
    return getattr(cfg, "_attn_implementation", None) or "sdpa"


# Largest acceptable mean |log-prob difference| per completion token between a fast path and the
# model's own logits, by compute dtype. Rounding noise is well below (SmolLM2-135M, shared-prompt
# path vs stock, CPU: fp32 3e-6, fp16 5e-3, bf16 2e-2); skipping a real model's logit scaling or
# softcapping costs far more. Unknown dtypes get the loosest.
_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6, torch.bfloat16: 0.1, torch.float16: 0.03}


def _tolerance(*dtypes: torch.dtype) -> float:
    return max(_TOLERANCE.get(d, 0.1) for d in dtypes)


LAYOUTS = ("auto", "packed", "shared", "padded")
_MASKABLE = ("sdpa", "eager")  # attention implementations that take our 4D block mask


def decoder_layer_classes(model: nn.Module) -> list[str] | None:
    """The decoder-layer classes of a wrapped (PEFT) model: what FSDP's TRANSFORMER_BASED_WRAP
    makes its units. Accelerate reads `_no_split_modules` from the module it prepares, i.e. our
    scorer, so every scorer that wraps a model answers it with this."""
    names = getattr(causal_lm(model), "_no_split_modules", None)
    return list(names) if names else None


def resolve_layout(requested: str, attn_implementation: str | None, gradient_checkpointing: bool) -> str:
    """`auto`: packed where the attention takes a 4D mask, else the shared-prompt KV-cache path
    (padded rows under gradient checkpointing, which drops the cache)."""
    attn = attn_implementation or "sdpa"
    if requested == "packed" and attn not in _MASKABLE:
        from align.util.errors import RecipeError

        raise RecipeError(
            f"train.layout: packed needs an attention implementation that takes a 4D mask "
            f"({' or '.join(_MASKABLE)}), not {attn}; use layout: auto"
        )
    if requested != "auto":
        return requested
    if attn in _MASKABLE:
        return "packed"
    return "padded" if gradient_checkpointing else "shared"


def packed_hidden(lm: nn.Module, packed: dict[str, torch.Tensor], attn: str) -> torch.Tensor:
    """The decoder's last hidden states of packed rows (align/data/packing.py), flattened to
    [rows * length, H]: one forward under the block mask, position ids restarting per pair."""
    mask = block_mask(packed["segment"], packed["branch"])
    if attn == "eager":  # eager adds the mask to the scores
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, torch.finfo(torch.float32).min)
    out = lm.base_model(
        input_ids=packed["ids"], attention_mask=mask, position_ids=packed["pos"], use_cache=False
    )
    return out.last_hidden_state.flatten(0, 1)


class SequenceScorer(nn.Module):
    """Wraps a (PEFT) causal LM; forward returns completion log-probs per sequence.

    Inputs are right-padded: `attention_mask` marks real tokens, `loss_mask` marks completion
    tokens (both built from lengths, never from `token != pad`: pad == eos in many tokenizers).

    `layout` says how a batch of pairs is run (`resolve_layout`):
    * `packed`: the batch's `packed` rows (align/data/packing.py): each pair's prompt once, both
      completions after it, several pairs per row under a block mask; one forward, almost no
      padding, every index known on the host (no device sync).
    * `shared`: each pair's prompt runs once and its key/value cache is reused by both
      completions (two forwards; gradients flow through the cache).
    * `padded`: 2B right-padded rows, prompt+completion each.
    All three equal each other numerically (tested to 1e-5); batches without the extra inputs
    fall back to `padded`.

    `gradient_checkpointing` must say whether the model checkpoints activations: checkpointed
    layers drop the KV cache while computing gradients, so the shared-prompt path is then used
    only without grad (reference, evaluation). Call `verify` once on a real batch before
    training: it checks the fast paths against the model's own logits.
    """

    def __init__(
        self,
        model: nn.Module,
        chunk_tokens: int = 1024,
        layout: str = "auto",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens
        self.gradient_checkpointing = gradient_checkpointing
        lm = causal_lm(model)
        cfg = getattr(lm, "config", None)
        # A cheap pre-filter for known logit post-processing; `verify` is the general check.
        self.fast = (
            getattr(cfg, "final_logit_softcapping", None) is None
            and getattr(cfg, "logit_scale", None) is None
            and lm.get_output_embeddings() is not None
            and getattr(lm, "base_model", None) is not lm
        )
        self.attn = attn_implementation(model)
        self.layout = resolve_layout(layout, self.attn, gradient_checkpointing)
        self._logits_dtype = torch.float32

    @property
    def _no_split_modules(self) -> list[str] | None:
        return decoder_layer_classes(self.model)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        loss_mask: torch.Tensor,
        prompt_ids: torch.Tensor | None = None,
        prompt_len: torch.Tensor | None = None,
        completion_ids: torch.Tensor | None = None,
        completion_len: torch.Tensor | None = None,
        packed: dict[str, torch.Tensor] | None = None,
    ) -> SeqLogps:
        lm = causal_lm(self.model)
        cache_dropped = self.gradient_checkpointing and torch.is_grad_enabled()
        if self.fast and self.layout == "packed" and packed is not None:
            return self._packed(lm, packed)
        if self.fast and self.layout == "shared" and prompt_ids is not None and not cache_dropped:
            return self._shared(lm, prompt_ids, prompt_len, completion_ids, completion_len)
        sel = loss_mask[:, 1:].bool()
        targets = input_ids[:, 1:][sel]
        if self.fast:
            hidden = lm.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            picked = hidden.last_hidden_state[:, :-1][sel]
            tok = completion_token_logps(lm.get_output_embeddings(), picked, targets, self.chunk_tokens)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            self._logits_dtype = logits.dtype  # the compute precision (autocast included), for `verify`
            tok = _logits_logps(logits[:, :-1][sel], targets)
        return _per_sequence(tok, sel)

    def _packed(self, lm, packed: dict[str, torch.Tensor]) -> SeqLogps:
        hidden = packed_hidden(lm, packed, self.attn).index_select(0, packed["pred"])
        tok = completion_token_logps(lm.get_output_embeddings(), hidden, packed["target"], self.chunk_tokens)
        n = packed["n_tokens"]
        sums = torch.zeros(n.shape[0], dtype=tok.dtype, device=tok.device).index_add(0, packed["seq"], tok)
        return SeqLogps(sum=sums, n_tokens=n.to(tok.dtype))

    def _shared(self, lm, prompt_ids, prompt_len, completion_ids, completion_len) -> SeqLogps:
        b, tp = prompt_ids.shape
        n, tc = completion_ids.shape
        dev = prompt_ids.device
        rows = torch.arange(b, device=dev).repeat(n // b)  # completion row -> its prompt
        p_att = (torch.arange(tp, device=dev)[None] < prompt_len[:, None]).long()
        out = lm.base_model(input_ids=prompt_ids, attention_mask=p_att, use_cache=True)
        cache = out.cache
        cache.batch_select_indices(rows)
        last = out.last_hidden_state[torch.arange(b, device=dev), prompt_len - 1][rows]  # predicts token 0
        pos = torch.arange(tc, device=dev)
        c_att = (pos[None] < completion_len[:, None]).long()
        out = lm.base_model(
            input_ids=completion_ids,
            attention_mask=torch.cat([p_att[rows], c_att], dim=1),
            position_ids=prompt_len[rows][:, None] + pos[None],
            use_cache=True,
            cache=cache,
        )
        hidden = torch.cat([last[:, None], out.last_hidden_state[:, :-1]], dim=1)  # [n, tc, H]
        sel = c_att.bool()
        tok = completion_token_logps(
            lm.get_output_embeddings(), hidden[sel], completion_ids[sel], self.chunk_tokens
        )
        return _per_sequence(tok, sel)

    @torch.no_grad()
    def verify(self, batch_inputs: dict[str, torch.Tensor], via: nn.Module | None = None) -> bool:
        """Check the fast paths against the model's own `forward().logits` on one batch; switch off
        any that disagree (a model that post-processes logits, e.g. Granite's `logits_scaling`).

        Runs in eval mode without grad. `via` is the module to call (the Accelerate-prepared
        wrapper of this scorer, so DDP/FSDP/autocast apply as in training); default self. On
        several processes every rank must call it, and all take the same decision. Returns True
        when every path this batch exercises was kept.
        """
        call = via if via is not None else self
        fast, layout = self.fast, self.layout
        if not fast:
            return True
        concat = {k: batch_inputs[k] for k in ("input_ids", "attention_mask", "loss_mask")}
        extra = {"packed": "packed", "shared": "prompt_ids"}.get(layout)
        was_training = call.training
        call.eval()
        try:
            self.fast, self.layout = False, "padded"
            want = call(**concat)
            self.fast = True
            errors = [_per_token_error(call(**concat), want)]
            if extra and batch_inputs.get(extra) is not None:
                self.layout = layout
                errors.append(_per_token_error(call(**batch_inputs), want))
        finally:
            self.fast, self.layout = fast, layout
            call.train(was_training)
        lm = causal_lm(self.model)
        tol = _tolerance(self._logits_dtype, lm.get_output_embeddings().weight.dtype)
        ok = [not bad for bad in any_rank(torch.tensor([e > tol for e in errors], device=want.sum.device))]
        if not ok[0]:
            self.fast, self.layout = False, "padded"
        elif len(ok) > 1 and not ok[1]:
            self.layout = "padded"
        if not all(ok):
            kept = "the stock forward" if not self.fast else "the padded fast path"
            log.warning(
                "log-prob fast path disagrees with the model's own logits (mean |diff| per token %s, "
                "tolerance %.0e); using %s",
                ", ".join(f"{e:.3g}" for e in errors),
                tol,
                kept,
            )
        return all(ok)


def _per_token_error(got: SeqLogps, want: SeqLogps) -> float:
    """Mean |Δ sequence log-prob| per completion token over the batch (pooled: short completions
    alone would make rounding noise look large)."""
    return float((got.sum - want.sum).abs().sum() / want.n_tokens.sum().clamp(min=1))


def _per_sequence(tok: torch.Tensor, sel: torch.Tensor) -> SeqLogps:
    """Sum token log-probs per row of the selection mask `sel` [N, T]."""
    rows = sel.nonzero()[:, 0]
    sums = torch.zeros(sel.shape[0], dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)
    return SeqLogps(sum=sums, n_tokens=sel.sum(dim=1).to(tok.dtype))


def _logps_entropy(
    lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, entropy_grad: bool
):
    logits = lm_head(hidden).float() / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    e_logits, e_lse = (logits, lse) if entropy_grad else (logits.detach(), lse.detach())
    entropy = e_lse - (torch.softmax(e_logits, dim=-1) * e_logits).sum(-1)
    return logp, entropy


def token_logps_entropy(
    lm_head: nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    chunk_tokens: int,
    temperature: float = 1.0,
    entropy_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(target_k), entropy of the distribution) at K positions, of the softmax of the logits
    divided by `temperature` (PPO scores its samples under the distribution they came from);
    chunked over K like `completion_token_logps`, recomputed in backward. `entropy_grad` False: the
    entropy is a metric only (no entropy bonus), and its softmax stays out of the backward pass."""
    chunks = list(zip(hidden.split(chunk_tokens), targets.split(chunk_tokens)))
    args = (temperature, entropy_grad)
    if torch.is_grad_enabled() and hidden.shape[0] > chunk_tokens:
        parts = [checkpoint(_logps_entropy, lm_head, h, t, *args, use_reentrant=False) for h, t in chunks]
    else:
        parts = [_logps_entropy(lm_head, h, t, *args) for h, t in chunks]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
