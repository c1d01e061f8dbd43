"""The escalation engine's life in the daemon: acknowledgements in, escalation and ack events out.

The pipeline calls `annotate` on every event it decides and `step` from its
alert-expiry task (at least once a second, at once when `wake` is set), and
delivers what `step` returns through its own publishing path. Escalations thus
reach the sinks with the same guarantees as every other alert event (a shielded
publish, held during a sink swap on reload, counted by the observers), and none
is decided after the pipeline stopped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

import structlog

from monitor.alerts import AlertEvent
from monitor.escalation.engine import AckRequest, AckResult, Escalator
from monitor.escalation.spool import AckSpool

log = structlog.get_logger("monitor.escalation")

_MAX_WAITING = 256  # acknowledgements waiting for the next step; a flood past this drops the oldest


class Escalation:
    """Feeds the `Escalator` the acknowledgements that arrived (MQTT, the CLI's spool) and its clock."""

    def __init__(self, escalator: Escalator, *, state_dir: Path | None = None) -> None:
        self.escalator = escalator
        self.spool = AckSpool(state_dir) if state_dir is not None else None
        self.wake = asyncio.Event()
        self._waiting: deque[AckRequest] = deque(maxlen=_MAX_WAITING)
        self._spool_error: str | None = None

    def open(self) -> None:
        """Create the spool folder `monitor ack` writes to (at daemon start)."""
        if self.spool is not None:
            self.spool.open()

    def request(self, request: AckRequest) -> None:
        """Queue an acknowledgement (safe from any callback on the event loop); applied at the next step."""
        self._waiting.append(request)
        self.wake.set()

    def annotate(self, event: AlertEvent) -> AlertEvent:
        return self.escalator.annotate(event)

    async def step(self) -> list[AlertEvent]:
        """Apply waiting acknowledgements, then decide due escalations; the events to publish."""
        self.wake.clear()
        if self.spool is not None:
            self._waiting.extend(await self._spooled())
        events: list[AlertEvent] = []
        while self._waiting:
            request = self._waiting.popleft()
            result = self.escalator.acknowledge(request)
            events.extend(result.events)
            if result.status != "acknowledged":
                log.info("acknowledgement changed nothing", status=result.status, detail=result.detail,
                         via=request.via, by=request.by)
            if request.reply_to is not None and self.spool is not None:
                await self._answer(request.reply_to, result)
        events.extend(self.escalator.tick())
        if events:
            # On disk before anyone hears of it: a crash after publishing must not repeat a level at restart.
            await self.escalator.flush()
        return events

    # A broken spool folder must cost `monitor ack`, never the alert lifecycle that runs in the same task.
    async def _spooled(self) -> list[AckRequest]:
        assert self.spool is not None
        try:
            return await asyncio.to_thread(self.spool.take)
        except OSError as exc:
            self._spool_failed(exc)
            return []

    async def _answer(self, request_id: str, result: AckResult) -> None:
        assert self.spool is not None
        try:
            await asyncio.to_thread(self.spool.answer, request_id, result)
        except OSError as exc:
            self._spool_failed(exc)

    def _spool_failed(self, exc: OSError) -> None:
        if self._spool_error != str(exc):  # once per distinct problem, not once a second
            self._spool_error = str(exc)
            log.error("monitor ack requests cannot be read or answered", folder=str(self.spool and self.spool.path),
                      error=str(exc), fix="check the owner and mode of the state directory (service.state_dir)")
