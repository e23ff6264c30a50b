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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from align.hub.card import RunRecord
from align.hub.files import Upload, plan_uploads, read_run
from align.util.errors import PushError
from align.util.offline import HubUnreachable, hub_endpoint, is_repo_id, online_for
from align.util.secrets import redact, register_secret

log = logging.getLogger("align.hub")
T = TypeVar("T")

ATTEMPTS = 4  # per network step: create the repo, the branch, the commit
BACKOFF_S = 2.0  # the wait after the first failed attempt, doubled after each later one


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

    run_dir, revision = Path(run_dir), revision or "main"
    if not is_repo_id(repo_id):
        raise PushError(f"repo id {redact(repo_id)!r} is not like namespace/name; nothing was uploaded")
    run = read_run(run_dir)
    uploads, warnings = plan_uploads(run, repo_id, include_checkpoints, revision)
    for warning in warnings:
        log.warning("%s", warning)
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    token = token or get_token()
    register_secret(token)  # masked from here on, also when it came from the stored login
    push = _Push(run_dir, repo_id, revision, endpoint, token, uploads, warnings)
    try:
        with online_for(endpoint):
            return push.run(private, commit_message or default_message(run))
    except HubUnreachable as e:
        raise PushError(f"could not push {run_dir} to {repo_id}: {e}; nothing was uploaded") from None


@dataclass
class _Push:
    run_dir: Path
    repo_id: str
    revision: str
    endpoint: str
    token: str | None
    uploads: list[Upload]
    warnings: list[str]
    repo_ready: bool = False
    head: str | None = None  # the revision's commit before this push

    def run(self, private: bool, message: str) -> PushResult:
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
        return PushResult(
            self.repo_id,
            self.revision,
            self.endpoint,
            info.oid,
            info.commit_url,
            files,
            changed,
            self.warnings,
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
