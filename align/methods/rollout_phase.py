"""What every sampling method's loop phase shares (PPO, RLOO, GRPO): seeded rollouts with the
policy adapter, the held-out greedy accuracy, and the rollout counter that a checkpoint keeps.

Seeds come from (recipe seed, salt, rank) only, so a resumed run samples at step k what an
uninterrupted one would, and two runs of one recipe sample the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from align.engine.loop import Phase, Update
from align.engine.metrics import EvalSet, evaluate
from align.engine.wired import Wired
from align.methods.accuracy import greedy_accuracy
from align.methods.experience import RowBatch, minibatch_updates
from align.models.adapters import POLICY, use_adapter
from align.models.rollout import Rollout, Sampling, full_weights, sample
from align.objectives.types import ObjectiveOutput

if TYPE_CHECKING:
    from align.data.prepare import PreparedData


@dataclass
class PromptIndices:
    """A held-out batch for `align.engine.metrics.evaluate`: just which prompts (sampling happens in the step)."""

    idx: list[int]

    def to(self, device) -> PromptIndices:
        return self


def unique_prompts(examples: list[dict]) -> list[dict]:
    """One example per distinct prompt (pairwise data repeats prompts), in order; the first
    occurrence's answer (verifiable prompts) is kept."""
    seen, out = set(), []
    for ex in examples:
        key = tuple(ex["prompt_ids"])
        if key not in seen:
            seen.add(key)
            row = {"prompt_ids": ex["prompt_ids"], "origin": ex.get("origin", ""), "index": len(out)}
            if ex.get("answer") is not None:
                row["answer"] = ex["answer"]
            out.append(row)
    return out


def check_backend(r, section: str, where: str) -> None:
    """`<section>.backend` (ppo, online): `vllm` needs vLLM importable, a GPU, one process and a base
    on disk, all checked here, before any model loads."""
    import os

    from align.util.errors import RecipeError

    cfg = getattr(r, section)
    if cfg.old_logps == "sampler" and cfg.backend == "vllm":
        raise RecipeError(
            f"{where}: {section}.old_logps: 'sampler' takes the log-probs from our own sampling loop; "
            "backend 'vllm' does not hand them over (use old_logps: forward)"
        )
    if cfg.compile_decode and cfg.backend in ("hf", "vllm"):
        raise RecipeError(
            f"{where}: {section}.compile_decode compiles the fast backend's decode step; "
            f"backend {cfg.backend!r} does not run it (pick backend auto or fast, or drop compile_decode)"
        )
    if cfg.backend != "vllm":
        return
    from align.models.load import TINY_NAME
    from align.models.vllm_rollout import INSTALL_HINT, vllm_available

    key = f"{where}: {section}.backend: 'vllm'"
    if not vllm_available():
        raise RecipeError(f"{key}: vLLM is not installed; {INSTALL_HINT}")
    if r.cpu:
        raise RecipeError(f"{key} runs on a CUDA GPU; remove cpu: true or pick backend auto/fast/hf")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RecipeError(f"{key} is wired for one process only (each rank would need its own engine)")
    if r.model.name == TINY_NAME:
        raise RecipeError(f"{key}: model '{TINY_NAME}' is built in memory; vLLM loads a base from disk")


def prompt_view(data: PreparedData, eval_prompts: int) -> PreparedData:
    """What a sampling method reads: the distinct prompts of a source of any format, and at most
    `eval_prompts` of the held-out ones."""
    return replace(data, train=unique_prompts(data.train), eval=unique_prompts(data.eval)[:eval_prompts])


