"""Real endpoints for the notify sink's tests, on 127.0.0.1: an Apprise `json://` webhook and an SMTP server."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from tests.support.http import LoopbackHTTPServer

Mode = Literal["ok", "error", "hang"]


@dataclass
class Posted:
    """One notification the webhook accepted."""

    title: str
    message: str
    attachments: list[bytes] = field(default_factory=list)


class WebhookServer(LoopbackHTTPServer):
    """What Apprise's `json://127.0.0.1:PORT/hook` posts to; `mode` makes it fail (500) or hang, then recover."""

    thread_name = "webhook"

    def __init__(self, *, port: int = 0) -> None:
        super().__init__(port=port)
        self.mode: Mode = "ok"
        self.posted: list[Posted] = []
        self.attempts = 0
        self._lock = threading.Lock()
        self.release = threading.Event()  # ends the hangs

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with server._lock:
                    server.attempts += 1
                    mode = server.mode
                if mode == "hang":
                    server.release.wait(60)
                    return  # the client gave up long ago: nothing delivered
                if mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    return
                data = json.loads(body)
                attachments = [base64.b64decode(a["base64"]) for a in data.get("attachments") or []]
                with server._lock:
                    server.posted.append(Posted(data.get("title", ""), data.get("message", ""), attachments))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def wait_posted(self, count: int, timeout: float = 20.0) -> list[Posted]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.posted) >= count:
                    return list(self.posted)
            time.sleep(0.05)
        raise AssertionError(f"webhook: {count} notification(s) not posted within {timeout} s: {self.posted}")


class SmtpServer:
    """aiosmtpd on 127.0.0.1 keeping each message parsed."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self._controller: Any = None
        self.port = 0

    def __enter__(self) -> SmtpServer:
        from aiosmtpd.controller import Controller

        from tests.support.media import free_port

        messages = self.messages

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
                messages.append(parsed)  # type: ignore[arg-type]
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=monitor@example.com&to=ann@example.com&mode=insecure"
