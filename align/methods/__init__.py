"""Methods: small objects that say what batch they need and how outputs become a loss.

The engine (align/engine/) knows none of this. A method declares `batch_kind` (which collator or
dataset it reads), `needs_reference`, `loss(policy, reference, batch)` and `wire(...)`, which
hands the loop a `Wired` (align/engine/wired.py); optionally `derived(metrics)` for metrics
computed from the averaged ones, `scorer(peft_model, seed)` when its model outputs are not
sequence log-probabilities (the reward model's scores), and `data_view(data)` when it reads a
view of the prepared data (PPO: the distinct prompts). One module per family:

  preference.py  dpo | cdpo | ipo | hinge | dpo_norm | rpo | apo_zero | simpo | orpo
  kto.py         kto
  reward.py      reward (Bradley-Terry)       ppo.py  ppo (+ ppo_phase.py, experience.py)
  online.py      rloo | grpo (+ online_phase.py; rollout_phase.py is shared with ppo)
  sft.py         sft (supervised fine-tuning; no reference)

The recipe (align/recipe.py) knows only the names (`METHOD_NAMES`); this registry checks each
method's own keys (`check_recipe`), and `load_recipe` reads a recipe and checks both.
"""

from __future__ import annotations

from pathlib import Path

from align.methods.kto import KTOFactory, KTOMethod
from align.methods.online import OnlineFactory
from align.methods.ppo import PPOFactory
from align.methods.preference import PairwiseFactory, PairwiseMethod
from align.methods.reward import RewardFactory, RewardMethod
from align.methods.sft import SFTFactory, SFTMethod
from align.recipe import METHOD_NAMES, Recipe, read_recipe

__all__ = [
    "METHODS",
    "KTOMethod",
    "PairwiseMethod",
    "RewardMethod",
    "SFTMethod",
    "build_method",
    "check_recipe",
    "load_recipe",
]

METHODS: dict[str, PairwiseFactory | KTOFactory | RewardFactory | PPOFactory | OnlineFactory | SFTFactory] = {
    "reward": RewardFactory(),
    "ppo": PPOFactory(),
    "rloo": OnlineFactory("rloo"),
    "grpo": OnlineFactory("grpo"),
    "kto": KTOFactory(),
    "dpo": PairwiseFactory("dpo"),
    "cdpo": PairwiseFactory("dpo", require_smoothing=True),
    "ipo": PairwiseFactory("ipo"),
    "hinge": PairwiseFactory("hinge"),
    **{name: PairwiseFactory(name) for name in ("dpo_norm", "rpo", "apo_zero", "simpo", "orpo")},
    "sft": SFTFactory(),
}
assert set(METHODS) == set(METHOD_NAMES), "align.recipe.METHOD_NAMES and the registry must agree"


def check_recipe(r: Recipe, where: str) -> None:
    """The method's own checks (keys that apply to it only, the data it reads); no model loads."""
    METHODS[r.method].check_recipe(r, where)


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe (align.recipe.read_recipe: schema, ranges, method name) and check it against
    its method: everything that can be said about a recipe before a model loads."""
    r = read_recipe(path, overrides)
    check_recipe(r, str(path) if path else "recipe")
    return r


def build_method(r: Recipe):
    return METHODS[r.method].build(r)
