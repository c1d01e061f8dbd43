"""Observations: the data that flows from sensors into windows.

An observation is immutable and carries the id of the source that produced it
and the time it was observed (seconds since the epoch, or since the start of a
replayed stream).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


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
# What a source calls with each observation it produces.
Emit = Callable[[Observation], Awaitable[None]]

SourceState = Literal["online", "offline"]


class SourceHealth(Protocol):
    """What every source reports about itself (for readiness, zone state, metrics and stats)."""

    @property
    def state(self) -> SourceState: ...

    @property
    def bad_input(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class InputHealth:
    """The health of a source of activity entries: online or not, and the inputs it could not use."""

    source: str
    state: SourceState
    entries: int = 0
    bad_input: int = 0
    last_error: str | None = None
    truncated: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "state": self.state, "entries": self.entries,
                "bad_input": self.bad_input, "last_error": self.last_error, "truncated": self.truncated}


class ObservationSource(Protocol):
    """Anything that emits observations until it ends or is cancelled, and reports its health."""

    id: str

    async def run(self, emit: Emit) -> None: ...

    def health(self) -> SourceHealth: ...
