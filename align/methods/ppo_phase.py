"""PPO's trainable module and its rollout phase: sample, score, advantages, minibatch updates.

`PPOModule.forward` is one training forward (policy log-probs, entropy and values) so DDP sees one
forward per backward; `PPOPhase` is what the loop (align/engine/loop.py) calls before each step's
updates, and the held-out evaluation (seeded sampling, score, KL to the reference).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from align.engine.loop import Phase
from align.methods.accuracy import answers_of
from align.methods.experience import (
    PPOBatch,
    Scored,
    advantages,
    row_metrics,
    shape_rewards,
    to_batch,
)
from align.methods.rollout_phase import RolloutPhase
from align.models.adapters import (
    POLICY,
    VALUE,
    ScalarHead,
    adapter_state_of,
    load_adapter_state,
    load_full_state,
    use_adapter,
)
from align.models.logprobs import (
    attn_implementation,
    decoder_layer_classes,
    resolve_layout,
    token_logps_entropy,
)
from align.models.reward_model import rows_hidden
from align.models.rollout import Rollout
from align.objectives.kl import KLController
from align.objectives.ppo import policy_loss, row_mean, token_mean_rows, value_loss
from align.objectives.types import ObjectiveOutput

# Methods of PPOModule that run the model outside `forward`: under FSDP2 they are registered as
# forward methods, so the root unit's parameters (embeddings, norm, heads) are gathered for them.
FSDP_METHODS = ("logps", "rewards", "score")


def rows_pack(r) -> bool:
    """Whether the rollout rows' scoring and update forwards run packed (`train.layout` resolved to
    packed: align/models/reward_model.py: rows_hidden) or as padded rows (an attention without 4D
    masks, or `layout: padded` / `shared`)."""
    layout = resolve_layout(r.train.layout, r.model.attn_implementation, r.model.gradient_checkpointing)
    return layout == "packed"


class PPOModule(nn.Module):
    """The trainable roles: `forward` is one training forward (policy log-probs and entropy, and
    values) so DDP sees one forward per backward. Scoring helpers run without grad. Without a
    value head (RLOO, GRPO: align/methods/online.py) the values are None."""

    def __init__(
        self,
        peft_model,
        value_head: ScalarHead | None,
        value_adapter: str | None,
        temperature: float,
        chunk: int,
        entropy_grad: bool = True,
        pack: bool = False,
    ):
        super().__init__()
        self.pack = pack  # rows_pack: packed rollout rows
        self.attn = attn_implementation(peft_model)
        self.entropy_grad = entropy_grad  # False without an entropy bonus: the entropy is a metric
        self.model, self.value_head = peft_model, value_head
        self.value_adapter, self.temperature, self.chunk = value_adapter, temperature, chunk
        self.lm_head = peft_model.get_base_model().get_output_embeddings()

    @property
    def _no_split_modules(self) -> list[str] | None:  # FSDP: one unit per decoder layer
        return decoder_layer_classes(self.model)

    def _hidden(self, adapter, ids, att, pos, tr: int):
        with use_adapter(self.model, adapter):
            return rows_hidden(self.model, ids, att, pos, self.pack, self.attn, ids.shape[1] - tr)

    def _stats(self, hidden, response_ids):
        n, tr = response_ids.shape
        pred = hidden[:, -tr - 1 : -1]  # position t-1 predicts response token t
        logp, ent = token_logps_entropy(
            self.lm_head,
            pred.reshape(n * tr, -1),
            response_ids.reshape(-1),
            self.chunk,
            self.temperature,
            self.entropy_grad,
        )
        return logp.view(n, tr), ent.view(n, tr), pred

    @torch.no_grad()
    def logps(self, adapter, ids, att, pos, response_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs, entropy) [N, Tr] of the responses under `adapter` (None: the reference)."""
        logp, ent, _ = self._stats(self._hidden(adapter, ids, att, pos, response_ids.shape[1]), response_ids)
        return logp, ent

    def _values(self, pol_pred, ids, att, pos, tr):
        if self.value_head is None:
            return None
        if self.value_adapter == POLICY:  # value head on the policy's own hidden states
            return self.value_head(pol_pred)
        return self.value_head(self._hidden(self.value_adapter, ids, att, pos, tr)[:, -tr - 1 : -1])

    def forward(self, input_ids, attention_mask, position_ids, response_ids):
        logp, ent, pred = self._stats(
            self._hidden(POLICY, input_ids, attention_mask, position_ids, response_ids.shape[1]), response_ids
        )
        values = self._values(pred, input_ids, attention_mask, position_ids, response_ids.shape[1])
        return logp, ent, values

    @torch.no_grad()
    def rewards(self, reward, rollout: Rollout, ids, att, pos, answers) -> torch.Tensor:
        """`reward`'s scores of the rows, called through the module so that under FSDP2 it runs
        as a forward (a reward adapter rides on the sharded base: `FSDP_METHODS`)."""
        return reward(rollout, ids, att, pos, answers)

    @torch.no_grad()
    def score(self, rollout: Rollout, reward, answers: list[str | None] | None = None) -> Scored:
        """Log-probs, reference log-probs, values, entropy and the reward of each row; `answers`
        go to the reward (a verifiable reward function checks them)."""
        ids, att, pos = rollout.sequences()
        tr = rollout.response_ids.shape[1]
        if rollout.logp is None or self.value_adapter == POLICY:  # the policy's forward is needed
            logp, ent, pred = self._stats(self._hidden(POLICY, ids, att, pos, tr), rollout.response_ids)
        else:
            pred = None
        if rollout.logp is not None:  # old_logps: sampler
            logp, ent = rollout.logp, rollout.entropy
        values = self._values(pred, ids, att, pos, tr)
        ref_logp, _, _ = self._stats(self._hidden(None, ids, att, pos, tr), rollout.response_ids)
        return Scored(logp, ref_logp, values, ent, reward(rollout, ids, att, pos, answers))


