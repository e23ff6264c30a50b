"""LLM judges: any OpenAI-compatible chat-completions endpoint, or a local model.

`openai:MODEL` POSTs to `{base_url}/chat/completions` (OpenAI, vLLM, llama.cpp's server, ...) at
temperature 0, as FastChat judges. The key is read from an environment variable (default
`OPENAI_API_KEY`; none set: no Authorization header, for local servers) and never appears in a
message or log. Timeouts, connection errors, 408/409/425/429 and 5xx are retried with
exponential backoff, honouring `Retry-After` (seconds or an HTTP date) and `retry-after-ms`;
401/403 stop at once with a message naming the variable; other 4xx stop with the server's reason.

`hf:NAME_OR_PATH` judges with a local model through align.models.load (the embedded default, a local
checkpoint, `tiny-smollm2` in tests), greedy, batched through `answers.generate`; it loads on
first use, so an eval whose judgments are all cached never loads it.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from align.util.errors import AlignError
from align.util.secrets import redact

log = logging.getLogger("align.evals")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
Request = tuple[str, str]  # (system prompt, user prompt)


class JudgeError(AlignError):
    """The judge could not answer (after retries, or a non-transient HTTP error)."""


class JudgeAuthError(JudgeError):
    """The endpoint refused the credentials (401/403): retrying cannot help."""


class Judge(Protocol):
    name: str  # what judgments are cached under ("openai:gpt-4", "hf:smollm2-135m-instruct")
    batch: int  # requests worth sending together (judgments are cached after each such group)

    def complete(self, requests: list[Request]) -> list[str]: ...


def retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `Retry-After` seconds or date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


TOKEN_PARAMS = ("auto", "max_tokens", "max_completion_tokens")


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip().replace("\n", " ")
    try:  # OpenAI-style {"error": {"message": ...}}
        err = json.loads(text).get("error")
        text = err.get("message", text) if isinstance(err, dict) else str(err or text)
    except (ValueError, AttributeError):
        pass
    return redact(text[:300])


@dataclass
class HttpJudge:
    """An OpenAI-compatible chat-completions judge (see the module docstring for retries)."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    key_env: str = DEFAULT_KEY_ENV
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 2.0  # first wait in seconds without Retry-After; doubles per attempt
    max_wait: float = 120.0  # no single wait is longer, whatever Retry-After says
    workers: int = 4  # concurrent requests
    max_tokens: int = 2048  # judgment length (--judge-max-new-tokens): bounds a rambling served judge
    # which request field carries it: "auto" sends max_tokens and, when the server refuses it and
    # names max_completion_tokens (OpenAI's reasoning models), resends with that, remembered
    token_param: str = "auto"

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def batch(self) -> int:
        return self.workers

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def complete(self, requests: list[Request]) -> list[str]:
        """Answers in order; the first error stops the rest (queued requests are cancelled)."""
        if self.workers <= 1 or len(requests) <= 1:
            return [self.ask(*r) for r in requests]
        pool = ThreadPoolExecutor(max_workers=self.workers)
        futures = [pool.submit(self.ask, *r) for r in requests]
        try:
            wait(futures, return_when="FIRST_EXCEPTION")
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def __post_init__(self) -> None:
        if self.token_param not in TOKEN_PARAMS:
            raise JudgeError(
                f"--judge-token-param: {self.token_param!r}; expected one of {', '.join(TOKEN_PARAMS)}"
            )
        self._field = "max_tokens" if self.token_param == "auto" else self.token_param

    def ask(self, system: str, user: str) -> str:
        field = self._field
        try:
            return self._ask(system, user, field)
        except JudgeError as e:
            refused = "max_completion_tokens" in str(e) and "HTTP 400" in str(e)
            if self.token_param != "auto" or field != "max_tokens" or not refused:
                raise
            log.warning("judge %s refuses max_tokens; sending max_completion_tokens from now on", self.name)
            self._field = "max_completion_tokens"
            return self._ask(system, user, self._field)

    def _ask(self, system: str, user: str, field: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": 0,
            field: self.max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            asked: float | None = None
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return self._content(resp.read())
            except urllib.error.HTTPError as e:
                detail = _snippet(e.read() or b"")
                if e.code in (401, 403):
                    raise JudgeAuthError(
                        f"judge {self.url} refused the credentials (HTTP {e.code}: {detail}); set the "
                        f"API key in the environment variable {self.key_env} (or name another with "
                        "--judge-key-env)"
                    ) from None
                if e.code not in TRANSIENT_STATUS and e.code < 500:
                    raise JudgeError(f"judge {self.url} answered HTTP {e.code}: {detail}") from None
                why, asked = (
                    f"HTTP {e.code}: {detail}" if detail else f"HTTP {e.code}",
                    retry_after(e.headers),
                )
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                why = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
            if attempt == self.max_retries:
                raise JudgeError(
                    f"judge {self.url}: no answer after {attempt + 1} attempts (last: {redact(why)}); "
                    "what was judged so far is cached: run the same command again to resume"
                )
            delay = asked if asked is not None else self.backoff * 2**attempt * (1 + 0.25 * random.random())
            delay = min(delay, self.max_wait)
            log.warning(
                "judge %s: %s; retry %d/%d in %.1f s", self.name, why, attempt + 1, self.max_retries, delay
            )
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _content(self, raw: bytes) -> str:
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"judge {self.url}: not a chat-completions answer: {_snippet(raw)!r}") from None
        return content if isinstance(content, str) else ""  # null content (a refusal): unparsable


