"""PPO experience: one rollout batch scored by every role, turned into advantages and minibatches.

Roles share one base (align/models/adapters.py): the policy (`default` adapter) and the reference
(adapters off) give per-token log-probs of the sampled responses, the value model per-token
values, the reward model one score per response at its last real token. Everything here runs
without gradients in eval mode; the update (align/methods/ppo.py) recomputes the policy and values.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from align.models.rollout import Rollout
from align.objectives.advantages import explained_variance, gae, masked_mean, masked_whiten
from align.objectives.kl import KL_ESTIMATORS
from align.objectives.ppo import token_rewards


class RowBatch:
    """Rows of a rollout batch as a dataclass of tensors: moved and cut to a minibatch's rows.

    Fields named in SEQUENCE_FIELDS are [n, Tp + Tr]; other 2-D tensors are [n, Tr] (response
    columns); 1-D tensors are per row; anything else (counts, None) is carried as is."""

    def to(self, device):
        return type(self)(
            **{
                f.name: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                for f in fields(self)
                for v in [getattr(self, f.name)]
            }
        )

    def select(self, rows: torch.Tensor, tokens: float, n_rows: float, width: tuple[int, int]):
        """Rows `rows`, cut to `width` = (prompt columns, response columns) they need: columns that
        are padding in every selected row (left of the longest prompt, right of the longest
        response) cost a forward and backward for nothing."""
        keep_p, keep_r = width
        tp = self.input_ids.shape[1] - self.response_ids.shape[1]
        seq = slice(tp - keep_p, tp + keep_r)
        out: dict = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v[rows.to(v.device)]
                if f.name in SEQUENCE_FIELDS:
                    v = v[:, seq]
                elif v.dim() > 1:
                    v = v[:, :keep_r]
            out[f.name] = v
        out.update(tokens=tokens, rows=n_rows)
        return type(self)(**out)


@dataclass
class PPOBatch(RowBatch):
    """Rows of one minibatch (a micro-batch of it): sequences and what the update needs."""

    input_ids: torch.Tensor  # [n, Tp + Tr] left-padded prompt, right-padded response
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor  # [n, Tr]
    mask: torch.Tensor  # [n, Tr] real response tokens
    old_logp: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    tokens: float = 1.0  # real response tokens in the whole minibatch on this process
    rows: float = 1.0  # rows in the whole minibatch on this process


SEQUENCE_FIELDS = ("input_ids", "attention_mask", "position_ids")


@dataclass
class Scored:
    """Per-token and per-row quantities of a rollout batch (device tensors)."""

    logp: torch.Tensor  # [N, Tr] policy at sampling time
    ref_logp: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    score: torch.Tensor  # [N] raw scores (before penalty and clipping)


def shape_rewards(
    rollout: Rollout, s: Scored, beta: float, cfg
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(per-token rewards [N, Tr], the score actually used [N], per-row KL metrics)."""
    mask = rollout.response_mask()
    score = s.score.float()
    if cfg.missing_eos_penalty is not None:
        score = score - cfg.missing_eos_penalty * (~rollout.ended).float()
    if cfg.score_clip is not None:
        score = score.clamp(-cfg.score_clip, cfg.score_clip)
    kl_tok = KL_ESTIMATORS[cfg.kl_estimator](s.logp, s.ref_logp)
    rewards = token_rewards(score, kl_tok, mask, beta)
    if cfg.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    m = mask.float()
    kl = {
        "kl_ref": (KL_ESTIMATORS["k1"](s.logp, s.ref_logp) * m).sum(1),
        "kl_ref/k3": (KL_ESTIMATORS["k3"](s.logp, s.ref_logp) * m).sum(1),
    }
    return rewards, score, kl


def advantages(
    rollout: Rollout, s: Scored, rewards: torch.Tensor, cfg
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(advantages, returns, explained variance) with GAE over real response tokens."""
    mask = rollout.response_mask()
    values = s.values * mask
    adv, ret = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv = masked_whiten(adv, mask)
    return adv, ret, explained_variance(values, ret, mask)


def to_batch(rollout: Rollout, s: Scored, adv: torch.Tensor, ret: torch.Tensor) -> PPOBatch:
    ids, att, pos = rollout.sequences()
    mask = rollout.response_mask()
    return PPOBatch(
        input_ids=ids,
        attention_mask=att,
        position_ids=pos,
        response_ids=rollout.response_ids,
        mask=mask,
        old_logp=s.logp,
        old_values=s.values * mask,
        advantages=adv,
        returns=ret,
    )


def minibatch_updates(
    batch: RowBatch, epochs: int, minibatches: int, micro: int, generator: torch.Generator, group: int = 1
) -> list[tuple[list[RowBatch], float]]:
    """For each epoch a fresh permutation of the rows, cut into `minibatches` minibatches, each cut
    into micro-batches of at most `micro` rows: [(micro-batches, rows in the minibatch), ...].
    Each micro-batch carries its minibatch's token and row counts (token-mean normalisation).

    `group`: the rows come in groups of that many consecutive rows (GRPO's and RLOO's k completions
    of one prompt), permuted as whole groups so that a micro-batch of whole groups runs each prompt
    once in the packed layout (align/models/reward_model.py: rows_hidden); with more minibatches
    than groups, rows are permuted one by one. group = 1 is the plain row permutation."""
    n = batch.input_ids.shape[0]
    if group > 1 and (n % group or minibatches > n // group):
        group = 1
    mask_rows = batch.mask.sum(1).cpu()  # one host copy per rollout batch: widths known on the host
    prompt_rows = batch.attention_mask.sum(1).cpu() - mask_rows
    out = []
    within = torch.arange(group)
    for _ in range(epochs):
        order = torch.randperm(n // group, generator=generator)
        for mb in order.tensor_split(minibatches):
            mb = (mb[:, None] * group + within).flatten()
            if mb.numel() == 0:
                continue
            tokens = float(mask_rows[mb].sum())
            micros = [
                batch.select(
                    rows,
                    tokens,
                    float(mb.numel()),
                    (int(prompt_rows[rows].max()), int(mask_rows[rows].max())),
                )
                for rows in mb.split(micro)
            ]
            out.append((micros, float(mb.numel())))
    return out


def row_metrics(rollout: Rollout, s: Scored, score: torch.Tensor, kl: dict, ev, beta: float):
    mask = rollout.response_mask()
    n = score.shape[0]
    return {
        "score": s.score.float(),
        "score/shaped": score,
        **kl,
        "kl_coef": torch.full((n,), beta),
        "entropy": masked_mean(s.entropy, mask, dim=1),
        "value/explained_variance": torch.full((n,), float(ev)),
        "response_length": rollout.response_len.float(),
        "eos": rollout.ended.float(),
    }
