"""Rolling windows per zone, bounded by age and count, and the newest-wins hand-off.

A zone's window holds the recent observations of every source in the zone in
time order. When new observations arrived and `min_interval_s` passed since the
last snapshot, the window is snapshotted for assessment. The model stage takes
snapshots through a `LatestSlot` per zone: if the model is busy and a newer
snapshot of the same zone arrives, the older pending one is dropped and counted.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field

from monitor.core.config import PositiveFloat, Section
from sensors.types import Frame, LogEntry, Observation

_window_ids = itertools.count(1)


class WindowSettings(Section):
    """Rolling windows: how much history an assessment sees, and how often."""

    max_age_s: PositiveFloat = 600.0
    max_entries: int = Field(default=12, ge=1, le=1000, description="log entries kept per zone")
    max_frames: int = Field(default=24, ge=1, le=1000, description="camera frames kept per zone")
    min_interval_s: float = Field(default=2.0, ge=0.0)
    max_chars: int = Field(
        default=32_000, ge=1_000, le=10_000_000,
        description="characters of observation text per zone (the prompt's budget); the oldest entries leave first",
    )
    queue_size: int | None = Field(
        default=None, ge=1, le=1000,
        description="ignored, kept so older files stay valid: a zone's newest window replaces a waiting one",
    )


@dataclass(frozen=True, slots=True)
class Window:
    """An immutable snapshot of a zone's recent observations, ready for assessment."""

    id: str
    zone: str
    observations: tuple[Observation, ...]
    new_count: int
    created_at: float
    # Entries that left the zone's history at this snapshot to keep the text within its character budget.
    trimmed: int = 0
    # Notes from the home's own feedback (zones with assessment.feedback_context on): quoted data
    # the prompt shows before the observations, bounded by whoever adds them.
    context: tuple[dict[str, str], ...] = ()

    @property
    def entries(self) -> tuple[LogEntry, ...]:
        return tuple(o for o in self.observations if isinstance(o, LogEntry))

    @property
    def frames(self) -> tuple[Frame, ...]:
        return tuple(o for o in self.observations if isinstance(o, Frame))

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.source for o in self.observations))


class RollingWindow:
    """The recent observations of one zone."""

    def __init__(self, zone: str, *, max_age_s: float, max_entries: int, min_interval_s: float,
                 max_frames: int | None = None, max_chars: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.zone = zone
        self.max_age_s = max_age_s
        self.min_interval_s = min_interval_s
        # One huge entry must not become a huge prompt (and audit record): text is bounded too.
        self.max_chars = max_chars
        # Log entries and frames are capped separately: a busy camera must not push the
        # zone's log entries out of the window.
        self.max_entries = max_entries
        self.max_frames = max_entries if max_frames is None else max_frames
        self._items: deque[Observation] = deque()
        self._new = 0
        self._last_snapshot: float | None = None
        self._clock = clock

    def add(self, observation: Observation) -> None:
        # Keep time order even when sources interleave slightly out of order.
        if self._items and observation.ts < self._items[-1].ts:
            items = sorted([*self._items, observation], key=lambda o: o.ts)
            self._items.clear()
            self._items.extend(items)
        else:
            self._items.append(observation)
        self._new += 1
        self._cap(Frame if isinstance(observation, Frame) else LogEntry)

    def _cap(self, kind: type[Frame] | type[LogEntry]) -> None:
        limit = self.max_frames if kind is Frame else self.max_entries
        excess = sum(1 for o in self._items if isinstance(o, kind)) - limit
        if excess > 0:
            oldest = [o for o in self._items if isinstance(o, kind)][:excess]
            for observation in oldest:
                self._items.remove(observation)

    def _expire(self, now_ts: float) -> None:
        while self._items and now_ts - self._items[0].ts > self.max_age_s:
            self._items.popleft()

    def due(self) -> bool:
        """New observations arrived and the minimum interval has passed."""
        if self._new == 0:
            return False
        if self._last_snapshot is None:
            return True
        return self._clock() - self._last_snapshot >= self.min_interval_s

    def seconds_until_due(self) -> float | None:
        if self._new == 0:
            return None
        if self._last_snapshot is None:
            return 0.0
        return max(0.0, self.min_interval_s - (self._clock() - self._last_snapshot))

    def _trim_to_budget(self) -> int:
        """Drop the oldest observations beyond `max_chars` of text (the newest always stays); returns how many."""
        if self.max_chars is None:
            return 0
        total, keep = 0, len(self._items)
        for index in range(len(self._items) - 1, -1, -1):
            total += text_size(self._items[index])
            if total > self.max_chars and index < len(self._items) - 1:
                break
            keep = index
        for _ in range(keep):
            self._items.popleft()
        return keep

    def snapshot(self) -> Window:
        if self._items:
            self._expire(self._items[-1].ts)
        trimmed = self._trim_to_budget()
        window = Window(
            id=f"{self.zone}-{next(_window_ids)}",
            zone=self.zone,
            observations=tuple(self._items),
            new_count=min(self._new, len(self._items)),
            created_at=time.time(),
            trimmed=trimmed,
        )
        self._new = 0
        self._last_snapshot = self._clock()
        return window


def text_size(observation: Observation) -> int:
    """The characters an observation adds to a prompt (the fields the prompt quotes; frames: their facts)."""
    if isinstance(observation, Frame):
        return sum(len(fact) for fact in observation.facts)
    fields = (observation.clock, observation.location, observation.actor, observation.environment,
              observation.behaviour)
    size = sum(len(value) for value in fields if value)
    return size if observation.behaviour or observation.environment else size + len(observation.text)


class LatestSlot:
    """A one-place mailbox per zone where the newest window wins."""

    def __init__(self) -> None:
        self._pending: dict[str, Window] = {}
        self._order: deque[str] = deque()
        self._ready = asyncio.Condition()
        self.dropped = 0
        self._closed = False

    async def put(self, window: Window) -> Window | None:
        """Offer a window; returns the older window it replaced (dropped), if any."""
        async with self._ready:
            replaced = self._pending.get(window.zone)
            self._pending[window.zone] = window
            if replaced is None:
                self._order.append(window.zone)
            else:
                self.dropped += 1
            self._ready.notify()
            return replaced

    async def get(self) -> Window | None:
        """The next window, oldest zone first; None once closed and empty."""
        async with self._ready:
            await self._ready.wait_for(lambda: bool(self._order) or self._closed)
            if not self._order:
                return None
            zone = self._order.popleft()
            return self._pending.pop(zone)

    async def close(self) -> None:
        async with self._ready:
            self._closed = True
            self._ready.notify_all()

    def __len__(self) -> int:
        return len(self._order)
