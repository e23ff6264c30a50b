"""Start from an earlier run: `model.adapter` merges its adapter into the frozen base at load.

A user whose SFT model is a LoRA adapter wants DPO (or KTO, a reward model, PPO, ...) on top of
it with the SFT model as the reference. The earlier adapter is merged into the base weights in
float32, before any cast to the run's dtype, so the base — and hence the reference (every adapter
off) — *is* the earlier model; the new LoRA trains on top of it. An earlier run that itself
started from another is followed back: the chain is merged oldest first.

Everything that loads a run's base (training, evals, the reference cache key, reward runs) goes
through `align.models.load.load_model`, which calls `merge_chain`, so a run and its evals always
see the same weights. Checks (`resolve_chain`) run before any model loads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from align.util.errors import RecipeError
from align.util.files import file_sha256
from align.util.run_recipe import read_run_recipe

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
REFERENCE = "reference"  # adapter name of a `continue` run's frozen copy of the earlier adapter
MAX_CHAIN = 16  # a longer chain is almost surely a cycle of run dirs naming each other


@dataclass(frozen=True)
class EarlierAdapter:
    """One link: the PEFT adapter directory, and the align run that wrote it (if it is one)."""

    path: Path
    run_dir: Path | None
    method: str | None
    sha256: str  # of the adapter weights: what identifies the link in manifests and cache keys

    def manifest(self) -> dict[str, Any]:
        return {
            "adapter": str(self.path),
            "run": str(self.run_dir) if self.run_dir else None,
            "method": self.method,
            "adapter_sha256": self.sha256,
        }


def resolve_chain(
    name: str, revision: str | None, seed: int, adapter: str | None, where: str = "recipe"
) -> list[EarlierAdapter]:
    """The adapters to merge into base `name`, oldest first ([] when `adapter` is None).

    `adapter` is an align run directory (its `adapter/` is used, and its own `model.adapter` is
    followed) or a plain PEFT adapter directory. Raises RecipeError, before anything loads, for a
    missing directory, an unfinished run, a reward run (it scores replies; it is no policy), a run
    or adapter of another base, or (the tiny test model) another seed."""
    chain: list[EarlierAdapter] = []
    seen: set[Path] = set()
    key = f"{where}: model.adapter"
    while adapter is not None:
        root = Path(adapter).expanduser().resolve()
        if root in seen or len(chain) >= MAX_CHAIN:
            raise RecipeError(f"{key}: {adapter} leads back to itself (runs that start from each other)")
        seen.add(root)
        if not root.is_dir():
            raise RecipeError(
                f"{key}: {adapter} does not exist (a run directory or a PEFT adapter directory)"
            )
        if (root / "recipe.yaml").is_file():
            link, adapter = _run_link(root, name, revision, seed, key)
        elif (root / ADAPTER_CONFIG).is_file():
            link, adapter = _plain_link(root, name, key), None
        else:
            raise RecipeError(
                f"{key}: {root} is neither an align run directory (recipe.yaml) nor a PEFT adapter "
                f"directory ({ADAPTER_CONFIG})"
            )
        chain.append(link)
    return chain[::-1]


def _run_link(
    root: Path, name: str, revision: str | None, seed: int, key: str
) -> tuple[EarlierAdapter, str | None]:
    recipe = read_run_recipe(root, RecipeError, key)
    method = recipe.get("method")
    if method == "reward":
        raise RecipeError(
            f"{key}: {root} is a reward model run: its adapter scores replies and is no policy to start "
            "from (give it as ppo.reward_run or online.reward_run)"
        )
    model = recipe.get("model") or {}
    if model.get("name") != name or model.get("revision") != revision:
        raise RecipeError(
            f"{key}: {root} was trained on base model {model.get('name')!r}"
            f"{' @ ' + str(model.get('revision')) if model.get('revision') else ''}, this run uses {name!r}"
            f"{' @ ' + revision if revision else ''}; an adapter works only on its own base"
        )
    if name == "tiny-smollm2" and recipe.get("seed", 0) != seed:
        raise RecipeError(
            f"{key}: {root} trained on tiny-smollm2 drawn with seed {recipe.get('seed', 0)}, this run's "
            f"seed is {seed}: the tiny base's weights come from the seed, so set seed: {recipe.get('seed', 0)}"
        )
    adapter_dir = root / "adapter"
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (adapter_dir / n).is_file()]
    if missing:
        raise RecipeError(
            f"{key}: {root} has no finished adapter (missing adapter/{', adapter/'.join(missing)}); "
            f"finish it first: align train {root / 'recipe.yaml'} --resume"
        )
    link = EarlierAdapter(adapter_dir, root, method, file_sha256(adapter_dir / ADAPTER_WEIGHTS))
    return link, model.get("adapter")


def _plain_link(root: Path, name: str, key: str) -> EarlierAdapter:
    import json

    if not (root / ADAPTER_WEIGHTS).is_file():
        raise RecipeError(f"{key}: {root} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS} (safetensors only)")
    try:
        config = json.loads((root / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise RecipeError(f"{key}: cannot read {root / ADAPTER_CONFIG} ({e})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise RecipeError(f"{key}: {root} is a {config.get('peft_type')} adapter; only LoRA adapters merge")
    recorded = config.get("base_model_name_or_path")
    if recorded and not _same_base(recorded, name):
        raise RecipeError(
            f"{key}: {root} was trained on base model {recorded!r}, this run uses {name!r}; an adapter "
            "works only on its own base"
        )
    return EarlierAdapter(root, None, None, file_sha256(root / ADAPTER_WEIGHTS))


def _same_base(recorded: str, name: str) -> bool:
    """Whether an adapter config's base (a hub id or the path it was loaded from) is `name`."""
    from align.models.embedded import EMBEDDED_HUB_ID, EMBEDDED_NAME, embedded_model_dir

    def norm(x: str) -> str:
        if x == EMBEDDED_NAME:
            return EMBEDDED_HUB_ID.lower()
        p = Path(x).expanduser()
        if p.is_dir() and p.resolve() == embedded_model_dir().resolve():
            return EMBEDDED_HUB_ID.lower()
        return str(p.resolve()) if p.is_dir() else x.lower()

    return norm(recorded) == norm(name)


