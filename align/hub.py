"""Push a finished run to a Hugging Face-compatible hub: adapter, run records, evals and a model card.

`push_run` reads the run directory and never writes to it: the adapter configs that name the base
model by its hub id, and the card, are built in memory. The run is checked before the first
request. Each network step is retried (bounded, with backoff) on dropped connections and 5xx/429
answers; huggingface_hub retries its preupload and LFS transfers itself, but not the commit.
Retrying the commit is safe: each attempt first asks the hub which files it already holds
(preupload answers their ids), so a commit that landed but whose answer was lost is not made
twice, and re-pushing an unchanged run makes no commit at all. 401/403 are never retried. The
token (HF_TOKEN or the stored login) is masked in every message and log line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from align.checkpoint import list_checkpoints
from align.errors import AlignError
from align.hub_card import RunRecord, model_card, portable_base
from align.offline import HubUnreachable, hub_endpoint, is_repo_id, online_for
from align.secrets import redact, register_secret

log = logging.getLogger("align.hub")
T = TypeVar("T")

ATTEMPTS = 4  # per network step: create the repo, the branch, the commit
BACKOFF_S = 2.0  # the wait after the first failed attempt, doubled after each later one
ADAPTER = ("adapter_config.json", "adapter_model.safetensors")
RECORDS = ("recipe.yaml", "manifest.json", "summary.json", "metrics.jsonl")
NOT_SUB_ADAPTERS = {"adapter", "checkpoints", "evals"}


class PushError(AlignError):
    """A push did not complete; the message says what reached the hub and what did not."""


class HubAuthError(PushError):
    """The hub refused the token (401/403): never retried."""


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    revision: str
    endpoint: str
    commit_oid: str
    commit_url: str
    files: list[str]  # paths in the repo that this push holds
    changed: bool  # False: the repo already held exactly these files, so no commit was made
    warnings: list[str] = field(default_factory=list)


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
    needed = [*RECORDS[:3], *(f"adapter/{name}" for name in ADAPTER)]
    missing = [name for name in needed if not (run_dir / name).is_file()]
    if missing:
        unfinished = "summary.json" in missing or any(name.startswith("adapter/") for name in missing)
        hint = " (the run has not finished: `align train RECIPE --resume` completes it)" if unfinished else ""
        raise PushError(
            f"{run_dir} is not a finished run: missing {', '.join(missing)}{hint}; nothing was uploaded"
        )
    manifest, summary = _json(run_dir / "manifest.json"), _json(run_dir / "summary.json")
    try:
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise PushError(
            f"{run_dir / 'recipe.yaml'}: cannot read it ({type(e).__name__}); nothing was uploaded"
        ) from None
    if not isinstance(recipe, dict):
        raise PushError(f"{run_dir / 'recipe.yaml'}: not a recipe mapping; nothing was uploaded")
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


def sub_adapters(run_dir: Path) -> list[str]:
    """Run subdirectories other than `adapter/` that hold adapter files (a PPO run's `value/`)."""
    return [
        p.name
        for p in sorted(run_dir.iterdir())
        if p.is_dir()
        and p.name not in NOT_SUB_ADAPTERS
        and not p.name.startswith(".")
        and any(f.name == ADAPTER[0] for f in _files(p))
    ]


def plan_uploads(
    run: RunRecord, repo_id: str, include_checkpoints: bool = False
) -> tuple[list[Upload], list[str]]:
    """Every file of the commit, and warnings (a base model without a hub id). The main adapter goes
    to the repo root (what `PeftModel.from_pretrained(base, repo_id)` reads), other adapters to
    their folder; PEFT's own READMEs give way to one model card at the root."""
    run_dir = run.run_dir
    recorded = _json(run_dir / "adapter" / ADAPTER[0]).get("base_model_name_or_path")
    name = str((run.manifest.get("model") or {}).get("name") or (run.recipe.get("model") or {}).get("name"))
    base_id, warning = portable_base(name, recorded if isinstance(recorded, str) else None)
    uploads: list[Upload] = []

    def add_dir(root: Path, prefix: str) -> None:
        for path in _files(root):
            rel = prefix + path.relative_to(root).as_posix()
            if path.name == "README.md":
                continue
            if path.name == ADAPTER[0]:
                uploads.append(Upload(rel, content=_portable_config(path, base_id)))
            else:
                uploads.append(Upload(rel, source=path))

    add_dir(run_dir / "adapter", "")
    subs = sub_adapters(run_dir)
    for sub in subs:
        add_dir(run_dir / sub, f"{sub}/")
    uploads += [Upload(name, source=run_dir / name) for name in RECORDS if (run_dir / name).is_file()]
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
    card = model_card(run, repo_id, base_id, peft_meta, subs, [u.path_in_repo for u in uploads])
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


def default_message(run: RunRecord) -> str:
    method = run.manifest.get("method") or run.recipe.get("method")
    return f"align: {method} adapter from {run.run_dir.name} ({run.summary.get('steps')} steps)"


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    include_checkpoints: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
) -> PushResult:
    """Push the finished run in `run_dir` to `repo_id` (created if missing) as one commit on
    `revision` (a branch, created from main if missing; default main). `endpoint`: default
    HF_ENDPOINT, else https://huggingface.co; `token`: default HF_TOKEN, else the stored login."""
    from huggingface_hub import get_token

    run_dir = Path(run_dir)
    if not is_repo_id(repo_id):
        raise PushError(f"repo id {redact(repo_id)!r} is not like namespace/name; nothing was uploaded")
    run = read_run(run_dir)
    uploads, warnings = plan_uploads(run, repo_id, include_checkpoints)
    for warning in warnings:
        log.warning("%s", warning)
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    token = token or get_token()
    register_secret(token)
    push = _Push(run_dir, repo_id, revision or "main", endpoint, token, uploads)
    try:
        with online_for(endpoint):
            result = push.run(private, commit_message or default_message(run))
    except HubUnreachable as e:
        raise PushError(f"could not push {run_dir} to {repo_id}: {e}; nothing was uploaded") from None
    return PushResult(**result, warnings=warnings)


