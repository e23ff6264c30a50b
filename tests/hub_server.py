"""A Hugging Face Hub stand-in on 127.0.0.1: only the endpoints huggingface_hub uses to create a repo
and a branch, preupload, commit (NDJSON), read repo info, validate a card's metadata and download
files (`resolve`, with the headers `hf_hub_download` needs: X-Repo-Commit, ETag, Content-Length).

What it mirrors of the real Hub:
- a new repo starts with one commit holding `.gitattributes`; `create_repo` on an existing repo
  answers 409 (huggingface_hub's `exist_ok` relies on it);
- preupload answers each file's id when the revision already holds it (the git blob sha1 of a
  regular file), which is how the client leaves unchanged files out of a commit;
- every commit request makes a commit, an empty one included (the Hub does: huggingface_hub
  issue #1411), so a client that sent one for an unchanged run would show up in `commits()`;
- write endpoints need `Authorization: Bearer <token>`; a private repo is invisible without it.
What it leaves out: LFS and Xet. Preupload answers `regular` for every file, so every file goes
inline (base64) in the commit. The real Hub routes binaries such as .safetensors to LFS/Xet (its
preupload answer decides; huggingface_hub forces nothing by file extension) and huggingface_hub
uploads those with its own retries before the commit.

Failures are scripted per route, one action per request: `hub.script("commit", "drop", 500)`
drops the connection on the first commit request (without committing), answers 500 to the
second, and serves later ones. "drop_after" commits, then drops the connection unanswered.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
ROUTES = [
    ("POST", "create_repo", re.compile(r"/api/repos/create")),
    ("POST", "create_branch", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<rev>[^/]+)")),
    ("POST", "preupload", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)")),
    ("POST", "commit", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)")),
    ("GET", "repo_info", re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?")),
    ("POST", "validate_yaml", re.compile(r"/api/validate-yaml")),
    ("GET", "resolve", re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")),
]


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    files: dict[str, bytes]


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


class Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}


class HubServer:
    """State and behaviour; `serve()` binds it to a loopback port."""

    def __init__(self, token: str | None, echo_auth: bool = False) -> None:
        self.token = token
        self.echo_auth = echo_auth  # error bodies quote the Authorization header (a leaky server)
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict[str, Any]] = []
        self.scripts: dict[str, deque] = defaultdict(deque)
        self.lock = threading.Lock()
        self.endpoint = ""

    # -- test-facing -----------------------------------------------------------------------------

    def script(self, route: str, *actions: str | int) -> None:
        self.scripts[route].extend(actions)

    def seen(self, route: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.requests if route is None or r["route"] == route]

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.branches[rev]].files)

    def commits(self, repo_id: str) -> list[Commit]:
        repo = self.repos[repo_id]
        return [repo.commits[oid] for oid in repo.order]

    # -- request handling ----------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict, bytes] | str:
        """(status, headers, body) or an action ("drop": answer nothing)."""
        route, params = self.route("GET" if method == "HEAD" else method, urlsplit(path).path)
        auth = headers.get("authorization")
        self.requests.append({"method": method, "route": route, "auth": auth, "path": path})
        with self.lock:
            action = self.scripts[route].popleft() if self.scripts[route] else None
            if action == "drop":
                return "drop"
            if isinstance(action, int):
                return self.error(action, f"scripted {action}", auth)
            try:
                if route is None:
                    raise Reply(404, "not found")
                status, out_headers, out = getattr(self, route)(params, auth, body, method)
            except Reply as r:
                return self.error(r.status, r.body, auth, r.headers)
        if action == "drop_after":
            return "drop"
        return status, out_headers, out

    def route(self, method: str, path: str) -> tuple[str | None, dict[str, str]]:
        for verb, name, pattern in ROUTES:
            m = pattern.fullmatch(path)
            if verb == method and m:
                return name, {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
        return None, {}

    def error(self, status: int, body: str | dict, auth: str | None, headers: dict[str, str] | None = None):
        payload = dict(body) if isinstance(body, dict) else {"error": body}
        if self.echo_auth and auth:
            payload["error"] = f"{payload.get('error', '')} (you sent: {auth})"
        out = {"X-Error-Message": "Invalid credentials in Authorization header"} if status == 401 else {}
        return (
            status,
            {"Content-Type": "application/json", **out, **(headers or {})},
            json.dumps(payload).encode(),
        )

    def check_auth(self, auth: str | None) -> None:
        if self.token is not None and auth != f"Bearer {self.token}":
            raise Reply(401, "Invalid username or password.")

    def repo(self, repo_id: str, auth: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        readable = repo is not None and (not repo.private or auth == f"Bearer {self.token}")
        if not readable:
            raise Reply(404, "Repository not found", {"X-Error-Code": "RepoNotFound"})
        return repo

    def commit_of(self, repo: Repo, rev: str) -> Commit:
        oid = repo.branches.get(rev, rev)
        if oid not in repo.commits:
            raise Reply(404, f"Invalid rev id: {rev}", {"X-Error-Code": "RevisionNotFound"})
        return repo.commits[oid]

    def new_commit(self, repo: Repo, branch: str, summary: str, files: dict[str, bytes]) -> Commit:
        parent = repo.branches.get(branch)
        digest = hashlib.sha1(f"{parent}{len(repo.order)}{summary}".encode())
        for path in sorted(files):
            digest.update(f"{path}:{git_blob_id(files[path])}".encode())
        commit = Commit(digest.hexdigest(), parent, summary, files)
        repo.commits[commit.oid] = commit
        repo.order.append(commit.oid)
        repo.branches[branch] = commit.oid
        return commit

    @staticmethod
    def ok(body: Any) -> tuple[int, dict, bytes]:
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    # -- endpoints -------------------------------------------------------------------------------

    def create_repo(self, params, auth, body, method):
        self.check_auth(auth)
        payload = json.loads(body)
        repo_id = f"{payload['organization']}/{payload['name']}"
        if payload.get("type", "model") != "model":
            raise Reply(400, "this server holds model repos only")
        if repo_id in self.repos:
            raise Reply(
                409, {"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"}
            )
        repo = Repo(private=payload.get("visibility") == "private" or payload.get("private") is True)
        self.repos[repo_id] = repo
        self.new_commit(repo, "main", "initial commit", {".gitattributes": GITATTRIBUTES})
        return self.ok({"url": f"{self.endpoint}/{repo_id}", "name": repo_id})

    def create_branch(self, params, auth, body, method):
        self.check_auth(auth)
        repo = self.repo(params["repo"], auth)
        if params["rev"] in repo.branches:
            raise Reply(409, f"Reference {params['rev']} already exists")
        start = self.commit_of(repo, (json.loads(body or b"{}") or {}).get("startingPoint", "main"))
        repo.branches[params["rev"]] = start.oid
        return self.ok({})

    def preupload(self, params, auth, body, method):
        self.check_auth(auth)
        held = self.commit_of(self.repo(params["repo"], auth), params["rev"]).files
        files = [
            {
                "path": f["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_id(held[f["path"]]) if f["path"] in held else None,
            }
            for f in json.loads(body)["files"]
        ]
        return self.ok({"files": files, "commitOid": self.repos[params["repo"]].branches.get(params["rev"])})

    def commit(self, params, auth, body, method):
        self.check_auth(auth)
        repo = self.repo(params["repo"], auth)
        files = dict(self.commit_of(repo, params["rev"]).files)
        if params["rev"] not in repo.branches:
            raise Reply(400, "commits go to a branch")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise Reply(400, "the first NDJSON line must be the header")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, repo.branches[params["rev"]]):
            raise Reply(412, "A commit has happened since. Please refresh and try again.")
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise Reply(
                    400, f"unsupported commit operation {key!r} (this server stores every file inline)"
                )
        commit = self.new_commit(repo, params["rev"], header["summary"], files)
        url = f"{self.endpoint}/{params['repo']}/commit/{commit.oid}"
        return self.ok({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})

    def repo_info(self, params, auth, body, method):
        repo_id = params["repo"]
        repo = self.repo(repo_id, auth)
        commit = self.commit_of(repo, params.get("rev", "main"))
        siblings = [
            {"rfilename": p, "size": len(d), "blobId": git_blob_id(d)}
            for p, d in sorted(commit.files.items())
        ]
        return self.ok(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": commit.oid,
                "private": repo.private,
                "siblings": siblings,
            }
        )

    def validate_yaml(self, params, auth, body, method):
        """The checks of the Hub's metadata validation that a pushed card can fail here."""
        content = json.loads(body)["content"]
        errors = []
        m = re.match(r"---\n(.*?)\n---\n", content, re.S)
        meta = yaml.safe_load(m[1]) if m else {}
        if not isinstance(meta, dict):
            errors.append("metadata must be a mapping")
            meta = {}
        base = meta.get("base_model")
        if base is not None and not (isinstance(base, str) and re.fullmatch(r"[\w.-]+/[\w.-]+", base)):
            errors.append(f'"base_model" must be a Hub model id, got {base!r}')
        if not all(isinstance(t, str) for t in meta.get("tags") or []):
            errors.append('"tags" must be a list of strings')
        if errors:
            return (
                400,
                {"Content-Type": "application/json"},
                json.dumps({"errors": [{"message": e} for e in errors]}).encode(),
            )
        return self.ok({"errors": [], "warnings": []})

    def resolve(self, params, auth, body, method):
        repo = self.repo(params["repo"], auth)
        commit = self.commit_of(repo, params["rev"])
        data = commit.files.get(params["path"])
        if data is None:
            raise Reply(
                404, "Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit.oid}
            )
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_id(data)}"',
        }
        return 200, headers, data


def serve(hub: HubServer) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = hub.handle(self.command, self.path, headers, body)
            if answer == "drop":
                self.close_connection = True
                return
            status, out_headers, data = answer
            self.send_response(status)
            for k, v in out_headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = _any

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
