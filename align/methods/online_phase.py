"""The RLOO / GRPO rollout phase: sample k completions per prompt, score, group advantages, update.

Rows of a rollout batch are grouped: prompt j's completions are rows j*k .. j*k + k - 1 (the
objectives' `group_rows` layout). Log-prob forwards are skipped when nothing needs them: the
reference only when β > 0, the policy's sampling-time log-probs only when the update is off-policy
(several epochs or minibatches) or RLOO puts the KL in the reward; on-policy the objectives use
ρ = 1 (`old_logp=None`), which is exact, not an approximation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from align.engine.loop import Phase
from align.methods.accuracy import answers_of
from align.methods.experience import RowBatch
from align.methods.rollout_phase import RolloutPhase
from align.models.adapters import POLICY
from align.objectives.advantages import group_rows
from align.objectives.grpo import grpo_advantages, grpo_loss
from align.objectives.kl import sequence_kl
from align.objectives.ppo import row_mean
from align.objectives.rloo import rloo_advantages, rloo_loss
from align.objectives.types import ObjectiveOutput


@dataclass
class OnlineBatch(RowBatch):
    """Rows of one minibatch (a micro-batch of it) for the RLOO / GRPO update."""

    input_ids: torch.Tensor  # [n, Tp + Tr] left-padded prompt, right-padded completion
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor  # [n, Tr]
    mask: torch.Tensor  # [n, Tr] real completion tokens
    advantages: torch.Tensor  # [n]
    old_logp: torch.Tensor | None  # [n, Tr]; None: on-policy
    ref_logp: torch.Tensor | None  # [n, Tr]; None: β = 0
    tokens: float = 1.0  # real completion tokens in the whole minibatch on this process
    rows: float = 1.0


class OnlinePhase(RolloutPhase):
    """The loop's rollout phase for RLOO and GRPO, their training step and held-out evaluation."""

    def __init__(self, *, method: Any, **parts):  # method: align.methods.online.OnlineMethod
        super().__init__(cfg=parts["r"].online, **parts)
        self.method, self.k, self.beta = method, self.c.group_size, method.beta
        self.micro = self.r.train.per_device_batch_size * self.k  # a micro-batch: prompts x their k rows
        self.need_old = method.updates_per_step > 1 or (method.name == "rloo" and self.beta > 0)

    def _score(self, examples: list[dict], rollout, ids, att, pos) -> torch.Tensor:
        """The reward of each row (answers repeated per group), less the missing-EOS penalty."""
        answers = answers_of(examples)
        if answers is not None and len(answers) != rollout.response_ids.shape[0]:
            answers = [a for a in answers for _ in range(self.k)]
        score = self.module.rewards(self.reward, rollout, ids, att, pos, answers).float()
        if self.c.missing_eos_penalty is not None:
            score = score - self.c.missing_eos_penalty * (~rollout.ended).float()
        return score

    def __call__(self, micro_idx: list[list[int]]) -> Phase:
        t0 = time.perf_counter()
        examples = [self.prompts[i] for idx in micro_idx for i in idx]
        prompts = [ex["prompt_ids"] for ex in examples for _ in range(self.k)]
        step = self.rollouts
        self.rollouts += 1
        rollout = self._rollout(prompts, self._generator(0, step))
        t1 = time.perf_counter()
        ids, att, pos = rollout.sequences()
        resp, mask = rollout.response_ids, rollout.response_mask()
        old = None
        if self.need_old:
            old = (
                rollout.logp
                if rollout.logp is not None
                else self.module.logps(POLICY, ids, att, pos, resp)[0]
            )
        ref = self.module.logps(None, ids, att, pos, resp)[0] if self.beta > 0 else None
        score = self._score(examples, rollout, ids, att, pos)
        metrics: dict[str, torch.Tensor] = {"score": score}
        if self.method.name == "rloo":
            kl = sequence_kl(old, ref, mask) if ref is not None else None
            adv, reward = rloo_advantages(score, self.k, kl, self.beta, self.c.whiten)
            metrics["reward"] = reward
            if kl is not None:
                metrics["kl_ref"] = kl
        else:
            adv = grpo_advantages(score, self.k, self.c.scale)
        grouped = group_rows(score, self.k)
        metrics["group/reward_std"] = grouped.std(1).repeat_interleave(self.k)
        metrics["group/zero_std"] = (grouped == grouped[:, :1]).all(1).float().repeat_interleave(self.k)
        metrics["advantage/abs"] = adv.abs()
        batch = OnlineBatch(ids, att, pos, resp, mask, adv, old, ref)
        updates = self._updates(batch, step, self.micro, group=self.k)
        self.module.train()
        t2 = time.perf_counter()
        metrics.update(response_length=rollout.response_len.float(), eos=rollout.ended.float())
        return self._phase(updates, metrics, (t0, t1, t2))

    def step_fn(self, batch: OnlineBatch, training: bool) -> ObjectiveOutput:
        logp, ent, _ = self.model(
            batch.input_ids, batch.attention_mask, batch.position_ids, batch.response_ids
        )
        c = self.c
        if self.method.name == "grpo":
            out = grpo_loss(
                logp,
                batch.mask,
                batch.advantages,
                old_logp=batch.old_logp,
                ref_logp=batch.ref_logp,
                beta=self.beta,
                epsilon_low=c.clip,
                epsilon_high=c.clip_high,
                normalisation=c.normalisation,
                max_completion_length=c.max_new_tokens,
                tokens=batch.tokens,
                rows=batch.rows,
            )
        else:
            out = rloo_loss(
                logp,
                batch.mask,
                batch.advantages,
                old_logp=batch.old_logp,
                clip=c.clip,
                clip_high=c.clip_high,
                ratio=c.ratio,
                reduce=c.reduce,
            )
        out.metrics["policy/entropy"] = row_mean(ent.detach(), batch.mask)
        return out

    # -- held-out prompts: one seeded sample each, its score and KL to the reference; greedy accuracy
    # when every prompt has a checkable answer --
    def eval_step(self, idx_batch, training: bool) -> ObjectiveOutput:
        idx = idx_batch.idx
        examples = [self.eval_prompts[i] for i in idx]
        prompts = [ex["prompt_ids"] for ex in examples]
        rollout = self._rollout(prompts, self._generator(2, idx[0]))
        ids, att, pos = rollout.sequences()
        resp, mask = rollout.response_ids, rollout.response_mask()
        logp = self.module.logps(POLICY, ids, att, pos, resp)[0]
        ref = self.module.logps(None, ids, att, pos, resp)[0]
        score = self._score(examples, rollout, ids, att, pos)
        kl = sequence_kl(logp, ref, mask)
        metrics = {
            "score": score,
            "kl_ref": kl,
            "kl_ref/k3": sequence_kl(logp, ref, mask, "k3"),
            "response_length": rollout.response_len.float(),
            "eos": rollout.ended.float(),
            **self._accuracy(prompts, answers_of(examples)),
        }
        return ObjectiveOutput(loss=-score, metrics=metrics)

    # -- checkpoints: the rollout counter (the policy adapter and optimizer are saved by the loop) --
    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"rollouts": torch.tensor([self.rollouts])}

    def load_extra_state(self, t: dict[str, torch.Tensor]) -> None:
        self.rollouts = int(t["rollouts"][0])