def merged_links(chain: list[EarlierAdapter], mode: str) -> list[EarlierAdapter]:
    """The links merged into the base: all of them, or (`continue`) all but the last, which the
    run keeps training as its own adapter."""
    return chain if mode == "merge" else chain[:-1]


def check_continue(chain: list[EarlierAdapter], lora, where: str = "recipe") -> None:
    """`adapter_mode: continue` trains the earlier adapter itself: its LoRA shape must be the
    recipe's (r, alpha, target modules), or the run would silently train another shape."""
    import json

    key = f"{where}: model.adapter_mode: continue"
    if not chain:
        raise RecipeError(f"{key} needs model.adapter (the run whose adapter keeps training)")
    config = json.loads((chain[-1].path / ADAPTER_CONFIG).read_text())
    theirs = {"r": config.get("r"), "alpha": config.get("lora_alpha")}
    ours = {"r": lora.r, "alpha": lora.alpha}
    if theirs != ours:
        raise RecipeError(
            f"{key}: {chain[-1].path} is a LoRA of r {theirs['r']}, alpha {theirs['alpha']}; the recipe "
            f"says r {ours['r']}, alpha {ours['alpha']}: set lora.r and lora.alpha to the earlier adapter's"
        )


def continue_from(peft_model: nn.Module, link: EarlierAdapter) -> None:
    """Load the earlier adapter's weights into the trainable `default` adapter, and add a frozen
    copy of it as the `reference` adapter (align.models.adapters.REFERENCE): the reference is the
    earlier model, and the policy starts equal to it."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        result = set_peft_model_state_dict(peft_model, load_file(link.path / ADAPTER_WEIGHTS))
        peft_model.load_adapter(str(link.path), adapter_name=REFERENCE, is_trainable=False)
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing:
        raise RecipeError(
            f"model.adapter_mode: continue: {link.path} has LoRA weights the recipe's "
            f"lora.target_modules do not create ({missing[0]}, ...): use the earlier run's target modules"
        )


def merge_chain(base: nn.Module, chain: list[EarlierAdapter]) -> nn.Module:
    """Merge each adapter into `base` (float32 weights expected), oldest first: W += s·B·A exactly
    as PEFT's `merge_and_unload` computes it; returns the plain base module."""
    from peft import PeftModel

    for link in chain:
        with warnings.catch_warnings():  # peft probes a deprecated transformers property
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            base = PeftModel.from_pretrained(base, str(link.path)).merge_and_unload()
    return base
