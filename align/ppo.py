"""RLHF-PPO on one frozen base: policy, value, reward and reference as adapters of one model.

Per loop step (align/loop.py calls `PPOPhase` as its rollout phase):
  1. rollout: sample responses to this step's prompts with the policy (align/rollout.py);
  2. scoring: policy and reference log-probs, values, the reward model's score (or a function's);
  3. rewards with the KL penalty, GAE advantages (align/experience.py, align/objectives/);
  4. `ppo.epochs` epochs of `ppo.minibatches` optimizer updates over the batch (the loop runs them).

Departures from the N+ reference implementation (Huang et al. 2024), deliberate:
  * the value model is an adapter + head on the policy's frozen base (initialised from the
    reward run's adapter and head), not a second full model;
  * advantages are whitened per process (as the reference does) but the adaptive KL controller
    sees the KL averaged over every process, so all ranks share one β.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from align.adapters import (
    ScalarHead,
    adapter_state_of,
    add_adapter,
    load_adapter_state,
    set_trainable,
    use_adapter,
)
from align.errors import RecipeError
from align.experience import (
    PPOBatch,
    Scored,
    advantages,
    minibatch_updates,
    row_metrics,
    shape_rewards,
    to_batch,
)
from align.logprobs import token_logps_entropy
from align.loop import Phase, Update
from align.objectives.kl import KLController
from align.objectives.ppo import policy_loss, row_mean, token_mean_rows, value_loss
from align.objectives.types import ObjectiveOutput
from align.reward_model import (
    ExternalRewardModel,
    RewardScorer,
    backbone_hidden,
    check_same_base,
    read_reward_run,
)
from align.rollout import Rollout, Sampling, sample

log = logging.getLogger("align.ppo")

POLICY, VALUE, REWARD = "default", "value", "reward"


def check_recipe(r, where: str) -> None:
    """Everything about a PPO recipe that needs no model."""
    from align.methods import check_sections

    c = r.ppo
    given = [k for k in ("reward_run", "reward_model", "reward_function") if getattr(c, k)]
    if len(given) != 1:
        raise RecipeError(
            f"{where}: ppo: set exactly one of ppo.reward_run (a reward run directory), ppo.reward_model "
            f"(a local sequence-classification model) or ppo.reward_function (module:function)"
            + (f"; got {', '.join(given)}" if given else "")
        )
    if c.value == "reward" and not c.reward_run:
        raise RecipeError(
            f"{where}: ppo.value: 'reward' initialises the value model from ppo.reward_run; set it"
        )
    if r.lora.dropout:
        raise RecipeError(
            f"{where}: lora.dropout: PPO needs 0 (the ratio of new to old log-probs must compare the same "
            f"forward pass; dropout makes it noisy), got {r.lora.dropout}"
        )
    if r.label_smoothing or r.reference != "adapter_off":
        raise RecipeError(f"{where}: label_smoothing / reference: not used by method 'ppo'; remove them")
    if c.minibatches > r.train.per_device_batch_size * r.train.gradient_accumulation_steps:
        raise RecipeError(
            f"{where}: ppo.minibatches: {c.minibatches} is more than the prompts per rollout batch per process "
            f"(train.per_device_batch_size x gradient_accumulation_steps = "
            f"{r.train.per_device_batch_size * r.train.gradient_accumulation_steps})"
        )
    for key in ("desirable_weight", "undesirable_weight"):
        if getattr(r, key) != 1.0:
            raise RecipeError(f"{where}: {key}: applies to kto only, not 'ppo'")
    if r.data.unpair:
        raise RecipeError(f"{where}: data.unpair: applies to kto only, not 'ppo' (it reads prompts alone)")
    check_sections(r, where)
    if c.reward_function:
        from align import rewards

        rewards.resolve(c.reward_function, f"{where}: ppo.reward_function")


@dataclass
class PPOMethod:
    beta: float
    cfg: Any  # align.recipe.PPOConfig
    batch_kind: ClassVar[str] = "prompts"
    needs_reference: ClassVar[bool] = True

    @property
    def value_mode(self) -> str:
        if self.cfg.value != "auto":
            return self.cfg.value
        return "reward" if self.cfg.reward_run else "fresh"

    @property
    def updates_per_step(self) -> int:
        return self.cfg.epochs * self.cfg.minibatches

    def manifest(self) -> dict[str, Any]:
        return {
            "objective": "ppo",
            "normalisation": "token mean over each minibatch's real response tokens, per process",
            "paper": "Schulman et al. 2017 (clipped surrogate); Ziegler et al. 2019 (KL penalty); "
            "Huang et al. 2024 (N+ implementation details: defaults)",
            "beta": self.beta,
            "value_model": self.value_mode,
            **asdict(self.cfg),
        }


class PPOModule(nn.Module):
    """The trainable roles: `forward` is one training forward (policy log-probs and entropy, and
    values) so DDP sees one forward per backward. Scoring helpers run without grad."""

    def __init__(
        self,
        peft_model,
        value_head: ScalarHead,
        value_adapter: str,
        temperature: float,
        chunk: int,
        entropy_grad: bool = True,
    ):
        super().__init__()
        self.entropy_grad = entropy_grad  # False without an entropy bonus: the entropy is a metric
        self.model, self.value_head = peft_model, value_head
        self.value_adapter, self.temperature, self.chunk = value_adapter, temperature, chunk
        self.lm_head = peft_model.get_base_model().get_output_embeddings()

    def _hidden(self, adapter, ids, att, pos):
        with use_adapter(self.model, adapter):
            return backbone_hidden(self.model, ids, att, pos)

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

    def _values(self, pol_pred, ids, att, pos, tr):
        if self.value_adapter == POLICY:  # value head on the policy's own hidden states
            return self.value_head(pol_pred)
        return self.value_head(self._hidden(self.value_adapter, ids, att, pos)[:, -tr - 1 : -1])

    def forward(self, input_ids, attention_mask, position_ids, response_ids):
        logp, ent, pred = self._stats(
            self._hidden(POLICY, input_ids, attention_mask, position_ids), response_ids
        )
        values = self._values(pred, input_ids, attention_mask, position_ids, response_ids.shape[1])
        return logp, ent, values

    @torch.no_grad()
    def score(self, rollout: Rollout, reward) -> Scored:
        ids, att, pos = rollout.sequences()
        logp, ent, pred = self._stats(self._hidden(POLICY, ids, att, pos), rollout.response_ids)
        values = self._values(pred, ids, att, pos, rollout.response_ids.shape[1])
        ref_logp, _, _ = self._stats(self._hidden(None, ids, att, pos), rollout.response_ids)
        return Scored(logp, ref_logp, values, ent, reward(rollout, ids, att, pos))


def build_roles(r, method: PPOMethod, peft_model, where: str) -> tuple[ScalarHead, str, Any]:
    """Add the value and reward adapters beside the policy; returns (value head, value adapter name,
    reward source). The policy and value adapters train; the reward adapter and head are frozen."""
    c = r.ppo
    hidden = peft_model.get_base_model().config.hidden_size
    reward_dir = reward_head = None
    if c.reward_run:
        reward_dir, reward_recipe = read_reward_run(c.reward_run, where)
        check_same_base(reward_recipe, r.model.name, where, c.reward_run)
        add_adapter(peft_model, REWARD, reward_dir, None)
        reward_head = ScalarHead.load(reward_dir / "score_head.safetensors")
    mode = method.value_mode
    if mode == "shared":
        value_adapter, head = POLICY, ScalarHead(hidden, r.seed + 1)
    else:
        value_adapter = VALUE
        add_adapter(peft_model, VALUE, reward_dir if mode == "reward" else None, r.lora)
        head = (
            ScalarHead.load(reward_dir / "score_head.safetensors")
            if mode == "reward"
            else ScalarHead(hidden, r.seed + 1)
        )
    set_trainable(peft_model, [POLICY] if value_adapter == POLICY else [POLICY, VALUE])
    return head, value_adapter, (reward_head, c)


class RewardSource:
    """The score of each response: the reward adapter + head, a local model, or a function."""

    def __init__(self, peft_model, reward_head, cfg, tokenizer, device) -> None:
        self.tok, self.cfg = tokenizer, cfg
        self.scorer = self.external = self.fn = None
        if reward_head is not None:
            self.scorer = RewardScorer(
                peft_model, reward_head.to(device).requires_grad_(False), adapter=REWARD
            )
        elif cfg.reward_model:
            self.external = ExternalRewardModel(cfg.reward_model, device)
        else:
            from align import rewards

            self.fn = rewards.resolve(cfg.reward_function)

    def texts(self, rollout: Rollout) -> tuple[list[str], list[str], list[list[int]]]:
        lens = rollout.response_len.tolist()
        plens = rollout.prompt_len.tolist()
        resp_ids = [row[:n] for row, n in zip(rollout.response_ids.tolist(), lens)]
        prompts = [
            self.tok.decode(row[len(row) - n :], skip_special_tokens=True)
            for row, n in zip(rollout.prompt_ids.tolist(), plens)
        ]
        responses = [self.tok.decode(ids, skip_special_tokens=True) for ids in resp_ids]
        return prompts, responses, resp_ids

    def __call__(self, rollout: Rollout, ids, att, pos) -> torch.Tensor:
        if self.scorer is not None:
            return self.scorer(ids, att, pos).float()
        prompts, responses, resp_ids = self.texts(rollout)
        if self.external is not None:
            convs = [
                [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
                for p, a in zip(prompts, responses)
            ]
            return self.external(convs).to(ids.device)
        from align import rewards

        return torch.tensor(rewards.call(self.fn, prompts, responses, resp_ids), device=ids.device)


class PPOPhase:
    """The loop's rollout phase for PPO, its training step, its evaluation and its extra state."""

    def __init__(
        self,
        *,
        r,
        method: PPOMethod,
        accelerator,
        model,
        module: PPOModule,
        reward: RewardSource,
        tokenizer,
        prompts,
        eval_prompts,
    ):
        self.r, self.c, self.method = r, r.ppo, method
        self.acc, self.model, self.module, self.reward = accelerator, model, module, reward
        self.prompts, self.eval_prompts = prompts, eval_prompts
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.kl = KLController(method.beta, self.c.kl_target, self.c.kl_horizon)
        self.sampling = Sampling(self.c.max_new_tokens, self.c.temperature, self.c.top_k, self.c.top_p)
        self.rollouts = 0  # seeds each rollout's generator: resuming at step k samples what step k would
        self.micro = r.train.per_device_batch_size

    def _generator(self, *salt: int, device=None) -> torch.Generator:
        """A generator seeded from (recipe seed, salt, rank) only: the same numbers on every run and
        after a resume (Python's `hash` of strings is salted per process, so it is not used)."""
        import numpy as np

        seed = np.random.SeedSequence([self.r.seed, *salt, self.acc.process_index]).generate_state(1)[0]
        g = torch.Generator(device=device or self.acc.device)
        return g.manual_seed(int(seed))

    def _rollout(self, prompts: list[list[int]], generator) -> Rollout:
        self.module.eval()
        with use_adapter(self.module.model, POLICY):
            return sample(self.module.model, prompts, self.sampling, self.eos, self.pad, generator)

    def __call__(self, micro_idx: list[list[int]]) -> Phase:
        t0 = time.perf_counter()
        prompts = [self.prompts[i]["prompt_ids"] for idx in micro_idx for i in idx]
        step = self.rollouts
        self.rollouts += 1
        rollout = self._rollout(prompts, self._generator(0, step))
        t1 = time.perf_counter()
        scored = self.module.score(rollout, self.reward)
        beta = self.kl.value
        rewards, score, kl = shape_rewards(rollout, scored, beta, self.c)
        adv, ret, ev = advantages(rollout, scored, rewards, self.c)
        batch = to_batch(rollout, scored, adv, ret)
        mean_kl = self.acc.reduce(kl["kl_ref"].mean().detach(), reduction="mean")
        self.kl.update(float(mean_kl), len(prompts) * self.acc.num_processes)
        g = self._generator(1, step, device="cpu")
        updates = [
            Update(micros, rows)
            for micros, rows in minibatch_updates(batch, self.c.epochs, self.c.minibatches, self.micro, g)
        ]
        self.module.train()
        t2 = time.perf_counter()
        metrics = row_metrics(rollout, scored, score, kl, ev, beta)
        n = len(prompts)
        metrics["time/rollout_s"] = torch.full((n,), t1 - t0)
        metrics["time/scoring_s"] = torch.full((n,), t2 - t1)
        out = ObjectiveOutput(
            loss=torch.full((n,), float("nan")), metrics={k: v.float().cpu() for k, v in metrics.items()}
        )
        return Phase(updates, [out])

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

    # -- held-out prompts: sample (seeded the same way every time), score, KL to the reference --
    def eval_step(self, idx_batch, training: bool) -> ObjectiveOutput:
        idx = idx_batch.idx
        rollout = self._rollout([self.eval_prompts[i]["prompt_ids"] for i in idx], self._generator(2, idx[0]))
        scored = self.module.score(rollout, self.reward)
        _, score, kl = shape_rewards(rollout, scored, self.kl.value, self.c)
        return ObjectiveOutput(
            loss=-(scored.score.float() - self.kl.value * kl["kl_ref"]),
            metrics={
                "score": scored.score.float(),
                **kl,
                "response_length": rollout.response_len.float(),
                "eos": rollout.ended.float(),
            },
        )

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
        self.module.value_head.load_state_dict(
            {k[11:]: v for k, v in t.items() if k.startswith("value_head.")}
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


@dataclass
class PromptIndices:
    """A held-out batch for `align.loop.evaluate`: just which prompts (sampling happens in the step)."""

    idx: list[int]

    def to(self, device) -> PromptIndices:
        return self


def unique_prompts(examples: list[dict]) -> list[dict]:
    """One example per distinct prompt (pairwise data repeats prompts), in order."""
    seen, out = set(), []
    for ex in examples:
        key = tuple(ex["prompt_ids"])
        if key not in seen:
            seen.add(key)
            out.append({"prompt_ids": ex["prompt_ids"], "origin": ex.get("origin", ""), "index": len(out)})
    return out
