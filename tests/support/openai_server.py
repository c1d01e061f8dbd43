"""A scripted OpenAI-compatible HTTP server on 127.0.0.1: a real socket for the real `openai` client.

Tests script what each chat completion answers: a reply text, an HTTP status, or a
delay; a misbehaving server too: a raw body that is not a chat completion (`{not json`)
and extra headers (`Retry-After`). Requests are recorded, with the time each arrived,
so tests can assert on prompts, count calls and measure the spacing of retries.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.http import LoopbackHTTPServer


@dataclass
class Action:
    """What the server does for one request."""

    text: str | None = None
    status: int = 200
    delay_s: float = 0.0
    prompt_tokens: int = 42
    completion_tokens: int = 17
    body: bytes | None = None  # sent as is instead of a chat completion (or an error object)
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"  # "length": the reply stopped at the token limit


def reply(payload: dict[str, Any] | str, **kwargs: Any) -> Action:
    return Action(text=payload if isinstance(payload, str) else json.dumps(payload), **kwargs)


DANGER = {
    "danger": True, "severity": "critical", "hazard": "hot oil fire",
    "reason": "Wet food is about to go into smoking oil.", "advice": "Turn off the burner now.",
    "evidence": ["dense smoke above the pan"], "confidence": 0.9,
}
SAFE = {"danger": False, "severity": "info", "hazard": "", "reason": "Nothing risky.", "advice": "",
        "evidence": [], "confidence": 0.8}


class ScriptedOpenAIServer(LoopbackHTTPServer):
    """Serve `/v1/chat/completions` and `/v1/models` from a script of actions.

    `script` is consumed in order; when empty, `default` (or `responder`, given the request) answers.
    """

    thread_name = "scripted-openai"

    def __init__(self, *, model: str = "scripted-vlm", default: Action | None = None,
                 responder: Callable[[dict[str, Any]], Action] | None = None, port: int = 0) -> None:
        super().__init__(port=port)
        self.model = model
        self.default = default or reply(SAFE)
        self.responder = responder
        self.script: deque[Action] = deque()
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each chat request
        self.authorizations: list[str | None] = []  # the Authorization header of each chat request
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def push(self, *actions: Action) -> None:
        with self._lock:
            self.script.extend(actions)

    def next_action(self, body: dict[str, Any]) -> Action:
        with self._lock:
            self.requests.append(body)
            self.arrivals.append(time.monotonic())
            if self.script:
                return self.script.popleft()
        return self.responder(body) if self.responder else self.default

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two sends; don't wait 40 ms between

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if len(raw) < length or not raw:  # a client killed mid-request (a test stopping a replay)
                    self._send(400, {"error": {"message": "request cut off"}})
                    return
                body = json.loads(raw)
                with server._lock:
                    server.authorizations.append(self.headers.get("Authorization"))
                action = server.next_action(body)
                if action.delay_s:
                    time.sleep(action.delay_s)
                if action.body is not None:
                    self._send_bytes(action.status, action.body, action.headers)
                    return
                if action.status != 200:
                    self._send(action.status, {"error": {"message": f"scripted HTTP {action.status}"}},
                               action.headers)
                    return
                self._send(200, {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": server.model,
                    "choices": [{"index": 0, "finish_reason": action.finish_reason,
                                 "message": {"role": "assistant", "content": action.text}}],
                    "usage": {"prompt_tokens": action.prompt_tokens, "completion_tokens": action.completion_tokens,
                              "total_tokens": action.prompt_tokens + action.completion_tokens},
                })

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._send_bytes(status, json.dumps(payload).encode(), headers)

            def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (attempt timeout); nothing to tell it

        return Handler
