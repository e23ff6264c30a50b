"""Optional rollout through vLLM (recipe `ppo.backend: vllm` / `online.backend: vllm`).

Where users outgrow the CPU rollout: vLLM samples with the frozen base it loaded once from disk
and the policy's LoRA adapter, handed over as PEFT files (never merged into the base, so vLLM
never reloads the base and the training model keeps its unmerged adapter). After each optimizer
step the adapter changes; `VLLMHandover` notices this from cheap per-tensor fingerprints and
writes a new adapter directory under a new integer id, which makes vLLM load it; rollouts between
two steps (eval prompts, several rollouts per step) reuse the loaded one.

vLLM is never a dependency: it is imported inside `VLLMSampler` only, and
`align.methods.rollout_phase.check_backend` turns its absence into a recipe error before any
model loads. One process only: each accelerate rank would need its own engine (not wired). The
engine shares the trainer's GPU (`gpu_memory_utilization` 0.3 by default).

vLLM API assumed (vLLM docs 0.6.4 / 0.8.5 / latest and `vllm/entrypoints/llm.py`; untested here,
no vLLM on this machine):
`vllm.LLM(model, enable_lora=True, max_lora_rank, max_loras, dtype, seed, gpu_memory_utilization)`,
`vllm.SamplingParams(n, temperature, top_k (-1: off), top_p, max_tokens, seed, stop_token_ids,
ignore_eos)` (ignore_eos skips the model's EOS check, not `stop_token_ids`),
`vllm.inputs.TokensPrompt(prompt_token_ids=...)`, `vllm.lora.request.LoRARequest(name, int_id,
path)`, `LLM.generate(prompts, [params per prompt], lora_request=..., use_tqdm=False)` returning `RequestOutput`s in input
order whose `outputs[0]` has `token_ids`, `finish_reason` ("stop" / "length") and `stop_reason`.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from align.models.adapters import POLICY
from align.models.rollout import Rollout, Sampling, left_pad

INSTALL_HINT = (
    "the vllm rollout backend needs vLLM: `pip install vllm` on a CUDA machine "
    "(backend auto, fast and hf work without it)"
)
# LoRAConfig.__post_init__ accepts these max_lora_rank values only (vLLM >= 0.6; older: up to 64 or 256)
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def adapter_tensors(model: torch.nn.Module, adapter: str = POLICY) -> dict[str, torch.Tensor]:
    """Adapter `adapter`'s tensors with PEFT's on-disk key names (`base_model.model.<module>.lora_A.weight`),
    nothing of the base, the heads or other adapters."""
    from peft import get_peft_model_state_dict

    sd = get_peft_model_state_dict(model, adapter_name=adapter)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}


def write_adapter(model: torch.nn.Module, directory: str | Path, adapter: str = POLICY) -> Path:
    """Write the live adapter as PEFT files (adapter_config.json + adapter_model.safetensors) that
    `PeftModel.from_pretrained` and vLLM's `LoRARequest` load. Written to a temporary sibling and
    renamed, so a reader never sees half a directory; an existing `directory` is replaced."""
    from safetensors.torch import save_file

    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        save_file(
            adapter_tensors(model, adapter), str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"}
        )
        config = copy.copy(model.peft_config[adapter])  # PEFT's writer: sets become lists
        config.inference_mode = True
        config.save_pretrained(str(tmp))
        if final.exists():
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def fingerprint(model: torch.nn.Module, adapter: str = POLICY) -> tuple:
    """(name, data_ptr, version counter) of each of the adapter's parameters: changes with every
    in-place update through autograd's view of the tensor (optimizer steps, `p.add_`, `p.copy_`)
    and with replaced storage, at no device sync. Writes through `p.data` bypass the counter;
    `VLLMHandover.invalidate()` covers such code."""
    return tuple(
        (n, p.data_ptr(), p._version)
        for n, p in model.named_parameters()
        if "lora_" in n and f".{adapter}." in n
    )


class VLLMHandover:
    """The policy adapter as vLLM sees it: `current(model)` returns (lora id, directory), writing a
    new directory under a new id only when the weights changed since the last call. The previous
    directory is kept (a request may still read it), older ones are removed."""

    def __init__(self, root: str | Path, adapter: str = POLICY) -> None:
        self.root, self.adapter = Path(root), adapter
        self.lora_id = 0  # 0: nothing handed over yet (vLLM's ids start at 1)
        self._seen: tuple | None = None

    def invalidate(self) -> None:
        self._seen = None

    def current(self, model: torch.nn.Module) -> tuple[int, Path]:
        fp = fingerprint(model, self.adapter)
        if fp != self._seen or self.lora_id == 0:
            self.lora_id += 1
            write_adapter(model, self.path(self.lora_id), self.adapter)
            shutil.rmtree(self.path(self.lora_id - 2), ignore_errors=True)
            self._seen = fp
        return self.lora_id, self.path(self.lora_id)

    def path(self, lora_id: int) -> Path:
        return self.root / f"lora-{lora_id:06d}"


def vllm_rank(r: int) -> int:
    """The smallest rank vLLM accepts as `max_lora_rank` that holds an adapter of rank `r`."""
    for k in VLLM_LORA_RANKS:
        if k >= r:
            return k
    raise ValueError(f"vllm: LoRA rank {r} is above vLLM's largest ({VLLM_LORA_RANKS[-1]})")


def to_rollout(
    outputs: Sequence[Any], prompts: Sequence[Sequence[int]], eos: Sequence[int], pad: int, max_new: int
) -> Rollout:
    """vLLM's outputs as our `Rollout`: left-padded prompts, right-padded responses that end with
    the EOS token when the row stopped (vLLM may leave a stop token out of `token_ids`: put back)."""
    ids, plen = left_pad(prompts, pad)
    rows, ended = [], []
    for out in outputs:
        c = out.outputs[0]
        toks = list(c.token_ids)[:max_new]
        stopped = c.finish_reason == "stop"
        if stopped and (not toks or toks[-1] not in eos) and len(toks) < max_new:
            toks.append(c.stop_reason if isinstance(c.stop_reason, int) else eos[0])
        rows.append(toks)
        ended.append(stopped and bool(toks) and toks[-1] in eos)
    width = max(1, max(len(t) for t in rows))
    response = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, t in enumerate(rows):
        response[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
    length = torch.tensor([len(t) for t in rows], dtype=torch.long)
    return Rollout(ids, plen, response, length, torch.tensor(ended, dtype=torch.bool))


class VLLMSampler:
    """`sample` through a vLLM engine: the base loaded once from `base` (a local directory or hub
    id, the same weights the policy trains on), the live adapter handed over per call. Returns
    host tensors in `sample`'s conventions; seeds per row come from `generator`, so one recipe
    samples the same tokens twice (vLLM's kernels, not ours: not the tokens of backend hf)."""

    def __init__(
        self,
        base: str,
        lora_rank: int,
        workdir: str | Path | None = None,
        *,
        dtype: str = "auto",
        seed: int = 0,
        gpu_memory_utilization: float = 0.3,  # the trainer shares the GPU
        **engine_kwargs: Any,
    ) -> None:
        try:
            import vllm
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        self._vllm = vllm
        if workdir is None:  # outside the run directory: nothing of it is a run artefact
            workdir = tempfile.mkdtemp(prefix="align-vllm-")
            weakref.finalize(self, shutil.rmtree, workdir, True)
        self.handover = VLLMHandover(workdir)
        self.llm = vllm.LLM(
            model=base,
            enable_lora=True,
            max_lora_rank=vllm_rank(lora_rank),
            max_loras=1,
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            **engine_kwargs,
        )

    def sample(
        self,
        model: torch.nn.Module,
        prompts: Sequence[Sequence[int]],
        sampling: Sampling,
        eos_token_id: int | Sequence[int],
        pad_token_id: int,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        lora_id, path = self.handover.current(model)
        request = LoRARequest(f"policy-{lora_id}", lora_id, str(path))
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),), generator=_cpu(generator)).tolist()
        params = [
            self._vllm.SamplingParams(
                n=1,
                temperature=sampling.temperature,
                top_k=sampling.top_k or -1,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                seed=s,
                stop_token_ids=eos,
                ignore_eos=True,  # stop at our EOS ids only, not also at generation_config's
            )
            for s in seeds
        ]
        inputs = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outputs = self.llm.generate(inputs, params, lora_request=request, use_tqdm=False)
        return to_rollout(outputs, prompts, eos, pad_token_id, sampling.max_new_tokens)


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """A CPU generator drawn from `generator` (seeds are drawn on the host, whatever its device)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)
