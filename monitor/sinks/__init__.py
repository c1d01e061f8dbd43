"""Where alerts go. Every sink implements the same small protocol."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from monitor.alerts import AlertEvent


class AlertSink(Protocol):
    """A destination for alert events. `publish` must not lose an accepted event."""

    name: str

    @property
    def connected(self) -> bool | None:
        """Whether the sink reaches its destination now; None for sinks with no connection to report."""
        ...

    @property
    def backlog(self) -> int | None:
        """Events accepted but not yet delivered; None for sinks that deliver before `publish` returns."""
        ...

    async def start(self) -> None: ...

    async def publish(self, event: AlertEvent) -> None: ...

    async def close(self) -> None: ...


@contextlib.asynccontextmanager
async def running(sinks: Sequence[AlertSink]) -> AsyncIterator[Sequence[AlertSink]]:
    """Start `sinks` in order, and close them in order however the block ends."""
    started: list[AlertSink] = []
    try:
        for sink in sinks:
            await sink.start()
            started.append(sink)
        yield sinks
    finally:
        for sink in started:
            await sink.close()
