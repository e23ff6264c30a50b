"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for judge tests.

Answers come from `script` (a queue of `Reply`, consumed in order) and, when it is empty, from
`responder(body) -> Reply` (default: a rating derived from the prompt, so every answer gets a
stable, varied score). Every request is recorded (path, headers, JSON body) for the tests to count.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str | None = None  # the judge's text (status 200)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (timeouts)
    raw: bytes | None = None  # a body sent as is (malformed responses)


def user_text(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def stable_rating(body: dict[str, Any]) -> int:
    """1-10 from the user prompt (so different answers get different, reproducible ratings)."""
    return 1 + zlib.crc32(user_text(body).encode()) % 10


def default_responder(body: dict[str, Any]) -> Reply:
    text = user_text(body)
    if "[The Start of Assistant A's Answer]" in text or "Assistant B's Conversation" in text:
        return Reply(f"Both are similar. [[{'ABC'[zlib.crc32(text.encode()) % 3]}]]")
    return Reply(f"The answer is short. Rating: [[{stable_rating(body)}]]")


class JudgeServer:
    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.responder: Callable[[dict[str, Any]], Reply] = default_responder
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    reply = server.script.popleft() if server.script else None
                reply = reply or server.responder(body)
                time.sleep(reply.delay)
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status == 200:
                    payload = json.dumps(
                        {
                            "id": "cmpl-test",
                            "object": "chat.completion",
                            "model": body.get("model"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": reply.content},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    ).encode()
                else:
                    payload = json.dumps({"error": {"message": f"scripted {reply.status}"}}).encode()
                try:
                    self.send_response(reply.status)
                    for k, v in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
