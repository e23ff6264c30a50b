"""What an eval compares: the policy of a run directory, or the run's base model alone (baseline).

A run directory is read, never written: its recipe.yaml names the base model (and, for the tiny
test model, the seed that fixes its weights), adapter/ holds the LoRA adapter, manifest.json the
method and objective. The policy is `PeftModel.from_pretrained(base, run_dir/adapter)`; the
baseline is the same base with no adapter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from align.data.tokenize import CHATML
from align.recipe import ModelConfig, Recipe
from align.util.errors import AlignError
from align.util.files import file_sha256

BASE_PREFIX = "base:"


class RunDirError(AlignError):
    """A path given as a run directory is not one (no recipe.yaml or adapter)."""


@dataclass(frozen=True)
class ModelRef:
    """One model under evaluation: a label for tables, how to load it, and what fixes its weights."""

    label: str
    base: ModelConfig
    seed: int = 0
    adapter: Path | None = None
    chat_template: str | None = None  # None: the tokenizer's own
    run_dir: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_baseline(self) -> bool:
        return self.adapter is None

    def identity(self) -> dict[str, Any]:
        """What must match for cached answers to belong to this model (checked per eval dir)."""
        out: dict[str, Any] = {"base": self.base.name, "revision": self.base.revision}
        if self.base.name == "tiny-smollm2":
            out["seed"] = self.seed  # its weights are drawn from the recipe's seed
        if self.adapter is not None:
            out["adapter_sha256"] = file_sha256(self.adapter / "adapter_model.safetensors")
        if self.base.adapter is not None:  # the earlier runs its base starts from (model.adapter)
            from align.models.earlier_run import resolve_chain

            chain = resolve_chain(self.base.name, self.base.revision, self.seed, self.base.adapter)
            out["start_from"] = [link.sha256 for link in chain]
            out["start_mode"] = self.base.adapter_mode
        if self.chat_template is not None:
            out["chat_template_sha256"] = hashlib.sha256(self.chat_template.encode()).hexdigest()[:16]
        return out


def adapter_dir(run_dir: Path) -> Path:
    """`run_dir/adapter` (what align writes), or the run dir itself holding PEFT's files."""
    for candidate in (run_dir / "adapter", run_dir):
        if (candidate / "adapter_config.json").is_file() and (
            candidate / "adapter_model.safetensors"
        ).is_file():
            return candidate
    raise RunDirError(
        f"{run_dir}: no finished adapter (adapter/adapter_model.safetensors + adapter_config.json); "
        "is the run finished? (`align train RECIPE --resume` completes an interrupted one)"
    )


def read_recipe(run_dir: Path) -> Recipe:
    from align.methods import load_recipe

    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory: no recipe.yaml")
    return load_recipe(path)


def read_json(path: Path) -> dict[str, Any]:
    """A run's manifest.json / summary.json; absent is empty, unreadable is a clear error."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return data


def describe_run(run_dir: str | Path, label: str | None = None) -> ModelRef:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    recipe = read_recipe(run_dir)
    adapter = adapter_dir(run_dir)
    manifest = read_json(run_dir / "manifest.json")
    spec = recipe.model
    if spec.dtype == "auto":  # the dtype the run trained its base in (float32 if unrecorded)
        spec = replace(spec, dtype=manifest.get("precision", {}).get("base_weights", "float32"))
    template = recipe.data.chat_template
    template = None if template == "auto" else CHATML if template == "chatml" else template
    return ModelRef(
        label=label or run_dir.name,
        base=spec,
        seed=recipe.seed,
        adapter=adapter,
        chat_template=template,
        run_dir=run_dir,
        manifest=manifest,
    )


def baseline_of(ref: ModelRef) -> ModelRef:
    """The run's base model without its adapter (the same weights its reference was)."""
    label = BASE_PREFIX + ref.base.name
    if ref.base.adapter is not None:  # the earlier model the run started from
        label += "+" + Path(ref.base.adapter).name
    if ref.base.name == "tiny-smollm2" and ref.seed != 0:
        label += f"@seed{ref.seed}"
    # a run that continued an earlier adapter started from (and is referenced to) the whole chain merged
    base = replace(ref.base, adapter_mode="merge")
    return ModelRef(label=label, base=base, seed=ref.seed, chat_template=ref.chat_template)


def unique_labels(refs: list[ModelRef]) -> list[ModelRef]:
    """Run dirs with the same name (sweeps/a/dpo, sweeps/b/dpo) get their parent's name too."""
    names = [r.label for r in refs]
    out = []
    for r in refs:
        if names.count(r.label) > 1 and r.run_dir is not None:
            r = replace(r, label=f"{r.run_dir.parent.name}/{r.run_dir.name}")
        out.append(r)
    labels = [r.label for r in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise RunDirError(f"several run directories would be labelled {dupes[0]!r}; rename one")
    return out


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(ref: ModelRef):
    """(model in eval mode on the device, tokenizer); the adapter loaded with PEFT when present."""
    from align.models.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(ref.base)
    model = load_model(ref.base, seed=ref.seed)
    if ref.adapter is not None:
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():  # peft probes a deprecated transformers property
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            model = PeftModel.from_pretrained(model, str(ref.adapter))
            if ref.base.adapter_mode == "continue":  # its reference: the frozen earlier adapter
                from align.models.adapters import REFERENCE
                from align.models.earlier_run import resolve_chain

                chain = resolve_chain(ref.base.name, ref.base.revision, ref.seed, ref.base.adapter)
                model.load_adapter(str(chain[-1].path), adapter_name=REFERENCE, is_trainable=False)
    return model.to(device()).eval(), tokenizer
