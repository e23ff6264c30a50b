"""What a push says about a run: the base model's hub id, the eval tables, and the model card.

Reads only. The card keeps PEFT's own metadata (`library_name`, `pipeline_tag`, `tags`), names the
base model by its hub id and never by a local path, and adds what the run knows: the method, β,
the objective's normalisation, key hyperparameters, the data card, held-out metrics before and
after, eval tables, and the command that reproduces the run. Nothing in it depends on the time of
the push, so re-pushing an unchanged run sends an identical card (and so makes no commit).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align import __version__
from align.models.embedded import EMBEDDED_HUB_ID, EMBEDDED_NAME
from align.util.offline import is_repo_id
from align.util.secrets import redact

# License ids the Hub knows (lowercase); a data card's license outside this set becomes `other`.
HUB_LICENSES = {
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0",
    "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-4.0", "cc-by-3.0", "cc-by-sa-3.0",
    "gpl-3.0", "lgpl-3.0", "agpl-3.0", "mpl-2.0", "odc-by", "odbl", "openrail", "llama2", "llama3",
    "gemma", "unlicense", "other",
}  # fmt: skip
MAX_EVAL_ROWS = 40
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
RUN_FILES = ("recipe.yaml", "manifest.json", "summary.json", "metrics.jsonl")


@dataclass(frozen=True)
class RunRecord:
    """A finished run's records, read once (align/hub/push.py: read_run checks it is complete)."""

    run_dir: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    recipe: dict[str, Any]


@dataclass(frozen=True)
class DataInfo:
    name: str
    license: str | None
    summary: str
    hub_id: str | None  # the dataset's hub id, when its source is on the Hub


def portable_base(name: str, recorded: str | None) -> tuple[str | None, str | None]:
    """(the base model's hub id or None, a warning when it has none).

    `name` is the recipe's `model.name`, `recorded` the adapter config's `base_model_name_or_path`
    (the path or id the base was loaded from). The embedded default is SmolLM2-135M-Instruct; a
    hub id is itself; a local directory names one when it is a Hugging Face cache snapshot
    (`models--org--name/snapshots/<sha>`) or its config.json's `_name_or_path` is a hub id.
    """
    if name == EMBEDDED_NAME:
        return EMBEDDED_HUB_ID, None
    if not recorded:
        return (
            None,
            f"the base model {name!r} has no hub id (a randomly initialised model): the card names none",
        )
    local = Path(recorded).expanduser()
    if not local.is_dir() and is_repo_id(recorded):
        return recorded, None
    found = _hub_id_of_dir(local)
    if found is not None:
        return found, None
    return None, (
        f"the base model {recorded} is a local directory that names no hub id (no models--org--name "
        "cache path, no hub id in its config.json `_name_or_path`): the pushed adapter_config.json "
        "keeps this path, so whoever loads the adapter must pass the base model themselves; the "
        "card names no base model"
    )


