"""The HTTP client under the `openai` backend: openai's own, with the answer's first bytes ACKed at once.

A server that writes a response's headers and its body in two sends without TCP_NODELAY
(Python's `http.server`, and so many small model servers and test stubs) holds the body
back until the headers are acknowledged (Nagle's algorithm), and Linux delays that
acknowledgement by 40 ms on a connection that looks interactive. Every call then takes
40 ms longer than the model: against such a server, a 200 ms model cost 244 ms a call.

Arming TCP_QUICKACK after each request is written (and before each read) makes the kernel
acknowledge at once: the same calls took 1.5 ms instead of 44 ms against a model that
answers at once. It costs one system call per read and changes nothing else: same client,
same pool limits, same timeouts.

openai's HTTP client takes a network backend only through its connection pool, so the pool's
backend is wrapped after the client is built. Where any of that is not there (a platform
without TCP_QUICKACK, another openai or httpx release), the client is openai's default as it is.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import structlog

log = structlog.get_logger(__name__)
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def http_client() -> Any | None:
    """openai's default async HTTP client with quick ACKs, or None (use openai's default) where unavailable."""
    import openai  # the caller (openai_compat) has imported it already

    if QUICKACK is None:
        return None
    client = openai.DefaultAsyncHttpxClient()
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if pool is None or backend is None:
        log.debug("quick ACKs unavailable with this HTTP client; using it as it is", client=type(client).__name__)
        return client
    pool._network_backend = QuickAckBackend(backend, QUICKACK)
    return client


def arm_quickack(sock: socket.socket | None, option: int) -> None:
    """Ask the kernel to acknowledge what arrives next on `sock` at once (not sticky: re-armed per use)."""
    if sock is not None:
        # Not a TCP socket after all (a Unix socket, a proxy's pipe): nothing to speed up.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)


class QuickAckStream:
    """A network stream (httpcore's interface) that re-arms quick ACKs around each write and read."""

    def __init__(self, inner: Any, option: int) -> None:
        self._inner = inner
        self._option = option
        # Looked up once: the stream's extra-info lookup builds a table of every attribute per call.
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 (httpcore's)
        arm_quickack(self._socket, self._option)
        data: bytes = await self._inner.read(max_bytes, timeout)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 (httpcore's)
        await self._inner.write(buffer, timeout)
        arm_quickack(self._socket, self._option)  # the answer's headers are next: ACK them at once

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, *args: Any, **kwargs: Any) -> QuickAckStream:
        return QuickAckStream(await self._inner.start_tls(*args, **kwargs), self._option)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class QuickAckBackend:
    """A network backend (httpcore's interface) whose TCP streams are `QuickAckStream`s."""

    def __init__(self, inner: Any, option: int) -> None:
        self._inner = inner
        self._option = option

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> QuickAckStream:
        return QuickAckStream(await self._inner.connect_tcp(*args, **kwargs), self._option)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
        return await self._inner.connect_unix_socket(*args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