class PPOPhase(RolloutPhase):
    """The loop's rollout phase for PPO, its training step, its evaluation and its extra state."""

    def __init__(self, *, method: Any, **parts):  # method: align.methods.ppo.PPOMethod
        super().__init__(cfg=parts["r"].ppo, **parts)
        self.method = method
        self.kl = KLController(method.beta, self.c.kl_target, self.c.kl_horizon)
        self.micro = self.r.train.per_device_batch_size

    def __call__(self, micro_idx: list[list[int]]) -> Phase:
        t0 = time.perf_counter()
        examples = [self.prompts[i] for idx in micro_idx for i in idx]
        prompts = [ex["prompt_ids"] for ex in examples]
        step = self.rollouts
        self.rollouts += 1
        rollout = self._rollout(prompts, self._generator(0, step))
        t1 = time.perf_counter()
        scored = self.module.score(rollout, self.reward, answers_of(examples))
        beta = self.kl.value
        rewards, score, kl = shape_rewards(rollout, scored, beta, self.c)
        adv, ret, ev = advantages(rollout, scored, rewards, self.c)
        batch = to_batch(rollout, scored, adv, ret)
        mean_kl = self.acc.reduce(kl["kl_ref"].mean().detach(), reduction="mean")
        self.kl.update(float(mean_kl), len(prompts) * self.acc.num_processes)
        updates = self._updates(batch, step, self.micro)
        self.module.train()
        t2 = time.perf_counter()
        return self._phase(updates, row_metrics(rollout, scored, score, kl, ev, beta), (t0, t1, t2))

    def step_fn(self, batch: PPOBatch, training: bool) -> ObjectiveOutput:
        logp, ent, values = self.model(
            batch.input_ids, batch.attention_mask, batch.position_ids, batch.response_ids
        )
        m = batch.mask
        pg, pg_clipped, approx_kl = policy_loss(logp, batch.old_logp, batch.advantages, self.c.clip)
        vf, vf_clipped = value_loss(values, batch.old_values, batch.returns, self.c.value_clip)
        per_token = pg + self.c.vf_coef * vf - self.c.entropy_coef * ent
        loss = token_mean_rows(per_token, m, batch.tokens, batch.rows)
        return ObjectiveOutput(
            loss=loss,
            metrics={
                "policy/loss": row_mean(pg.detach(), m),
                "policy/clipfrac": row_mean(pg_clipped, m),
                "policy/approx_kl": row_mean(approx_kl, m),
                "policy/entropy": row_mean(ent.detach(), m),
                "value/loss": row_mean(vf.detach(), m),
                "value/clipfrac": row_mean(vf_clipped, m),
            },
        )

    # -- held-out prompts: sample (seeded the same way every time), score, KL to the reference; and
    # greedy accuracy when every prompt has a checkable answer --
    def eval_step(self, idx_batch, training: bool) -> ObjectiveOutput:
        idx = idx_batch.idx
        examples = [self.eval_prompts[i] for i in idx]
        prompts, answers = [ex["prompt_ids"] for ex in examples], answers_of(examples)
        rollout = self._rollout(prompts, self._generator(2, idx[0]))
        scored = self.module.score(rollout, self.reward, answers)
        _, score, kl = shape_rewards(rollout, scored, self.kl.value, self.c)
        metrics = {
            "score": scored.score.float(),
            **kl,
            "response_length": rollout.response_len.float(),
            "eos": rollout.ended.float(),
        }
        metrics.update(self._accuracy(prompts, answers))
        return ObjectiveOutput(loss=-(scored.score.float() - self.kl.value * kl["kl_ref"]), metrics=metrics)

    # -- checkpoints --
    def extra_state(self) -> dict[str, torch.Tensor]:
        out = {f"value_head.{k}": v for k, v in self.module.value_head.state_dict().items()}
        if self.module.value_adapter == VALUE:
            out.update(
                {f"value_adapter.{k}": v for k, v in adapter_state_of(self.module.model, VALUE).items()}
            )
        out["kl_coef"] = torch.tensor([self.kl.value], dtype=torch.float64)
        out["rollouts"] = torch.tensor([self.rollouts])
        return out

    def load_extra_state(self, t: dict[str, torch.Tensor]) -> None:
        load_full_state(
            self.module.value_head, {k[11:]: v for k, v in t.items() if k.startswith("value_head.")}
        )
        if self.module.value_adapter == VALUE:
            load_adapter_state(
                self.module.model, VALUE, {k[14:]: v for k, v in t.items() if k.startswith("value_adapter.")}
            )
        self.kl.value = float(t["kl_coef"][0])
        self.rollouts = int(t["rollouts"][0])

    def save_files(self) -> dict[str, dict[str, torch.Tensor]]:
        name = (
            "value/value_head.safetensors" if self.module.value_adapter == VALUE else "value_head.safetensors"
        )
        return {name: dict(self.module.value_head.state_dict())}
