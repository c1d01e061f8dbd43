"""Sequence numbers for the MQTT events: one per alert event, increasing across restarts.

A consumer that may receive an event twice (at-least-once delivery, a retained state read again after a
restart) keeps the highest number it has acted on and ignores anything not above it; Home Assistant's
shipped caregiver automation does exactly that with an `input_number` (examples/homeassistant/).

So the numbers must never go backwards, even after a crash, a `kill -9`, or a lost state dir:

- Numbers are reserved in blocks (`BLOCK`): the end of the reserved range is written durably to
  `<state_dir>/mqtt-sequence.json` before any number of the block is used, so a crash can only skip
  numbers, never reuse them.
- A start never begins below the current Unix time in milliseconds. A monitor that lost its state dir (or
  whose file was unreadable and moved aside) therefore still continues above every number it gave out,
  unless it gave out more than a thousand per second on average. Numbers have gaps; they fit a JSON
  number (and Home Assistant's `input_number`) exactly.

The same file keeps, for each open alert that escalated, the number of its latest escalation (the retained
escalation state carries it, so a consumer can tell an escalation it has handled from a new one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.core.statefile import JsonStateFile

FILE_NAME = "mqtt-sequence.json"
BLOCK = 100


class EventSequence:
    """Hands out increasing event numbers and remembers each escalated alert's latest one."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.file = JsonStateFile(state_dir / FILE_NAME, what="mqtt sequence file")
        self._clock = clock
        self._next = 0
        self._reserved = 0  # numbers below this one may be used without writing the file first
        self._escalations: dict[str, int] = {}
        self._loaded = False

    def load(self) -> None:
        """Read the file (once): numbers continue above the reserved range and the current Unix time.

        Writes the file (the first reserved block): call it where blocking is fine (the sink's start does so
        in a thread)."""
        if self._loaded:
            return
        self._loaded = True
        stored = self.file.load()
        reserved, escalations = 0, {}
        if isinstance(stored, dict) and isinstance(stored.get("reserved"), int):
            reserved = stored["reserved"]
            raw = stored.get("escalations")
            if isinstance(raw, dict):
                escalations = {str(k): v for k, v in raw.items() if isinstance(v, int)}
        elif stored is not None:
            self.file.corrupt("expected {\"reserved\": <int>, \"escalations\": {...}}")
        self._next = max(reserved, int(self._clock() * 1000))
        self._escalations = escalations
        # The first block is reserved now (at start, off the event loop), so the first alert does not wait for it.
        self._reserved = self._next + BLOCK
        self._save()

    def take(self) -> tuple[int, bool]:
        """The next number, and whether a new block was reserved (then `flush()` before using it)."""
        self.load()
        number = self._next
        self._next += 1
        if number < self._reserved:
            return number, False
        self._reserved = number + BLOCK
        self._save()
        return number, True

    async def flush(self) -> None:
        await self.file.flush()

    def escalated(self, alert_id: str, number: int) -> None:
        """`alert_id`'s latest escalation has `number`."""
        self._escalations[alert_id] = number
        self._save()

    def escalation(self, alert_id: str) -> int | None:
        return self._escalations.get(alert_id)

    def ended(self, alert_id: str) -> None:
        """Forget an alert that ended."""
        if self._escalations.pop(alert_id, None) is not None:
            self._save()

    def _save(self) -> None:
        document: dict[str, Any] = {"reserved": self._reserved, "escalations": dict(self._escalations)}
        self.file.save(document)