@dataclass
class _Push:
    run_dir: Path
    repo_id: str
    revision: str
    endpoint: str
    token: str | None
    uploads: list[Upload]
    repo_ready: bool = False
    head: str | None = None  # the revision's commit before this push

    def run(self, private: bool, message: str) -> dict[str, Any]:
        from align import __version__

        api = self.api()
        files = [u.path_in_repo for u in self.uploads]
        log.info("pushing %d files to %s@%s (%s)", len(files), self.repo_id, self.revision, self.endpoint)
        self.retry(
            "create the repository", lambda: api.create_repo(self.repo_id, private=private, exist_ok=True)
        )
        self.repo_ready = True
        if self.revision != "main":
            self.retry(
                "create the branch",
                lambda: api.create_branch(self.repo_id, branch=self.revision, exist_ok=True),
            )
        self.head = self.retry(
            "read the branch", lambda: api.model_info(self.repo_id, revision=self.revision).sha
        )
        info = self.retry(
            "commit",
            lambda: api.create_commit(
                self.repo_id,
                [u.operation() for u in self.uploads],  # fresh each attempt: huggingface_hub mutates them
                commit_message=message,
                commit_description=f"Pushed by align {__version__}.",
                revision=self.revision,
            ),
        )
        changed = info.oid != self.head
        if changed:
            log.info("pushed %s@%s: commit %s", self.repo_id, self.revision, info.oid)
        else:
            log.info(
                "%s@%s already holds this run (commit %s): nothing uploaded",
                self.repo_id,
                self.revision,
                info.oid,
            )
        return dict(
            repo_id=self.repo_id,
            revision=self.revision,
            endpoint=self.endpoint,
            commit_oid=info.oid,
            commit_url=info.commit_url,
            files=files,
            changed=changed,
        )

    def api(self):
        from huggingface_hub import HfApi

        from align import __version__

        return HfApi(
            endpoint=self.endpoint, token=self.token, library_name="align", library_version=__version__
        )

    def retry(self, what: str, call: Callable[[], T]) -> T:
        """`call()`, again after a dropped connection or a 5xx/429 answer, up to ATTEMPTS times."""
        delay = BACKOFF_S
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return call()
            except Exception as e:
                status, transient = _kind(e)
                if status is None and not transient and not isinstance(e, OSError | ValueError):
                    raise  # not a network or hub answer: a bug, with its traceback
                reason = _reason(e, status)
                if status in (401, 403):
                    raise HubAuthError(self.auth_message(what, status, reason)) from None
                if not transient or attempt == ATTEMPTS:
                    tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                    raise PushError(self.failure(what, tries, reason)) from None
                log.warning(
                    "%s: %s (attempt %d of %d); again in %.3g s", what, reason, attempt, ATTEMPTS, delay
                )
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def auth_message(self, what: str, status: int, reason: str) -> str:
        source = "the token (HF_TOKEN, else the stored login) was refused"
        if self.token is None:
            source = "no token was found (set HF_TOKEN or run `hf auth login`)"
        namespace = self.repo_id.split("/")[0]
        return redact(
            f"push to {self.repo_id} at {self.endpoint}: the hub answered {status} when asked to {what}: "
            f"{source}; it needs write access to '{namespace}' ({reason}). Not retried. {self.uploaded()}"
        )

    def failure(self, what: str, tries: str, reason: str) -> str:
        return redact(
            f"push of {self.run_dir} to {self.repo_id}@{self.revision} ({self.endpoint}) failed: could not "
            f"{what} after {tries}: {reason}. {self.uploaded()} Running the same push again sends only what "
            "the hub does not hold yet."
        )

    def uploaded(self) -> str:
        """What reached the hub, and what did not, when a push stops."""
        names = [u.path_in_repo for u in self.uploads]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        not_sent = f"Not uploaded: the commit of {len(names)} files ({shown})"
        if not self.repo_ready:
            there = "nothing reached the hub"
        elif self.head is None:
            there = f"the repository {self.repo_id} exists; no file of this run was committed"
        else:
            there = (
                f"{self.repo_id}@{self.revision} stays at commit {self.head[:12]} as far as the hub answered"
            )
        return f"{not_sent}; {there}. Nothing in {self.run_dir} was changed."