@dataclass
class LocalJudge:
    """A local causal LM as the judge: greedy, batched, system + user through its chat template.

    `prefill` starts the judge's reply (e.g. "Rating: [["), so a small model that would ramble
    writes the rating first; the returned judgment is prefill + what it generated, parsed as any
    other. It is part of the judge's name, so judgments with and without it are cached apart."""

    model_name: str
    max_new_tokens: int = 512
    batch_size: int = 8
    prefill: str | None = None
    _loaded: Any = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return f"hf:{self.model_name}" + (f" (prefill {self.prefill!r})" if self.prefill else "")

    @property
    def batch(self) -> int:
        return self.batch_size

    def complete(self, requests: list[Request]) -> list[str]:
        from align.evals.answers import generate, render

        if self._loaded is None:
            from align.evals.policies import device
            from align.models.load import load_model, load_tokenizer
            from align.recipe import ModelConfig

            spec = ModelConfig(name=self.model_name)
            self._loaded = (load_model(spec).to(device()).eval(), load_tokenizer(spec))
        model, tok = self._loaded
        start = tok(self.prefill, add_special_tokens=False)["input_ids"] if self.prefill else []
        prompts = [
            render(tok, [{"role": "system", "content": s}, {"role": "user", "content": u}]) + start
            for s, u in requests
        ]
        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            out += [
                (self.prefill or "") + g.text
                for g in generate(model, tok, prompts[i : i + self.batch_size], 0.0, self.max_new_tokens, 0)
            ]
        return out


def make_judge(
    spec: str,
    base_url: str | None = None,
    key_env: str = DEFAULT_KEY_ENV,
    max_new_tokens: int | None = None,
    prefill: str | None = None,
    **http: Any,
) -> Judge:
    """`openai:MODEL` (with `base_url`) or `hf:NAME_OR_PATH`; `max_new_tokens` bounds the judgment
    of both (None: 512 for a local judge, 2048 for a served one, FastChat's GPT-4 setting)."""
    kind, _, name = spec.partition(":")
    if not name.strip() or kind not in ("openai", "hf"):
        raise JudgeError(
            f"--judge {spec!r}: expected openai:MODEL (an OpenAI-compatible endpoint, see "
            "--judge-base-url) or hf:NAME_OR_PATH (a local model, e.g. hf:smollm2-135m-instruct)"
        )
    if kind == "hf":
        if base_url:
            raise JudgeError("--judge-base-url applies to openai:MODEL judges only")
        return LocalJudge(name, max_new_tokens=max_new_tokens or 512, prefill=prefill)
    if prefill:
        raise JudgeError("--judge-prefill applies to hf:NAME_OR_PATH judges only")
    if max_new_tokens is not None:
        http["max_tokens"] = max_new_tokens
    return HttpJudge(name, base_url=base_url or DEFAULT_BASE_URL, key_env=key_env, **http)
