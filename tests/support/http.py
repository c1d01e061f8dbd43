"""One base for the real HTTP servers the tests start on 127.0.0.1, each in a background thread."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackHTTPServer:
    """A threaded HTTP server on 127.0.0.1; subclasses say how to answer in `handler()`.

    `port` 0 picks a free port at the first start; later starts reuse it, which is how
    a test takes a server away and brings it back at the same address.
    """

    thread_name = "http"

    def __init__(self, *, port: int = 0) -> None:
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Self:
        self._server = self._bind(self.handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def _bind(self, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
        for _attempt in range(50):  # a port given back by a stop may linger briefly
            try:
                return ThreadingHTTPServer(("127.0.0.1", self.port), handler)
            except OSError:
                if not self.port:
                    raise
                time.sleep(0.1)
        raise RuntimeError(f"cannot bind 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
