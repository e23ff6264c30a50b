"""Batched sampling with a KV cache: PPO's rollout phase (and the answers of evals).

Prompts are left-padded so every row's next token sits in the same column; position ids come
from the attention mask (a left-padded row's first real token is position 0, as in training).
Rows stop at EOS (any id of `eos_token_id`); what follows is padding, and `response_len` counts
the tokens up to and including EOS. Masks come from these lengths, never from `token != pad`:
SmolLM2's pad is its EOS.

One prefill forward, then one forward per new token with the cache; the LM head runs on the
last position only. Two backends compute the forwards: the model's own (HF, DynamicCache) and a
lean static-cache path for llama-architecture models (align/models/decode.py, the default when
it supports the model). The loop ends early when every row has stopped (checked every
`check_every` tokens, so a GPU is not synchronised at every step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off


@dataclass
class Rollout:
    """Left-padded prompts and right-padded responses of one batch (host or device tensors)."""

    prompt_ids: torch.Tensor  # [N, Tp]
    prompt_len: torch.Tensor  # [N]
    response_ids: torch.Tensor  # [N, Tr]
    response_len: torch.Tensor  # [N], EOS included when the row ended
    ended: torch.Tensor  # [N] bool: stopped at EOS (not cut by max_new_tokens)
    # with sample(logps=True): each response token's log-prob and the entropy under the unfiltered
    # softmax(logits / temperature) it was drawn at, [N, Tr] (what the update's forward computes)
    logp: torch.Tensor | None = None
    entropy: torch.Tensor | None = None

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, position_ids) of prompt + response, [N, Tp + Tr]."""
        tp, tr = self.prompt_ids.shape[1], self.response_ids.shape[1]
        dev = self.prompt_ids.device
        p_att = torch.arange(tp, device=dev)[None] >= (tp - self.prompt_len)[:, None]
        r_att = torch.arange(tr, device=dev)[None] < self.response_len[:, None]
        att = torch.cat([p_att, r_att], dim=1).long()
        return torch.cat([self.prompt_ids, self.response_ids], dim=1), att, positions(att)

    def response_mask(self) -> torch.Tensor:
        tr = self.response_ids.shape[1]
        return torch.arange(tr, device=self.response_ids.device)[None] < self.response_len[:, None]

    def select(self, rows: Sequence[int] | torch.Tensor) -> Rollout:
        idx = torch.as_tensor(rows, dtype=torch.long)
        return Rollout(*(None if t is None else t[idx.to(t.device)] for t in self.__dict__.values()))


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding)."""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def left_pad(prompts: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    if (lens == 0).any():
        raise ValueError("rollout: an empty prompt (no tokens) cannot be continued")
    ids = torch.full((len(prompts), int(lens.max())), pad, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, ids.shape[1] - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
    return ids, lens


def pick(logits: torch.Tensor, s: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row: greedy at temperature 0, else sampled from the (top-k, top-p)
    filtered distribution at `temperature`."""
    if s.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / s.temperature
    if s.top_k and s.top_k < logits.shape[-1]:
        kth = torch.topk(logits, s.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop = (probs.cumsum(-1) - probs) >= s.top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return draw(torch.softmax(logits, dim=-1), generator)


def draw(probs: torch.Tensor, generator: torch.Generator | None, block: int = 256) -> torch.Tensor:
    """One token per row, drawn exactly from `probs` (rows sum to 1) in two exponential races:
    a block of `block` tokens by its summed mass, then a token inside it. P(block) * P(token |
    block) = p, as with torch.multinomial, which races one exponential per vocabulary entry: 400k
    draws at 8 x 49152, 9 ms of a 90 ms CPU decode step; this draws 448 per row. A race picks
    the argmax of p / q, so a 1e-7 change in p moves the token only on a near tie (an
    inverse-CDF draw moved tokens often enough to break GRPO's ZeRO-equals-DDP check)."""
    rows, vocab = probs.shape
    n = -(-vocab // block)
    if n * block != vocab:  # pad only a vocabulary that does not fill its last block (a copy)
        probs = torch.nn.functional.pad(probs, (0, n * block - vocab))
    blocks = probs.reshape(rows, n, block)
    sums = blocks.sum(-1)
    chosen = (sums / torch.empty_like(sums).exponential_(generator=generator)).argmax(-1)
    inside = blocks[torch.arange(rows, device=probs.device), chosen]
    within = (inside / torch.empty_like(inside).exponential_(generator=generator)).argmax(-1)
    return chosen * block + within


BACKENDS = ("auto", "fast", "hf")


def _hf_start(model: torch.nn.Module, ids: torch.Tensor, plen: torch.Tensor):
    """The HF path: one prefill forward with a DynamicCache, then one forward per token. Returns
    (first logits [N, V], step(tok) -> next logits)."""
    from transformers import DynamicCache

    n, tp = ids.shape
    att = (torch.arange(tp, device=ids.device)[None] >= (tp - plen)[:, None]).long()
    cache = DynamicCache()
    out = model(
        input_ids=ids,
        attention_mask=att,
        position_ids=positions(att),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    state = {"att": att, "pos": plen.clone()}
    ones = torch.ones((n, 1), dtype=att.dtype, device=ids.device)

    def step(tok: torch.Tensor) -> torch.Tensor:
        state["att"] = torch.cat([state["att"], ones], dim=1)
        logits = model(
            input_ids=tok[:, None],
            attention_mask=state["att"],
            position_ids=state["pos"][:, None],
            cache=cache,
            use_cache=True,
        ).logits[:, -1]
        state["pos"] = state["pos"] + 1
        return logits

    return out.logits[:, -1], step


@contextlib.contextmanager
def full_weights(root: torch.nn.Module) -> Iterator[bool]:
    """The weights one rollout samples from; yields whether anything was sharded. Under FSDP2 (or
    ZeRO-3) every unit of `root` (the prepared model) holds its full parameters inside the block
    and is resharded after it: a collective, every rank enters together. Sampling inside must
    then be the fast path, which reads the weights and calls no module forward (an FSDP forward
    all-gathers, and ranks that stop after different numbers of tokens would wait on each other
    forever).

    The sampling weights (align/models/decode_weights.py) live for one rollout: built inside,
    dropped on the way out. FSDP's gather and DeepSpeed's ZeRO step write weights without bumping
    the version counters its cache compares (a kept buffer would be stale), an optimizer step
    between rollouts changes every LoRA'd linear anyway, and kept through the update they were
    PPO's largest resident cost (+1.55 GiB for the 135M model with all-linear LoRA)."""
    from torch.distributed.fsdp import FSDPModule

    from align.models import decode_weights
    from align.util.memory import release_freed
    from align.util.zero3 import gathered, partitioned

    sharded = partitioned(root)
    units = [m for m in root.modules() if isinstance(m, FSDPModule)]
    with contextlib.ExitStack() as stack:  # unwinds last-in first-out
        if sharded:  # ZeRO-3: through DeepSpeed's gather
            stack.enter_context(gathered(root.parameters()))
        for unit in units:
            unit.unshard()
            stack.callback(unit.reshard)
        decode_weights.forget(root)
        stack.callback(release_freed)  # last out: the freed buffers go back to the OS
        stack.callback(decode_weights.forget, root)  # first out: no buffer may alias freed storage
        yield sharded or bool(units)


def backend_for(model: torch.nn.Module, backend: str = "auto") -> str:
    """ "fast" (align/models/decode.py) or "hf" for `model`: "auto" takes fast when the model is
    supported; "fast" raises ValueError with the reason when it is not."""
    if backend not in BACKENDS:
        raise ValueError(f"rollout: backend {backend!r} is not one of {BACKENDS}")
    if backend == "hf":
        return "hf"
    from align.models.decode import unsupported

    reason = unsupported(model)
    if reason is None:
        return "fast"
    if backend == "fast":
        raise ValueError(f"rollout: the fast backend cannot run this model: {reason}")
    return "hf"


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    sampling: Sampling,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    generator: torch.Generator | None = None,
    check_every: int = 8,
    backend: str = "auto",
    compile: bool = False,
    logps: bool = False,
) -> Rollout:
    """Continue each prompt (token ids) with up to `sampling.max_new_tokens` tokens.

    `model` is a causal LM (a PEFT model with the wanted adapter active, or a plain one) in eval
    mode; `generator` (on the model's device) makes sampling reproducible. `backend`: "auto" (the
    lean static-cache path of align/models/decode.py when the model is supported, else HF),
    "fast" (that path or ValueError with the reason) or "hf" (the model's own forward). Both
    backends feed the same loop and `pick`, so equal logits give equal tokens. `compile`: the fast
    backend's decode step runs `torch.compile`d (align/models/decode_compile.py; hf ignores it).
    `logps`: also keep each token's log-prob and entropy at `sampling.temperature` (before top-k /
    top-p, as the training forward computes them; temperature > 0)."""
    if logps and sampling.temperature == 0:
        raise ValueError("rollout: log-probs of greedy decoding are undefined (temperature 0)")
    dev = next(model.parameters()).device
    ids, plen = left_pad(prompts, pad_token_id)
    ids, plen = ids.to(dev), plen.to(dev)
    n = ids.shape[0]
    eos = torch.as_tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=dev)
    if backend_for(model, backend) == "fast":
        from align.models.decode import start

        logits, step = start(model, ids, plen, sampling.max_new_tokens, compile=compile)
    else:
        logits, step = _hf_start(model, ids, plen)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    length = torch.zeros(n, dtype=torch.long, device=dev)
    tokens, stats = [], []
    for t in range(sampling.max_new_tokens):
        tok = pick(logits, sampling, generator)
        tok = torch.where(done, torch.full_like(tok, pad_token_id), tok)
        tokens.append(tok)
        if logps:
            stats.append(token_stats(logits, tok, sampling.temperature))
        length += (~done).long()
        done = done | torch.isin(tok, eos)
        if t + 1 == sampling.max_new_tokens or ((t + 1) % check_every == 0 and bool(done.all())):
            break
        logits = step(tok)
    response = torch.stack(tokens, dim=1)
    if not logps:
        return Rollout(ids, plen, response, length, done)
    logp, entropy = (torch.stack(s, dim=1) for s in zip(*stats))
    return Rollout(ids, plen, response, length, done, logp, entropy)


def token_stats(
    logits: torch.Tensor, tok: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of tok, entropy) per row under softmax(logits / temperature), in float32."""
    lp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return lp.gather(-1, tok[:, None])[:, 0], -(lp.exp() * lp).sum(-1)
