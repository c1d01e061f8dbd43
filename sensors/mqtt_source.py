"""An MQTT activity-log source: JSON activity events from a topic, fed into a zone's window.

Each message is one JSON object like a JSONL log line (``{"ts": ..., "text":
..., "location": ...}``; `ts` optional, epoch seconds or ISO-8601); a payload
with several lines is read as several events. Bad payloads are logged with
the topic and counted in `bad_messages`; they never stop the source. A payload
larger than `max_payload_bytes` is rejected unread (counted in `oversized` as
well), and every text field of an entry is cut to `max_entry_chars`.
Retained messages are skipped (counted in `skipped_retained`): an activity
event is news, not state, and a retained one would be replayed as new on
every reconnect. The source reconnects with backoff until cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiomqtt
import structlog

from monitor.core.aio import Backoff
from monitor.core.errors import LogParseError
from monitor.core.text import redact_credentials
from monitor.mqtt.client import log_connect_failure, make_client
from monitor.mqtt.settings import MqttSettings
from sensors.logs.parsers import DEFAULT_MAX_ENTRY_CHARS, cap_entry, parse_jsonl_line
from sensors.types import Emit, InputHealth, LogEntry

Clock = Callable[[], float]
# One activity event is a line of JSON; 64 KiB is generous, and a bigger payload is never parsed.
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024


class MqttActivitySource:
    """Subscribe to `topic` and emit one `LogEntry` per JSON activity event."""

    def __init__(self, source_id: str, settings: MqttSettings, *, topic: str, clock: Clock = time.time,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                 max_entry_chars: int = DEFAULT_MAX_ENTRY_CHARS) -> None:
        self.id = source_id
        self.settings = settings
        self.topic = topic
        self.max_payload_bytes = max_payload_bytes
        self.max_entry_chars = max_entry_chars
        self.ended = False
        self.entries_emitted = 0
        self.bad_messages = 0
        self.oversized = 0
        self.truncated = 0
        self.skipped_retained = 0
        self.last_error: str | None = None
        self._clock = clock
        self._lineno = 0
        self._subscribed = asyncio.Event()
        self._log: structlog.typing.FilteringBoundLogger = structlog.get_logger("sensors.mqtt_source").bind(
            source=source_id, topic=topic)

    def __repr__(self) -> str:
        return f"MqttActivitySource(id={self.id!r}, broker={self.settings.broker!r}, topic={self.topic!r})"

    def health(self) -> InputHealth:
        """Online while subscribed; with the events it emitted and the payloads it could not parse."""
        online = self._subscribed.is_set() and not self.ended
        return InputHealth(self.id, "online" if online else "offline", entries=self.entries_emitted,
                           bad_input=self.bad_messages, last_error=self.last_error, truncated=self.truncated)

    async def wait_subscribed(self) -> None:
        """Wait until the subscription is in place (tests, readiness)."""
        await self._subscribed.wait()

    async def run(self, emit: Emit) -> None:
        """Emit entries as events arrive; returns only by cancellation."""
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        self.ended = False  # run again after a failure (the pipeline restarts a failed source)
        try:
            while True:
                try:
                    await self._session(emit, backoff)
                except aiomqtt.MqttError as exc:
                    self._subscribed.clear()
                    self.last_error = redact_credentials(str(exc))
                    delay = backoff.next()
                    log_connect_failure(self.settings, exc, delay, role=f"activity source '{self.id}'")
                    await asyncio.sleep(delay)
        except Exception as exc:
            self.last_error = redact_credentials(str(exc))
            raise
        finally:
            self._subscribed.clear()
            self.ended = True

    async def _session(self, emit: Emit, backoff: Backoff) -> None:
        client_id = self.settings.client_id
        # With a stable client id, a persistent session lets the broker queue events while we are away.
        client = make_client(self.settings, identifier=f"{client_id}-{self.id}" if client_id else None,
                             clean_session=client_id is None)
        async with client:
            backoff.reset()
            await client.subscribe(self.topic, qos=1)
            self._subscribed.set()
            self._log.info("mqtt activity source subscribed", broker=self.settings.broker)
            async for message in client.messages:
                if message.retain:
                    self.skipped_retained += 1
                    continue
                await self._emit_all(self._parse(message.payload), emit)

    def _parse(self, payload: object) -> list[LogEntry]:
        if not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        if len(payload) > self.max_payload_bytes:
            self.oversized += 1
            self._bad(f"payload of {len(payload)} bytes is larger than max_payload_bytes={self.max_payload_bytes}; "
                      "rejected unread")
            return []
        text = bytes(payload).decode("utf-8", errors="replace")
        entries: list[LogEntry] = []
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            self._bad("empty payload")
        for line in lines:
            self._lineno += 1
            try:
                entries.append(parse_jsonl_line(line, source=self.id, lineno=self._lineno, now=self._clock()))
            except LogParseError as exc:
                self._bad(str(exc))
        return entries

    def _bad(self, error: str) -> None:
        self.bad_messages += 1
        self._log.warning("bad mqtt activity message", error=error)

    async def _emit_all(self, entries: list[LogEntry], emit: Emit) -> None:
        for entry in entries:
            await emit(self._bounded(entry))
            self.entries_emitted += 1

    def _bounded(self, entry: LogEntry) -> LogEntry:
        capped, cut = cap_entry(entry, self.max_entry_chars)
        if cut:
            self.truncated += 1
            self._log.warning("activity event cut to max_entry_chars", chars_cut=cut,
                              max_entry_chars=self.max_entry_chars, truncated_total=self.truncated)
        return capped
