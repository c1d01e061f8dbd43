"""Where alerts go. Every sink implements the same small protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # settings import this package for MqttSettings; avoid the cycle at run time
    from monitor.alerts import AlertEvent


class AlertSink(Protocol):
    """A destination for alert events. `publish` must not lose an accepted event."""

    name: str

    async def start(self) -> None: ...

    async def publish(self, event: AlertEvent) -> None: ...

    async def close(self) -> None: ...