def _kind(err: Exception) -> tuple[int | None, bool]:
    """(HTTP status or None, whether trying again may help)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, HfHubHTTPError) and err.response is not None:
        status = err.response.status_code
        return status, status == 429 or status >= 500
    if isinstance(err, OfflineModeIsEnabled):
        return None, False
    return None, isinstance(err, httpx2.TransportError | ConnectionError | TimeoutError)


def _reason(err: Exception, status: int | None) -> str:
    """The error's first line and the hub's own message (which may quote anything: redacted)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    first = lines[0][:300] if lines else ""
    if status is None:
        return redact(f"{type(err).__name__}: {first}".rstrip(": "))
    said = " ".join(str(getattr(err, "server_message", None) or "").split())[:300]
    return redact(f"{first} (the hub said: {said})" if said and said not in first else first)


def push_from_recipe(run_dir: str | Path, hub) -> PushResult:
    """The push `hub.push: true` asks for at the end of `align train` (hub: the recipe's HubConfig)."""
    try:
        return push_run(
            run_dir, hub.repo_id, private=hub.private, revision=hub.revision, endpoint=hub.endpoint
        )
    except PushError as e:
        again = f"align push {run_dir} --repo-id {hub.repo_id}" + (
            f" --endpoint {hub.endpoint}" if hub.endpoint else ""
        )
        raise type(e)(f"training finished, but the push did not: {e} To push again: {again}") from None


def describe(result: PushResult) -> str:
    """One line for the terminal."""
    where = f"{result.repo_id}@{result.revision}"
    if not result.changed:
        return f"{where} already holds this run (commit {result.commit_oid[:12]}): nothing uploaded"
    return f"pushed {len(result.files)} files to {where}: {result.commit_url}"
