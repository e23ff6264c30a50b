"""What a push sends: a finished run's records, read back and checked, and the list of files.

The run's `adapter/` becomes the repo root (what `PeftModel.from_pretrained(base, repo_id)` reads),
with whatever the run saved there: PEFT's folder for a second adapter (a PPO run's `value/`,
loaded with `subfolder="value"`), heads (`score_head.safetensors`, `value/value_head.safetensors`)
and tokenizer files when a run saved them (it does only when it changed the tokenizer). Then the
run's records, its `evals/`, and `checkpoints/` only when asked. Files are read as they are,
except the adapter configs, whose copies name the base model by its hub id, and PEFT's own
READMEs, which give way to one model card. Nothing here writes to the run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from align.engine.checkpoint import list_checkpoints
from align.hub.card import ADAPTER_FILES, RUN_FILES, RunRecord, model_card, portable_base
from align.util.errors import PushError
from align.util.run_recipe import read_run_recipe


@dataclass(frozen=True)
class Upload:
    path_in_repo: str
    source: Path | None = None  # a run file, read as it is
    content: bytes | None = None  # built by the push (card, portable adapter config)

    def operation(self):
        from huggingface_hub import CommitOperationAdd

        return CommitOperationAdd(
            self.path_in_repo, str(self.source) if self.content is None else self.content
        )


def read_run(run_dir: Path) -> RunRecord:
    """The finished run's records; anything missing or unreadable is a PushError naming the file."""
    if not run_dir.is_dir():
        raise PushError(f"{run_dir} is not a run directory (it does not exist); nothing was uploaded")
    needed = [*RUN_FILES[:3], *(f"adapter/{name}" for name in ADAPTER_FILES)]
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing:
        unfinished = "summary.json" in missing or any(name.startswith("adapter/") for name in missing)
        hint = " (the run has not finished: `align train RECIPE --resume` completes it)" if unfinished else ""
        raise PushError(
            f"{run_dir} is not a finished run: missing {', '.join(missing)}{hint}; nothing was uploaded"
        )
    manifest, summary = _json(run_dir / "manifest.json"), _json(run_dir / "summary.json")
    recipe = read_run_recipe(run_dir, PushError, tail="; nothing was uploaded")
    total, steps = manifest.get("total_steps"), summary.get("steps")
    if isinstance(total, int) and (not isinstance(steps, int) or steps < total):
        raise PushError(
            f"{run_dir} is not a finished run: summary.json says {steps} of {total} steps "
            "(`align train RECIPE --resume` completes it); nothing was uploaded"
        )
    return RunRecord(run_dir, manifest, summary, recipe)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PushError(
            f"{path}: not readable JSON ({type(e).__name__}: {e}); nothing was uploaded"
        ) from None
    if not isinstance(data, dict):
        raise PushError(f"{path}: expected a JSON object; nothing was uploaded")
    return data


def _files(root: Path, skip_checkpoints: bool = True) -> list[Path]:
    """Files below `root`, sorted; temporary (`.tmp-*`, `.old-*`) and hidden entries skipped."""
    out = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if path.is_file() and not any(
            p.startswith(".") or (skip_checkpoints and p == "checkpoints") for p in parts
        ):
            out.append(path)
    return out


def plan_uploads(
    run: RunRecord, repo_id: str, include_checkpoints: bool = False, revision: str = "main"
) -> tuple[list[Upload], list[str]]:
    """Every file of the commit, and warnings (a base model without a hub id)."""
    run_dir = run.run_dir
    recorded = _json(run_dir / "adapter" / ADAPTER_FILES[0]).get("base_model_name_or_path")
    name = str((run.manifest.get("model") or {}).get("name") or (run.recipe.get("model") or {}).get("name"))
    base_id, warning = portable_base(name, recorded if isinstance(recorded, str) else None)
    uploads: list[Upload] = []

    for path in _files(run_dir / "adapter"):
        rel = path.relative_to(run_dir / "adapter").as_posix()
        if path.name == ADAPTER_FILES[0]:
            uploads.append(Upload(rel, content=_portable_config(path, base_id)))
        elif path.name != "README.md":
            uploads.append(Upload(rel, source=path))
    subs = sorted(
        u.path_in_repo.rpartition("/")[0] for u in uploads if u.path_in_repo.endswith(f"/{ADAPTER_FILES[0]}")
    )
    uploads += [Upload(name, source=run_dir / name) for name in RUN_FILES if (run_dir / name).is_file()]
    if (run_dir / "evals").is_dir():
        uploads += [
            Upload(f"evals/{p.relative_to(run_dir / 'evals').as_posix()}", source=p)
            for p in _files(run_dir / "evals")
        ]
    if include_checkpoints:
        for ckpt in list_checkpoints(run_dir):
            uploads += [
                Upload(f"checkpoints/{ckpt.name}/{p.relative_to(ckpt).as_posix()}", source=p)
                for p in _files(ckpt, False)
            ]
    peft_meta = _peft_metadata(run_dir / "adapter" / "README.md")
    card = model_card(run, repo_id, base_id, peft_meta, subs, [u.path_in_repo for u in uploads], revision)
    uploads.insert(0, Upload("README.md", content=card.encode()))
    return uploads, [warning] if warning else []


def _portable_config(path: Path, base_id: str | None) -> bytes:
    config = _json(path)
    if base_id is not None:
        config["base_model_name_or_path"] = base_id
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def _peft_metadata(readme: Path) -> dict[str, Any]:
    """The YAML metadata PEFT wrote into the adapter's README.md (empty when there is none)."""
    from huggingface_hub import ModelCard

    if not readme.is_file():
        return {}
    try:
        return ModelCard.load(readme, ignore_metadata_errors=True).data.to_dict()
    except (OSError, ValueError, yaml.YAMLError):
        return {}