class RolloutPhase:
    """Base of a method's rollout phase: `cfg` is its recipe section (sampling keys, eval_prompts)."""

    def __init__(self, *, r, cfg, accelerator, model, module, reward, tokenizer, prompts, eval_prompts):
        self.r, self.c = r, cfg
        self.acc, self.model, self.module, self.reward = accelerator, model, module, reward
        self.prompts, self.eval_prompts = prompts, eval_prompts
        self.tok, self.eos, self.pad = tokenizer, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.sampling = Sampling(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
        self._sampler = None  # backend vllm: the engine, built at the first rollout
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
        if self.c.backend == "vllm":  # host tensors: moved to the trainer's device
            out = self._vllm().sample(
                self.module.model, prompts, self.sampling, self.eos, self.pad, generator
            )
            return Rollout(*(None if t is None else t.to(self.acc.device) for t in out.__dict__.values()))
        with full_weights(self.model) as sharded, use_adapter(self.module.model, POLICY):
            return sample(
                self.module.model,
                prompts,
                self.sampling,
                self.eos,
                self.pad,
                generator,
                backend="fast" if sharded else self.c.backend,
                compile=self.c.compile_decode,
                logps=self.c.old_logps == "sampler",
            )

    def _vllm(self):
        """The vLLM engine (align/models/vllm_rollout.py), built at the first rollout."""
        if self._sampler is None:
            from align.models.load import _resolve_path
            from align.models.vllm_rollout import VLLMSampler

            if self.acc.num_processes > 1:
                raise RuntimeError("rollout: backend vllm is wired for one process only")
            self._sampler = VLLMSampler(
                _resolve_path(self.r.model),
                self.r.lora.r,
                dtype=self.r.model.dtype,
                seed=self.r.seed,
                revision=self.r.model.revision,
                trust_remote_code=self.r.model.trust_remote_code,
            )
        return self._sampler

    def _updates(self, batch: RowBatch, step: int, micro: int, group: int = 1) -> list[Update]:
        """`epochs` x `minibatches` updates over the rollout batch, in a seeded row order (whole
        groups of `group` rows: `minibatch_updates`)."""
        g = self._generator(1, step, device="cpu")
        return [
            Update(micros, rows)
            for micros, rows in minibatch_updates(batch, self.c.epochs, self.c.minibatches, micro, g, group)
        ]

    @staticmethod
    def _phase(updates: list[Update], metrics: dict[str, torch.Tensor], times: tuple[float, ...]) -> Phase:
        """The loop's Phase: the updates, and the rollout's per-row metrics with its timings
        (t0 start, t1 sampled, t2 scored)."""
        t0, t1, t2 = times
        n = next(iter(metrics.values())).shape[0]
        metrics = {
            **metrics,
            "time/rollout_s": torch.full((n,), t1 - t0),
            "time/scoring_s": torch.full((n,), t2 - t1),
        }
        out = ObjectiveOutput(
            loss=torch.full((n,), float("nan")), metrics={k: v.float().cpu() for k, v in metrics.items()}
        )
        return Phase(updates, [out])

    def wired(self, *, model, optimizer, scheduler, save_final) -> Wired:
        """The loop's parts for a sampling method: this phase's step, and held-out evaluation of
        its eval prompts before and after training."""
        eval_set = EvalSet(
            len(self.eval_prompts),
            lambda idx: PromptIndices(list(idx)),
            self.eval_step,
            self.r.train.eval_batch_size,
        )
        held_out = lambda: evaluate(self.acc, model, eval_set)
        return Wired(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            collate=None,
            step_fn=self.step_fn,
            eval_fn=held_out,
            before_fn=held_out,
            save_final=save_final,
            phase=self,
            extra_state=self.extra_state,
            load_extra_state=self.load_extra_state,
        )

    def _accuracy(self, prompts: list[list[int]], answers: list[str | None] | None) -> dict[str, Any]:
        """{"accuracy": per-row greedy accuracy} when every prompt has a checkable answer, else {}."""
        if answers is None or any(a is None for a in answers):
            return {}
        self.module.eval()
        with full_weights(self.model) as sharded, use_adapter(self.module.model, POLICY):
            acc = greedy_accuracy(
                self.module.model,
                prompts,
                answers,
                self.tok,
                self.c.max_new_tokens,
                backend="fast" if sharded else self.c.backend,
            )
        return {"accuracy": acc}
