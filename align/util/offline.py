"""Is the Hugging Face Hub reachable? Answer in seconds, once per process, instead of after retries.

Without this, a Hub id on a machine without the Hub (ours: DNS fails) takes 30-50 s of
huggingface_hub retries to fail. `HF_HUB_OFFLINE=1` (or `TRANSFORMERS_OFFLINE=1`) is honoured
without any network access; otherwise one HEAD request to the endpoint (`HF_ENDPOINT`, default
https://huggingface.co; proxies from the environment apply) must get *some* HTTP answer within
`PROBE_TIMEOUT_S`, DNS included. When it does not, the process switches to offline mode so that
transformers and datasets read their caches instead of retrying.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

from align.util.errors import ModelError

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of these variables
GENERIC_ALTERNATIVES = "a local directory or file instead of a Hub id"

_probed: dict[str, str | None] = {}  # endpoint -> why it is unreachable (None: it answered)
_lock = threading.Lock()


class HubUnreachable(ModelError):
    """A Hub id was asked for, but the Hub cannot be reached (or offline mode is on)."""


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT


def is_repo_id(text: str) -> bool:
    """`namespace/name` as the Hub spells a repo id (so never a local path)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return text.count("/") == 1


def _is_on(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in _TRUE


def _offline_flag() -> str | None:
    """The variable that switches offline mode on, if any (also set programmatically on the constant)."""
    for name in OFFLINE_VARS:
        if _is_on(name):
            return name
    constants = sys.modules.get("huggingface_hub.constants")
    return "HF_HUB_OFFLINE" if getattr(constants, "HF_HUB_OFFLINE", False) else None


def _probe(endpoint: str, timeout: float) -> str | None:
    """None when `endpoint` gives any HTTP answer (even 4xx/5xx) within `timeout`; else why not.

    Runs in a daemon thread so that DNS resolution, which ignores socket timeouts, is bounded too.
    """
    if not endpoint.startswith(("http://", "https://")):
        return f"HF_ENDPOINT={endpoint!r} is not an http(s) URL"
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:  # an answer, whatever its status
            outcome.append(None)
        except urllib.error.URLError as e:
            reason = e.reason
            outcome.append(None if isinstance(reason, ssl.SSLError) else f"{endpoint}: {reason}")
        except Exception as e:  # timeouts, a connection closed without an answer, bad URLs
            outcome.append(f"{endpoint}: {type(e).__name__}: {e}".rstrip(": "))

    thread = threading.Thread(target=attempt, name="align-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not outcome:
        return f"{endpoint} did not answer within {timeout:g} s"
    reason = outcome[0]
    if reason is not None and "timed out" in reason:
        return f"{endpoint} did not answer within {timeout:g} s"
    return reason


def go_offline() -> None:
    """Offline mode for the rest of the process, in the environment and in modules already imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    for module, names in (
        ("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
        ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
    ):
        mod = sys.modules.get(module)
        for name in names if mod is not None else ():
            if hasattr(mod, name):
                setattr(mod, name, True)


def endpoint_unreachable(endpoint: str) -> str | None:
    """Why `endpoint` gives no HTTP answer (None: it answered); probed at most once per endpoint.
    No side effects: `unreachable_reason` decides whether to switch offline mode on."""
    with _lock:
        if endpoint not in _probed:
            reason = _probe(endpoint, PROBE_TIMEOUT_S)
            _probed[endpoint] = None if reason is None else f"the Hugging Face Hub is unreachable: {reason}"
    return _probed[endpoint]


def unreachable_reason() -> str | None:
    """Why the Hub cannot be used now, or None when it answered. Probes at most once per endpoint."""
    endpoint = hub_endpoint()
    if _probed.get(endpoint):  # we switched offline mode on ourselves: keep the real reason
        return _probed[endpoint]
    flag = _offline_flag()
    if flag:
        return f"{flag}=1 is set (offline mode), so the Hugging Face Hub is not contacted"
    if endpoint_unreachable(endpoint) is not None:
        go_offline()
    return _probed[endpoint]


@contextlib.contextmanager
def online_for(endpoint: str) -> Iterator[None]:
    """Let huggingface_hub reach `endpoint` (a push) while it answers, even when this process switched
    offline mode on because *another* endpoint did not (the default Hub, probed while loading a
    model); offline mode is back on afterwards. A user's own HF_HUB_OFFLINE=1 is respected."""
    flag = _offline_flag()
    ours = any(_probed.values())  # go_offline ran after a failed probe: it set HF_HUB_OFFLINE alone
    user = next((n for n in OFFLINE_VARS if _is_on(n) and not (ours and n == "HF_HUB_OFFLINE")), None)
    if flag and (user or not ours):
        raise HubUnreachable(f"{user or flag}=1 is set (offline mode): unset it to reach {endpoint}")
    reason = endpoint_unreachable(endpoint)
    if reason is not None:
        raise HubUnreachable(reason)
    if flag is None:
        yield
        return
    constants = sys.modules.get("huggingface_hub.constants")
    saved = {name: os.environ.pop(name, None) for name in OFFLINE_VARS}
    if constants is not None:
        constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        os.environ.update({name: value for name, value in saved.items() if value is not None})
        if constants is not None:
            constants.HF_HUB_OFFLINE = True


def hub_reachable() -> bool:
    return unreachable_reason() is None


def require_hub(
    what: str, alternatives: str = GENERIC_ALTERNATIVES, *, cached: Callable[[], bool] | None = None
) -> None:
    """Raise HubUnreachable at once unless the Hub can be used, or `cached()` says the files are local
    (then transformers/datasets load them from the cache, in offline mode when the Hub is away)."""
    reason = unreachable_reason()
    if reason is None or (cached is not None and cached()):
        return
    where = "; it is not in the local Hugging Face cache either" if cached is not None else ""
    raise HubUnreachable(f"{what}: {reason}{where}. Offline alternatives: {alternatives}")
