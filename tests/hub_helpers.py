"""Loopback stand-ins for the Hugging Face Hub, and a fixture helper that keeps offline mode local.

`align.util.offline` switches the whole process to offline mode when the Hub is unreachable; tests
must undo that (environment and the already-imported constants), or later tests would inherit it.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def isolate_hub(monkeypatch: pytest.MonkeyPatch, cache: Path, endpoint: str | None = None) -> None:
    """Hub state restored after the test; an empty HF cache; no proxies (the servers are loopback)."""
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *PROXY_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            monkeypatch.setattr(datasets_config, name, getattr(datasets_config, name))
    if endpoint is not None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
    else:
        monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # so monkeypatch restores whatever the probe writes
    monkeypatch.delenv("HF_HUB_OFFLINE")


def closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Listens (the kernel completes the TCP handshake) but never answers a byte."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@contextlib.contextmanager
def answering_server(status: int = 404) -> Iterator[int]:
    """Answers every request with `status` (any HTTP answer means the Hub is there)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def hub_server(token: str | None, echo_auth: bool = False) -> Iterator:
    """A running hub stand-in (tests/hub_server.py) on loopback; yields its HubServer."""
    from hub_server import HubServer, serve

    hub = HubServer(token, echo_auth=echo_auth)
    server, _ = serve(hub)
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