def _hub_id_of_dir(path: Path) -> str | None:
    parts = path.parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            candidate = part[len("models--") :].replace("--", "/", 1)
            if is_repo_id(candidate):
                return candidate
    try:
        value = json.loads((path / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(value, str) and is_repo_id(value) and not Path(value).expanduser().is_dir():
        return value
    return None


def hub_license(text: str | None) -> tuple[str | None, str | None]:
    """(Hub license id, license_name for `other`) for a data card's license string."""
    if not text:
        return None, None
    lowered = text.strip().lower()
    if lowered in HUB_LICENSES:
        return lowered, None
    return "other", re.sub(r"[^a-z0-9.-]+", "-", lowered).strip("-") or None


def data_info(run: RunRecord) -> DataInfo | None:
    """The data card the run used (its license and summary), or the dataset's hub id."""
    from align.data.cards import load_card
    from align.util.errors import AlignError

    data = run.recipe.get("data") or {}
    source = (run.manifest.get("data") or {}).get("source")
    if data.get("card"):
        where = (
            source if isinstance(source, str) and source.endswith(".md") and Path(source).is_file() else None
        )
        try:
            card = load_card(where or data["card"])
        except AlignError:  # the card is gone: its name only (never a local path)
            return DataInfo(Path(str(data["card"])).stem, None, "", None)
        hub_id = card.source if is_repo_id(card.source) and not Path(card.source).exists() else None
        return DataInfo(card.name, card.license, " ".join(card.description.split()), hub_id)
    path = data.get("path")
    if isinstance(path, str) and is_repo_id(path) and not Path(path).exists():
        return DataInfo(path, None, "", path)
    return DataInfo(Path(path).name, None, "", None) if isinstance(path, str) else None


def eval_tables(run_dir: Path) -> list[tuple[str, str]]:
    """(name, markdown table) per eval under `run_dir/evals/`: each directory's markdown tables
    (lines starting with `|`) as written, else the numbers at the top level of its JSON files."""
    root = run_dir / "evals"
    if not root.is_dir():
        return []
    groups = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = []
    for group in groups:
        files = sorted(p for p in group.iterdir() if p.is_file() and not p.name.startswith("."))
        name = "evals" if group == root else group.name
        tables = [_md_table(p) for p in files if p.suffix == ".md"]
        tables = [t for t in tables if t]
        if not tables:
            rows = [(f"{p.stem}/{k}", v) for p in files if p.suffix == ".json" for k, v in _numbers(p)]
            if rows:
                tables = [
                    "| metric | value |\n|---|---:|\n" + "\n".join(f"| {k} | {_num(v)} |" for k, v in rows)
                ]
        out += [(name, table) for table in tables[:1]]
    return out


def _md_table(path: Path) -> str:
    lines = [ln.rstrip() for ln in path.read_text(errors="replace").splitlines()]
    table = [ln for ln in lines if ln.lstrip().startswith("|")]
    return "\n".join(table[:MAX_EVAL_ROWS])


def _numbers(path: Path) -> list[tuple[str, float]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    return [
        (k, v)
        for k, v in data.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not k.startswith("_")
    ][:MAX_EVAL_ROWS]


def _num(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return _cell(v)
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def _cell(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    return " ".join(text.split()).replace("|", "\\|")


def card_metadata(peft_meta: dict[str, Any], base_id: str | None, method: str, data: DataInfo | None) -> str:
    """YAML front matter: PEFT's keys kept, `base_model` a hub id (or absent), align's tags added."""
    from huggingface_hub import ModelCardData

    tags = [t for t in peft_meta.get("tags") or [] if isinstance(t, str) and not t.startswith("base_model:")]
    if base_id:
        tags.insert(0, f"base_model:adapter:{base_id}")
    tags += [t for t in ("align", method) if t not in tags]
    meta = {k: v for k, v in peft_meta.items() if k not in ("base_model", "tags", "license", "datasets")}
    meta.update(library_name="peft", pipeline_tag=meta.get("pipeline_tag") or "text-generation", tags=tags)
    if base_id:
        meta["base_model"] = base_id
    if data is not None:
        license_id, license_name = hub_license(data.license)
        meta.update({k: v for k, v in (("license", license_id), ("license_name", license_name)) if v})
        if data.hub_id:
            meta["datasets"] = [data.hub_id]
    return ModelCardData(**meta).to_yaml()


def model_card(
    run: RunRecord,
    repo_id: str,
    base_id: str | None,
    peft_meta: dict[str, Any],
    sub_adapters: list[str],
    files: list[str],
    revision: str = "main",
) -> str:
    """README.md for the pushed repo (metadata + body), redacted; `files`: the other pushed paths."""
    m, r, s = run.manifest, run.recipe, run.summary
    method = str(m.get("method") or r.get("method") or "unknown")
    data = data_info(run)
    meta = card_metadata(peft_meta, base_id, method, data)
    base = base_id or "BASE_MODEL"
    lines = [f"# {repo_id.split('/')[-1]}", ""]
    what = (
        f"A LoRA adapter for [{base_id}](https://huggingface.co/{base_id})"
        if base_id
        else "A LoRA adapter (its base model has no hub id: load it onto the base it was trained on)"
    )
    lines.append(f"{what}, trained with **{method.upper()}** by align {__version__}.")
    lines += ["", "## Use", "", "```python"]
    lines += [
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{base}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{base}")',
        *_earlier_lines(_merged(m)),
        f'model = PeftModel.from_pretrained(base, "{repo_id}"{_at(revision, ", revision=")})',
        "```",
    ]
    if m.get("start_from") and m.get("start_mode") == "continue":
        lines += [
            "",
            f"This run continued training the adapter of {_link_name(m['start_from'][-1])} "
            "(`model.adapter_mode: continue`, its frozen copy the reference): this adapter is the "
            "whole model on "
            + ("the base with the earlier adapters merged as above." if _merged(m) else "the base."),
        ]
    elif m.get("start_from"):
        lines += [
            "",
            "This run started from an earlier run (`model.adapter`): its reference and its base were the "
            "base model with the earlier adapter(s) merged in, oldest first. This adapter alone, on the "
            "bare base, is a different model. One PEFT adapter cannot express both, so merge the earlier "
            "ones first as above (push each with `align push` and put its repo id in place of the "
            "placeholder).",
        ]
    for sub in sub_adapters:
        lines += [
            "",
            f'`{sub}/` holds another adapter: `PeftModel.from_pretrained(base, "{repo_id}", '
            f'subfolder="{sub}"{_at(revision, ", revision=")})`.',
        ]
    lines += ["", "## Training", "", "| | |", "|---|---|", *_training_rows(run)]
    lines += ["", "## Data", ""]
    if data is None:
        lines.append("The recipe names no data card.")
    else:
        licensed = f" (license: {data.license})" if data.license else ""
        lines.append(f"**{data.name}**{licensed}. {data.summary}".rstrip())
    examples = s.get("examples") or {}
    if examples:
        lines += ["", f"{examples.get('train')} training examples, {examples.get('eval')} held out."]
    lines += ["", "## Results", "", *_result_rows(s)]
    for name, table in eval_tables(run.run_dir):
        lines += ["", f"## Evaluation: {name}", "", table]
    lines += [
        "",
        "## Reproduce",
        "",
        *_reproduce(run, repo_id, base_id, revision),
        "",
        "## Files",
        "",
        *_files_list(sub_adapters, files),
    ]
    return redact(f"---\n{meta}\n---\n\n" + "\n".join(lines) + "\n")


def _training_rows(run: RunRecord) -> list[str]:
    m, r, s = run.manifest, run.recipe, run.summary
    objective = dict(m.get("objective") or {})
    name, paper = objective.pop("objective", m.get("method")), objective.pop("paper", None)
    rows = [("method", f"{name} ({paper})" if paper else name)]
    rows += [("β" if k == "beta" else k, v) for k, v in objective.items()]
    lora, optim, train, data = (r.get(k) or {} for k in ("lora", "optim", "train", "data"))
    world = m.get("world_size", 1)
    per, accum = train.get("per_device_batch_size"), train.get("gradient_accumulation_steps")
    warmup = optim.get("warmup_steps")
    rows += [
        ("reference", m.get("reference")),
        *(
            [
                (
                    "starts from",
                    " → ".join(_link_name(link) for link in m["start_from"])
                    + (" (its adapter trained on)" if m.get("start_mode") == "continue" else " (merged into the base)"),
                )
            ]
            if m.get("start_from")
            else []
        ),
        ("LoRA", f"r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}, "
         f"target modules {_cell(lora.get('target_modules'))}"),
        ("optimizer", f"AdamW, lr {optim.get('lr')}, betas {optim.get('adam_betas')}, weight decay "
         f"{optim.get('weight_decay')}, {optim.get('scheduler')} schedule, "
         + (f"{warmup} warmup steps" if warmup is not None else f"warmup ratio {optim.get('warmup_ratio')}")
         + f", max grad norm {optim.get('max_grad_norm')}"),
        ("batch", f"{per} per device × {world} process(es) × {accum} accumulation = "
         f"{_product(per, world, accum)} examples per step"),
        ("steps", f"{s.get('steps')} ({s.get('skipped_steps', 0)} skipped)"),
        ("lengths", f"max_length {data.get('max_length')}, max_prompt_length {data.get('max_prompt_length')}"),
        ("precision", (m.get("precision") or {}).get("precision", r.get("precision"))),
        ("seed", r.get("seed")),
        ("software", _versions(m)),
    ]  # fmt: skip
    return [f"| {k} | {_cell(v)} |" for k, v in rows]


def _merged(m: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier adapters merged into the base: all, or all but the one a `continue` run trained on."""
    chain = list(m.get("start_from") or [])
    return chain[:-1] if m.get("start_mode") == "continue" else chain


def _link_name(link: dict[str, Any]) -> str:
    where = Path(str(link.get("run") or link.get("adapter"))).name
    return f"{where} ({link.get('method') or 'adapter'}, sha256 {str(link.get('adapter_sha256', ''))[:12]})"


def _earlier_lines(chain: list[dict[str, Any]]) -> list[str]:
    """Loading lines that merge the earlier runs' adapters into the base, oldest first."""
    out = []
    for link in chain:
        where = Path(str(link.get("run") or link.get("adapter"))).name
        sha = str(link.get("adapter_sha256", ""))[:12]
        out.append(
            f'base = PeftModel.from_pretrained(base, "EARLIER_ADAPTER_{where}").merge_and_unload()'
            f"  # {link.get('method') or 'adapter'} run {where}, weights sha256 {sha}"
        )
    return out


def _at(revision: str, prefix: str) -> str:
    """The revision argument of a command, when it is not the default branch."""
    return "" if revision == "main" else f"{prefix}{json.dumps(revision) if '=' in prefix else revision}"


def _product(*values: Any) -> Any:
    out = 1
    for v in values:
        if not isinstance(v, int):
            return "?"
        out *= v
    return out


def _versions(m: dict[str, Any]) -> str:
    v = m.get("versions") or {}
    sha = f" (git {m['git_sha'][:10]})" if m.get("git_sha") else ""
    rest = ", ".join(f"{k} {v[k]}" for k in ("torch", "transformers", "peft", "accelerate") if v.get(k))
    return f"align {v.get('align') or __version__}{sha}, {rest}"


def _result_rows(s: dict[str, Any]) -> list[str]:
    before, after = s.get("before") or {}, s.get("after") or {}
    keys = sorted(k for k in after.keys() | before.keys() if k.startswith("eval/"))
    if not keys:
        return ["No held-out metrics were recorded."]
    rows = [
        "Held-out metrics before training (the base model: a fresh adapter changes nothing) and after:",
        "",
        "| metric | before | after |",
        "|---|---:|---:|",
    ]
    show = lambda v: "-" if v is None else _num(v)
    return rows + [
        f"| {k.removeprefix('eval/')} | {show(before.get(k))} | {show(after.get(k))} |" for k in keys
    ]


def _reproduce(run: RunRecord, repo_id: str, base_id: str | None, revision: str) -> list[str]:
    """The exact command: the pushed recipe.yaml, with the base named by its hub id when the run
    read it from a local directory, a fresh output_dir, and no second push."""
    r, m = run.recipe, run.manifest
    overrides = [f"output_dir=runs/{repo_id.split('/')[-1]}"]
    name = (r.get("model") or {}).get("name")
    if base_id and name not in (EMBEDDED_NAME, base_id):
        overrides.append(f"model.name={base_id}")
    if (r.get("hub") or {}).get("push"):
        overrides.append("hub.push=false")
    world = m.get("world_size", 1)
    launch = "align" if world == 1 else f"accelerate launch --multi_gpu --num_processes {world} -m align"
    sha = m.get("git_sha")
    at = f" at git {sha}" if sha else ""
    return [
        f"With align {(m.get('versions') or {}).get('align') or __version__}{at}:",
        "",
        "```bash",
        f"hf download {repo_id} recipe.yaml --local-dir .{_at(revision, ' --revision ')}",
        f"{launch} train recipe.yaml {' '.join(overrides)}",
        "```",
    ]


def _files_list(sub_adapters: list[str], files: list[str]) -> list[str]:
    lines = [
        "- `adapter_config.json`, `adapter_model.safetensors`: the adapter (PEFT)",
        "- `recipe.yaml`: the resolved recipe; `manifest.json`: objective, data, versions, world size",
        "- `summary.json`: held-out metrics before and after; `metrics.jsonl`: every logged step",
    ]
    lines += [f"- `{sub}/`: another adapter of this run" for sub in sub_adapters]
    known = {*ADAPTER_FILES, *RUN_FILES, "README.md"}
    lines += [
        f"- `{f}`: saved with the adapter by the run (align reads it; stock PEFT does not need it)"
        for f in files
        if f.rpartition("/")[2] not in known and not f.startswith(("evals/", "checkpoints/"))
    ]
    if any(f.startswith("evals/") for f in files):
        lines.append("- `evals/`: the run's evaluation results")
    if any(f.startswith("checkpoints/") for f in files):
        lines.append(
            "- `checkpoints/`: intermediate checkpoints (adapter, optimizer and scheduler state, RNG)"
        )
    return lines
