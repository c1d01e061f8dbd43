"""Observations: the data that flows from sensors into windows.

An observation is immutable and carries the id of the source that produced it
and the time it was observed (seconds since the epoch, or since the start of a
replayed stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of an activity log, as the monitor sees it.

    `clock` keeps the time as written in the log (PaSBench logs carry a clock
    time of day such as ``06:45 AM`` and no date); `ts` is when the monitor
    observed the entry.
    """

    source: str
    ts: float
    text: str
    clock: str | None = None
    location: str | None = None
    environment: str | None = None
    behaviour: str | None = None
    actor: str | None = None
    raw: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ts": self.ts,
            "clock": self.clock,
            "location": self.location,
            "environment": self.environment,
            "behaviour": self.behaviour,
            "actor": self.actor,
            "text": self.text,
            "raw": self.raw,
        }


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled camera frame, JPEG-encoded off the event loop.

    `change` is the change score against the previous sampled frame (0..1).
    """

    source: str
    ts: float
    jpeg: bytes
    width: int
    height: int
    change: float = 0.0
    facts: tuple[str, ...] = field(default_factory=tuple)


Observation = LogEntry | Frame
