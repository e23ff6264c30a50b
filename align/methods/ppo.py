"""RLHF-PPO on one frozen base: policy, value, reward and reference as adapters of one model.

Per loop step (align/engine/loop.py calls `PPOPhase` as its rollout phase):
  1. rollout: sample responses to this step's prompts with the policy (align/models/rollout.py);
  2. scoring: policy and reference log-probs, values, the reward model's score (or a function's);
  3. rewards with the KL penalty, GAE advantages (align/methods/experience.py, align/objectives/);
  4. `ppo.epochs` epochs of `ppo.minibatches` optimizer updates over the batch (the loop runs them).

Departures from the N+ reference implementation (Huang et al. 2024), deliberate:
  * the value model is an adapter + head on the policy's frozen base (initialised from the
    reward run's adapter and head), not a second full model;
  * advantages are whitened per process (as the reference does) but the adaptive KL controller
    sees the KL averaged over every process, so all ranks share one β.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from align.engine.checkpoint import save_adapter
from align.engine.sharding import fsdp_forward_methods
from align.engine.wired import Wired, optimizer_for
from align.methods.base import check_sections
from align.methods.ppo_phase import FSDP_METHODS, PPOModule, PPOPhase, rows_pack
from align.methods.rollout_phase import check_backend, prompt_view
from align.models.adapters import POLICY, REWARD, VALUE, ScalarHead, add_adapter, set_trainable  # noqa: F401
from align.models.reward_model import RewardSource, check_same_base, read_reward_run
from align.util.errors import RecipeError

if TYPE_CHECKING:
    from align.data.prepare import PreparedData
    from align.recipe import Recipe

log = logging.getLogger("align.ppo")


def check_recipe(r, where: str) -> None:
    """Everything about a PPO recipe that needs no model."""
    c = r.ppo
    check_reward_source(c, "ppo", where)
    check_backend(r, "ppo", where)
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

    def data_view(self, data: PreparedData) -> PreparedData:
        """PPO samples its own completions: the distinct prompts of the source (of any format)."""
        return prompt_view(data, self.cfg.eval_prompts)

    def wire(self, r, data, tokenizer, accelerator, peft_model, total, plan, model_spec) -> Wired:
        """A rollout phase per step, then its minibatch updates."""
        head, value_adapter, (reward_head, _) = build_roles(r, self, peft_model, r.output_dir)
        pack = rows_pack(r)
        module = PPOModule(
            peft_model,
            head,
            value_adapter,
            r.ppo.temperature,
            r.train.chunk_tokens,
            r.ppo.entropy_coef > 0,
            pack=pack,
        )
        optimizer, scheduler = optimizer_for(r, module, total * self.updates_per_step)
        model, optimizer = accelerator.prepare(module, optimizer)
        fsdp_forward_methods(model, FSDP_METHODS)
        reward = RewardSource(peft_model, reward_head, r.ppo, tokenizer, accelerator.device, pack)
        phase = PPOPhase(
            r=r,
            method=self,
            accelerator=accelerator,
            model=model,
            module=accelerator.unwrap_model(model),
            reward=reward,
            tokenizer=tokenizer,
            prompts=data.train,
            eval_prompts=data.eval,
        )
        adapters = [POLICY] if value_adapter == POLICY else [POLICY, VALUE]
        return phase.wired(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            save_final=lambda run_dir: save_adapter(
                run_dir, peft_model, accelerator, extra_files=phase.save_files(), adapters=adapters
            ),
        )

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


@dataclass(frozen=True)
class PPOFactory:
    def check_recipe(self, r: Recipe, where: str) -> None:
        check_recipe(r, where)

    def build(self, r: Recipe) -> PPOMethod:
        return PPOMethod(r.beta, r.ppo)


def build_roles(r, method: PPOMethod, peft_model, where: str) -> tuple[ScalarHead, str, Any]:
    """Add the value and reward adapters beside the policy; returns (value head, value adapter name,
    reward source). The policy and value adapters train; the reward adapter and head are frozen."""
    c = r.ppo
    hidden = peft_model.get_base_model().config.hidden_size
    reward_dir, reward_head = add_reward_role(r, c, peft_model, where)
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


def add_reward_role(r, cfg, peft_model, where: str, section: str = "ppo") -> tuple[Any, ScalarHead | None]:
    """With `cfg.reward_run` (ppo: or online:), its adapter beside the policy (frozen) and its head:
    (adapter directory, head); (None, None) for a reward model or function."""
    if not cfg.reward_run:
        return None, None
    reward_dir, reward_recipe = read_reward_run(cfg.reward_run, where, f"{section}.reward_run")
    check_same_base(reward_recipe, r.model.name, where, cfg.reward_run, section, r.model.adapter, r.seed)
    add_adapter(peft_model, REWARD, reward_dir, None)
    return reward_dir, ScalarHead.load(reward_dir / "score_head.safetensors")


def check_reward_source(c, section: str, where: str) -> None:
    """Exactly one of reward_run / reward_model / reward_function in `section` (ppo, online)."""
    given = [k for k in ("reward_run", "reward_model", "reward_function") if getattr(c, k)]
    if len(given) != 1:
        raise RecipeError(
            f"{where}: {section}: set exactly one of {section}.reward_run (a reward run directory), "
            f"{section}.reward_model (a local sequence-classification model) or {section}.reward_function "
            f"(module:function)" + (f"; got {', '.join(given)}" if given else "")
        )
    if c.reward_function:
        from align import rewards

        rewards.resolve(c.reward_function, f"{where}: {section}.reward_function")
