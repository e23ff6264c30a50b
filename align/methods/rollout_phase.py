"""What every sampling method's loop phase shares (PPO, RLOO, GRPO): seeded rollouts with the
policy adapter, the held-out greedy accuracy, and the rollout counter that a checkpoint keeps.

Seeds come from (recipe seed, salt, rank) only, so a resumed run samples at step k what an
uninterrupted one would, and two runs of one recipe sample the same tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from align.methods.accuracy import greedy_accuracy
from align.models.adapters import POLICY, use_adapter
from align.models.rollout import Rollout, Sampling, sample


class RolloutPhase:
    """Base of a method's rollout phase: `cfg` is its recipe section (sampling keys, eval_prompts)."""

    def __init__(self, *, r, cfg, accelerator, model, module, reward, tokenizer, prompts, eval_prompts):
        self.r, self.c = r, cfg
        self.acc, self.model, self.module, self.reward = accelerator, model, module, reward
        self.prompts, self.eval_prompts = prompts, eval_prompts
        self.tok, self.eos, self.pad = tokenizer, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.sampling = Sampling(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
        self.rollouts = 0  # seeds each rollout's generator: resuming at step k samples what step k would

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

    def _accuracy(self, prompts: list[list[int]], answers: list[str | None] | None) -> dict[str, Any]:
        """{"accuracy": per-row greedy accuracy} when every prompt has a checkable answer, else {}."""
        if answers is None or any(a is None for a in answers):
            return {}
        self.module.eval()
        with use_adapter(self.module.model, POLICY):
            acc = greedy_accuracy(self.module.model, prompts, answers, self.tok, self.c.max_new_tokens)
        return {"accuracy": acc}
