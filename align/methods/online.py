"""RLOO and GRPO: k sampled completions per prompt, advantages from the group, no value model.

Same rollout, reward sources (a reward run's adapter + head, a local reward model, a function
such as `align.rewards:exact_answer`), reference (adapters off), loop, checkpoints and run
directory as PPO (align/methods/ppo.py); the objectives are align/objectives/rloo.py and grpo.py.
Per loop step (align/methods/online_phase.py):
  1. rollout: `online.group_size` completions of each of this step's prompts;
  2. score them (and the reference's log-probs when β > 0; the policy's when the update is not
     on-policy: several epochs or minibatches, or RLOO's KL in the reward);
  3. advantages within each prompt's group (RLOO leave-one-out, GRPO mean/std);
  4. `online.epochs` x `online.minibatches` optimizer updates over the rollout batch.

Groups never span processes (each process samples all k completions of its prompts), so group
statistics need no communication; GRPO's `scale: batch` and RLOO's `whiten` use the process's
rollout batch (TRL gathers across processes first: with one process the two agree).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from align.engine.checkpoint import save_adapter
from align.engine.sharding import fsdp_forward_methods
from align.engine.wired import Wired, optimizer_for
from align.methods.base import check_sections
from align.methods.online_phase import OnlinePhase
from align.methods.ppo import add_reward_role, check_reward_source
from align.methods.ppo_phase import FSDP_METHODS, PPOModule, rows_pack
from align.methods.rollout_phase import check_backend, prompt_view
from align.models.adapters import POLICY, set_trainable
from align.models.reward_model import RewardSource
from align.objectives.grpo import GRPO_NORMALISATIONS, GRPO_SCALES
from align.objectives.rloo import RLOO_RATIOS, RLOO_REDUCTIONS
from align.util.errors import RecipeError

if TYPE_CHECKING:
    from align.data.prepare import PreparedData
    from align.recipe import Recipe

PAPERS = {
    "rloo": "Ahmadian et al. 2024 (RLOO, arXiv 2402.14740); Kool et al. 2019 (leave-one-out baseline)",
    "grpo": "Shao et al. 2024 (GRPO, arXiv 2402.03300); Yu et al. 2025 (DAPO); Liu et al. 2025 (Dr. GRPO)",
}


def check_recipe(r: Recipe, where: str) -> None:
    """Everything about an RLOO / GRPO recipe that needs no model."""
    c = r.online
    check_reward_source(c, "online", where)
    check_backend(r, "online", where)
    if r.lora.dropout:
        raise RecipeError(
            f"{where}: lora.dropout: {r.method} needs 0 (the ratio of new to old log-probs must compare "
            f"the same forward pass; dropout makes it noisy), got {r.lora.dropout}"
        )
    if r.label_smoothing or r.reference != "adapter_off":
        raise RecipeError(
            f"{where}: label_smoothing / reference: not used by method '{r.method}'; remove them"
        )
    for key in ("desirable_weight", "undesirable_weight"):
        if getattr(r, key) != 1.0:
            raise RecipeError(f"{where}: {key}: applies to kto only, not '{r.method}'")
    if r.data.unpair:
        raise RecipeError(
            f"{where}: data.unpair: applies to kto only, not '{r.method}' (it reads prompts alone)"
        )
    rows = r.train.per_device_batch_size * r.train.gradient_accumulation_steps * c.group_size
    if c.minibatches > rows:
        raise RecipeError(
            f"{where}: online.minibatches: {c.minibatches} is more than the completions per rollout batch per "
            f"process (train.per_device_batch_size x gradient_accumulation_steps x online.group_size = {rows})"
        )
    if r.method == "grpo" and c.clip is None:
        raise RecipeError(f"{where}: online.clip: grpo's surrogate is clipped; give ε (e.g. 0.2)")
    if c.clip is None and c.clip_high is not None:
        raise RecipeError(f"{where}: online.clip_high needs online.clip (the lower bound)")
    defaults = type(c)()
    other = ("ratio", "reduce", "whiten") if r.method == "grpo" else ("normalisation", "scale")
    for key in other:
        if getattr(c, key) != getattr(defaults, key):
            raise RecipeError(
                f"{where}: online.{key}: applies to method '{'rloo' if r.method == 'grpo' else 'grpo'}' only"
            )
    check_sections(r, where)


@dataclass
class OnlineMethod:
    name: str  # "rloo" | "grpo"
    beta: float
    cfg: Any  # align.recipe.OnlineConfig
    batch_kind: ClassVar[str] = "prompts"
    needs_reference: ClassVar[bool] = True

    @property
    def updates_per_step(self) -> int:
        return self.cfg.epochs * self.cfg.minibatches

    def data_view(self, data: PreparedData) -> PreparedData:
        """The distinct prompts of the source (of any format): completions are sampled."""
        return prompt_view(data, self.cfg.eval_prompts)

    def wire(self, r, data, tokenizer, accelerator, peft_model, total, plan, model_spec) -> Wired:
        _, reward_head = add_reward_role(r, r.online, peft_model, r.output_dir, "online")
        set_trainable(peft_model, [POLICY])
        pack = rows_pack(r)
        module = PPOModule(peft_model, None, None, r.online.temperature, r.train.chunk_tokens, False, pack)
        optimizer, scheduler = optimizer_for(r, module, total * self.updates_per_step)
        model, optimizer = accelerator.prepare(module, optimizer)
        fsdp_forward_methods(model, FSDP_METHODS)
        phase = OnlinePhase(
            method=self,
            r=r,
            accelerator=accelerator,
            model=model,
            module=accelerator.unwrap_model(model),
            reward=RewardSource(peft_model, reward_head, r.online, tokenizer, accelerator.device, pack),
            tokenizer=tokenizer,
            prompts=data.train,
            eval_prompts=data.eval,
        )
        return phase.wired(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            save_final=lambda run_dir: save_adapter(run_dir, peft_model, accelerator, adapters=[POLICY]),
        )

    def manifest(self) -> dict[str, Any]:
        c = self.cfg
        out: dict[str, Any] = {"objective": self.name, "paper": PAPERS[self.name], "beta": self.beta}
        if self.name == "grpo":
            out["normalisation_meaning"] = GRPO_NORMALISATIONS[c.normalisation]
            out["scale_meaning"] = GRPO_SCALES[c.scale]
            out["kl"] = "k3 term in the loss, weight beta (Shao et al. 2024, Eq. 4)"
            keys = ("normalisation", "scale")
        else:
            out["ratio_meaning"] = RLOO_RATIOS[c.ratio]
            out["reduce_meaning"] = RLOO_REDUCTIONS[c.reduce]
            out["kl"] = "k1 summed over the completion, subtracted from the score with weight beta"
            keys = ("ratio", "reduce", "whiten")
        drop = {"normalisation", "scale", "ratio", "reduce", "whiten"} - set(keys)
        return {**out, **{k: v for k, v in asdict(c).items() if k not in drop}}


@dataclass(frozen=True)
class OnlineFactory:
    name: str

    def check_recipe(self, r: Recipe, where: str) -> None:
        check_recipe(r, where)

    def build(self, r: Recipe) -> OnlineMethod:
        return OnlineMethod(self.name, r.beta, r.online)
