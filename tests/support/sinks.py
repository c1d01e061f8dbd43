"""In-memory alert sinks for pipeline tests."""

from __future__ import annotations

from monitor.alerts import AlertEvent


class Collecting:
    """A sink that keeps every alert event it is given."""

    name = "collecting"
    connected = None
    backlog = None

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    async def start(self) -> None:
        return None

    async def publish(self, event: AlertEvent) -> None:
        self.events.append(event)

    async def close(self) -> None:
        return None
