"""Rolling windows per zone, bounded by age and count, the newest-wins hand-off, and the observation ledger.

A zone's window holds the recent observations of every source in the zone in the
order the monitor received them (arrival order): a source whose clock lags is
placed where its observation arrived, never behind newer ones where the count
bound would push it out unseen. Age is arrival age too. Each observation keeps its
sensor time as data (the prompt shows it). When new observations arrived and
`min_interval_s` passed since the last snapshot, the window is snapshotted for
assessment. The model stage takes snapshots through a `LatestSlot` per zone: if the
model is busy and a newer snapshot of the same zone arrives, the older pending one
is dropped and counted.

`ObservationLedger` settles every accepted observation exactly once: assessed (in a
window the model assessed), errored (in a window whose assessment failed, never in an
assessed one), or dropped with a named reason (`DROP_REASONS`).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

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


# Why an accepted observation was never assessed. The first three: it left its zone's window before any
# snapshot held it; the next three: every window that held it was dropped for that reason (`shutdown` also
# for what was still waiting when the pipeline stopped).
LeaveReason = Literal["capped", "too_old", "budget", "shutdown"]
DROP_REASONS: tuple[str, ...] = ("capped", "too_old", "budget", "superseded", "monitoring_off", "shutdown")
Outcome = Literal["assessed", "errored", "dropped"]


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
    # The ledger's number of each observation (same order); empty for windows made outside a pipeline.
    seqs: tuple[int, ...] = ()

    @property
    def entries(self) -> tuple[LogEntry, ...]:
        return tuple(o for o in self.observations if isinstance(o, LogEntry))

    @property
    def frames(self) -> tuple[Frame, ...]:
        return tuple(o for o in self.observations if isinstance(o, Frame))

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.source for o in self.observations))


@dataclass(frozen=True, slots=True, eq=False)  # identity: two equal entries are still two arrivals
class Held:
    """An observation in a rolling window: its ledger number and when it arrived (the window's clock)."""

    observation: Observation
    seq: int
    arrived: float


class RollingWindow:
    """The recent observations of one zone, in arrival order.

    `on_leave(seq, reason)` hears every observation that leaves the window (`capped`, `too_old`, `budget`).
    `clock` paces the snapshots (`min_interval_s`); `arrival_clock` (default: `clock`) stamps arrivals and
    measures their age: a replay on recorded or stream time passes that time here.
    """

    def __init__(self, zone: str, *, max_age_s: float, max_entries: int, min_interval_s: float,
                 max_frames: int | None = None, max_chars: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 arrival_clock: Callable[[], float] | None = None,
                 on_leave: Callable[[int, LeaveReason], None] | None = None) -> None:
        self.zone = zone
        self.max_age_s = max_age_s
        self.min_interval_s = min_interval_s
        # One huge entry must not become a huge prompt (and audit record): text is bounded too.
        self.max_chars = max_chars
        # Log entries and frames are capped separately: a busy camera must not push the
        # zone's log entries out of the window.
        self.max_entries = max_entries
        self.max_frames = max_entries if max_frames is None else max_frames
        self._items: deque[Held] = deque()
        self._new = 0
        self._last_snapshot: float | None = None
        self._clock = clock
        self._arrival_clock = arrival_clock or clock
        self._on_leave = on_leave

    def add(self, observation: Observation, seq: int = 0, *, arrived: float | None = None) -> None:
        """Append an observation as arrived now (or at `arrived`, on this window's clock, when moved)."""
        # Arrival order, whatever the sensor's clock says: a lagging clock must not place the
        # observation behind newer ones, where the count bound would push it out before anyone saw it.
        self._items.append(Held(observation, seq, self._arrival_clock() if arrived is None else arrived))
        self._new += 1
        self._cap(Frame if isinstance(observation, Frame) else LogEntry)

    def held(self) -> tuple[Held, ...]:
        """What the window holds, oldest arrival first (for moving it into a rebuilt window)."""
        return tuple(self._items)

    def _cap(self, kind: type[Frame] | type[LogEntry]) -> None:
        limit = self.max_frames if kind is Frame else self.max_entries
        excess = sum(1 for h in self._items if isinstance(h.observation, kind)) - limit
        if excess > 0:
            oldest = [h for h in self._items if isinstance(h.observation, kind)][:excess]
            for held in oldest:
                self._items.remove(held)
                self._left(held, "capped")

    def _expire(self) -> None:
        now = self._arrival_clock()
        while self._items and now - self._items[0].arrived > self.max_age_s:
            self._left(self._items.popleft(), "too_old")

    def _left(self, held: Held, reason: LeaveReason) -> None:
        if self._on_leave is not None:
            self._on_leave(held.seq, reason)

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
            total += text_size(self._items[index].observation)
            if total > self.max_chars and index < len(self._items) - 1:
                break
            keep = index
        for _ in range(keep):
            self._left(self._items.popleft(), "budget")
        return keep

    def snapshot(self) -> Window:
        self._expire()
        trimmed = self._trim_to_budget()
        window = Window(
            id=f"{self.zone}-{next(_window_ids)}",
            zone=self.zone,
            observations=tuple(h.observation for h in self._items),
            new_count=min(self._new, len(self._items)),
            created_at=time.time(),
            trimmed=trimmed,
            seqs=tuple(h.seq for h in self._items),
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


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one accepted observation ended: assessed, errored, or dropped with a reason."""

    zone: str
    source: str
    outcome: Outcome
    reason: str | None = None  # for `dropped`: one of DROP_REASONS


@dataclass(slots=True)
class _Open:
    zone: str
    source: str
    in_window: bool = True
    outstanding: int = 0  # snapshots holding it whose fate is not known yet
    seen: bool = False  # in a snapshot at least once
    failed: bool = False  # in a window whose assessment failed
    dropped: str | None = None  # why the newest dropped window holding it was dropped
    left: LeaveReason | None = None


class ObservationLedger:
    """Settles every accepted observation exactly once and hands each settlement to `settle`.

    An observation is open while it is in its zone's rolling window or in a snapshot whose
    assessment is not finished. It is `assessed` as soon as one window holding it is assessed;
    once it is neither in the window nor in any unfinished snapshot it is `errored` (it was in
    a window whose assessment failed) or `dropped` with a reason. So at any quiet moment:
    accepted == assessed + errored + dropped + open.
    """

    def __init__(self, settle: Callable[[Settlement], None]) -> None:
        self._open: dict[int, _Open] = {}
        self._seqs = itertools.count(1)
        self._settle = settle

    @property
    def open(self) -> int:
        """Observations accepted and not settled yet."""
        return len(self._open)

    def open_by_source(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self._open.values():
            counts[record.source] = counts.get(record.source, 0) + 1
        return counts

    def accept(self, zone: str, observation: Observation) -> int:
        """Open an observation's account; its number, for the window and the snapshots."""
        seq = next(self._seqs)
        self._open[seq] = _Open(zone, observation.source)
        return seq

    def left(self, seq: int, reason: LeaveReason) -> None:
        """The observation left its zone's rolling window."""
        if (record := self._open.get(seq)) is not None:
            record.in_window, record.left = False, reason
            self._close_if_done(seq, record)

    def snapshotted(self, window: Window) -> None:
        for record in self._records(window):
            record.outstanding += 1
            record.seen = True

    def assessed(self, window: Window) -> None:
        for seq in window.seqs:
            if (record := self._open.pop(seq, None)) is not None:
                self._settle(Settlement(record.zone, record.source, "assessed"))

    def failed(self, window: Window) -> None:
        for seq, record in self._pairs(window):
            record.outstanding -= 1
            record.failed = True
            self._close_if_done(seq, record)

    def dropped(self, window: Window, reason: str) -> None:
        for seq, record in self._pairs(window):
            record.outstanding -= 1
            record.dropped = reason
            self._close_if_done(seq, record)

    def close(self, seqs: Iterable[int]) -> None:
        """The pipeline stopped: what is still in the windows (`seqs`) will not be assessed."""
        for seq in seqs:
            self.left(seq, "shutdown")

    def _pairs(self, window: Window) -> list[tuple[int, _Open]]:
        return [(seq, record) for seq in window.seqs if (record := self._open.get(seq)) is not None]

    def _records(self, window: Window) -> list[_Open]:
        return [record for _seq, record in self._pairs(window)]

    def _close_if_done(self, seq: int, record: _Open) -> None:
        if record.in_window or record.outstanding > 0:
            return
        del self._open[seq]
        if record.failed:
            self._settle(Settlement(record.zone, record.source, "errored"))
            return
        reason: str | None = record.left
        if record.seen and record.left != "shutdown":
            reason = record.dropped or record.left  # the windows that held it were dropped: that is why
        self._settle(Settlement(record.zone, record.source, "dropped", reason or "shutdown"))


# A source whose clock is this far off ours (either way, as a running median) is logged once and noted
# in its health: its observations are placed by arrival, so nothing is lost, but its times are off.
SKEW_WARN_S = 10.0


class ClockSkew:
    """Per source: how far its clock is behind ours (arrival minus sensor time), as a running median.

    A median over the recent `samples` entries, so one buffered burst or one odd timestamp does not
    move it; positive means the source's clock is behind (or its entries arrive late).
    """

    def __init__(self, samples: int = 31) -> None:
        self._samples = samples
        self._offsets: dict[str, deque[float]] = {}

    def observe(self, source: str, sensor_ts: float, arrived_wall: float) -> float:
        """Note one arrival; the source's skew estimate in seconds."""
        offsets = self._offsets.get(source)
        if offsets is None:
            offsets = self._offsets[source] = deque(maxlen=self._samples)
        offsets.append(arrived_wall - sensor_ts)
        return statistics.median(offsets)

    def estimates(self) -> dict[str, float]:
        """Each source's skew in seconds (sources that delivered something)."""
        return {source: statistics.median(offsets) for source, offsets in self._offsets.items() if offsets}

    def forget(self, source: str) -> None:
        self._offsets.pop(source, None)
