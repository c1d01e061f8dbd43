"""Zones: the places the monitor watches, and whether it can see each of them right now.

Sources that share a `zone` share one window. `ZoneStatus` keeps each zone's
state, the one answer read wherever a person looks (the retained MQTT
`<zone>/state`, Home Assistant's hazard and problem sensors, `/readyz`,
`/metrics`, the stats topic), in this order of precedence:

1. `off`: monitoring of the zone is switched off (wins over everything).
2. `blind`: every source of the zone is offline, or observations have waited
   `blind_after_s` with no successful assessment. A source that has not been
   online yet (a camera connecting at start-up) is waited for, up to
   `blind_after_s`: meanwhile its zone is `unknown`.
3. `hazard`: an alert of the zone is open (while a fallback backend assesses the zone, the reason
   says so: a hazard is still a hazard when degraded).
4. `unknown`: not assessed since start, since monitoring was switched back on,
   or since the zone's sources came back online after all were offline: only a
   window snapshotted after that moment counts as a fresh assessment.
5. `degraded`: watched, but the newest successful assessment came from a fallback backend, not the
   first one configured; the reason names the backend and what is lost ("clear (degraded): assessed
   by ollama-qwen (fallback): frames not seen; ..."). Never shown as plain clear (docs/failover.md).
6. `clear`: no alert is open; the reason says why (the last assessment found no
   hazard, or the alert ended and how).

A zone that has an open alert keeps its hazard fields in every state: a blind
zone whose hazard is still open says both. A quiet zone (no new observations)
is not blind: there is nothing to judge. Blindness is measured from the
observations: the oldest one no successful assessment has covered (taken as the
moment the last assessed window was snapshotted, so it errs early, never late).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from monitor.assess.acoustic import alarm_kinds
from monitor.assess.settings import AssessmentSettings
from monitor.assess.verdict import SEVERITY_RANK
from monitor.control import ZoneControls
from monitor.core.config import DisplayName, Identifier, Section
from monitor.core.text import iso_time, shorten
from monitor.observer import Observer, Settled
from sensors.types import Observation, SourceHealth

if TYPE_CHECKING:
    from monitor.alerts import Alert, AlertEvent
    from monitor.windows import Window
from monitor.escalation.settings import QuietPeriod, ZoneEscalation


class ZoneSettings(Section):
    """A zone groups sources (by their `zone` key) and may override the assessment strategy.

    `name` is how a person calls it (Home Assistant's device name); `area` is the Home Assistant
    area its device is suggested for.
    """

    id: Identifier
    name: DisplayName | None = Field(default=None, description="how a person calls it, at most 100 characters")
    area: DisplayName | None = Field(default=None, description="its Home Assistant area, at most 100 characters")
    assessment: AssessmentSettings | None = None

    # Reaching the person (docs/escalation.md): this zone's escalation overrides and quiet hours.
    escalation: ZoneEscalation | None = None
    quiet_hours: list[QuietPeriod] = Field(
        default_factory=list, description='local times when info alerts are silenced, e.g. ["22:00-07:00"]')
    # Privacy (docs/notifications.md): false keeps none of this zone's frames as evidence, shows none, sends none.
    evidence: bool = Field(default=True, description="keep and show the frames each warning was judged on")


ZoneStateName = Literal["clear", "hazard", "degraded", "unknown", "off", "blind"]
ZONE_STATES: tuple[ZoneStateName, ...] = ("clear", "hazard", "degraded", "unknown", "off", "blind")
# States in which the zone is watched and its verdict current; the others are a monitoring problem.
# Degraded is watched (a fallback backend assesses it), and says so wherever it is shown.
SEEING: frozenset[str] = frozenset({"clear", "hazard", "degraded"})
DEFAULT_BLIND_AFTER_S = 120.0
_ERROR_CHARS = 160

SourceHealths = Mapping[str, Sequence[tuple[str, SourceHealth]]]


@dataclass(frozen=True, slots=True)
class ZoneState:
    """One zone's state with a reason a person can read, and its most severe open alert if any."""

    zone: str
    state: ZoneStateName
    reason: str
    since: float  # wall clock: when the zone entered this state (hazard: when its alert opened)
    alert: Alert | None = None
    active_alerts: int = 0
    backend: str | None = None  # the backend of the newest successful assessment (model.name)
    degraded: str | None = None  # a fallback assessed the zone: which, and what is lost
    alarms: tuple[str, ...] = ()  # the alarms (smoke, carbon_monoxide) whose alert is open: monitor/assess/acoustic

    @property
    def sees(self) -> bool:
        """Whether the zone is watched and its verdict current (clear, hazard or degraded)."""
        return self.state in SEEING

    def to_json(self) -> dict[str, Any]:
        since = round(self.since, 3)  # one value for both forms, so they always agree
        body: dict[str, Any] = {"state": self.state, "reason": self.reason, "since": iso_time(since),
                                "since_epoch": since}
        if self.backend is not None:
            body["backend"] = self.backend
        if self.degraded is not None:
            body["degraded"] = self.degraded
        if self.alert is not None:
            body.update(hazard=self.alert.hazard, severity=self.alert.severity, alert_id=self.alert.id,
                        active_alerts=self.active_alerts, **self.alert.reach_state())
        if self.alarms:
            body["alarms"] = list(self.alarms)
        return body


@dataclass
class _Book:
    """What the tracker knows about one zone; times are the tracker's monotonic clock unless named wall."""

    first_unjudged: float | None = None  # oldest observation no successful assessment covered
    last_arrival: float | None = None
    covered_until: float | None = None  # when the newest successfully assessed window was snapshotted
    assessed: bool = False  # since start, or since monitoring or the sources came back
    resumed: str | None = None  # what came back ("monitoring was switched on", "its sources came back online")
    fresh_after: float | None = None  # only windows snapshotted after this assess the zone afresh
    offline: bool = False  # every source was offline (not merely starting) at the last evaluation
    last_danger: str | None = None  # the hazard the last successful assessment found, if any
    last_end: tuple[str, str, float] | None = None  # the newest ended alert: hazard, end reason, wall time
    last_success_wall: float | None = None
    backend: str | None = None  # the backend of the newest successful assessment
    degraded: str | None = None  # what the newest successful assessment lost, when a fallback made it
    last_error: str | None = None  # of the newest failed assessment since the last success
    monitoring: bool = True
    open: dict[str, Alert] = field(default_factory=dict)
    current: ZoneState | None = None


class ZoneStatus(Observer):
    """Tracks each zone's state from what the pipeline reports, the sources' health and the controls.

    A pipeline observer (observations, settled windows, published alerts). Time-based changes (a zone
    going blind, a source going offline) are found by `refresh()`, which the service calls every second;
    every change is passed to the `listeners` (the MQTT sink republishes the zone's retained state).
    """

    def __init__(self, zones: Iterable[str] = (), *, blind_after_s: float = DEFAULT_BLIND_AFTER_S,
                 controls: ZoneControls | None = None, sources: Callable[[], SourceHealths] = dict,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.blind_after_s = blind_after_s
        self.controls = controls if controls is not None else ZoneControls()
        self.sources = sources
        self.listeners: list[Callable[[ZoneState], None]] = []
        self._clock = clock
        self._wall = wall
        self._books: dict[str, _Book] = {}
        self._zones: list[str] = []
        self._first_seen: dict[str, float] = {}  # source id -> when the tracker first saw it
        self._been_online: set[str] = set()
        self.set_zones(zones)
        self.controls.listeners.append(self._control_changed)

    # -- reading ---------------------------------------------------------------------------
    @property
    def zones(self) -> list[str]:
        return list(self._zones)

    def state(self, zone: str) -> ZoneState:
        """The zone's state as last evaluated (evaluated now if it never was)."""
        book = self._book(zone)
        if book.current is None:
            book.current = self._evaluate(zone, book)
        return book.current

    def states(self) -> dict[str, ZoneState]:
        """Every configured zone's state, in configuration order."""
        return {zone: self.state(zone) for zone in self._zones}

    def blind(self) -> list[str]:
        return [zone for zone, state in self.states().items() if state.state == "blind"]

    def open_alerts(self, zone: str) -> list[Alert]:
        return list(self._book(zone).open.values())

    def unseen(self, zone: str) -> str | None:
        """Why the zone cannot be assessed now, so its alerts can be neither confirmed nor cleared; None if it can.

        Blind, its sources offline or still connecting, its newest assessment failed, or its sources just
        came back and nothing fresh was assessed yet. A zone switched off is not unseen: that is its own end.
        """
        book = self._book(zone)
        if not self.controls.is_monitoring(zone):
            return None
        if (offline := self._all_offline(zone)) is not None:
            return offline[1]
        self._note_online(book)
        if book.first_unjudged is not None and self._clock() - book.first_unjudged >= self.blind_after_s:
            return self._blind_reason(book)
        if book.last_error is not None:
            return f"its newest assessment failed: {book.last_error}"
        if book.resumed is not None and not book.assessed:
            return f"not assessed since {book.resumed}"
        return None

    def last_success_at(self, zone: str | None = None) -> float | None:
        """Wall time of the newest successful assessment of `zone` (of any zone when None)."""
        books = [self._book(zone)] if zone is not None else list(self._books.values())
        times = [b.last_success_wall for b in books if b.last_success_wall is not None]
        return max(times, default=None)

    def to_json(self) -> dict[str, dict[str, Any]]:
        """Each zone's state for the stats topic: the state payload plus the last successful assessment."""
        out = {}
        for zone, state in self.states().items():
            last = self._book(zone).last_success_wall
            out[zone] = {**state.to_json(), "last_assessed_at": iso_time(last) if last is not None else None}
        return out

    # -- changes ---------------------------------------------------------------------------
    def set_zones(self, zones: Iterable[str]) -> None:
        """The configured zones (at start and after a reload); books of removed zones are dropped."""
        self._zones = list(dict.fromkeys(zones))
        for zone in self._zones:
            self._book(zone)
        for zone in set(self._books) - set(self._zones):
            if not self._books[zone].open:
                del self._books[zone]

    def refresh(self) -> list[ZoneState]:
        """Evaluate every zone now; the states that changed (already passed to the listeners)."""
        changed = []
        for zone in list(self._books):
            if (state := self._update(zone)) is not None:
                changed.append(state)
        return changed

    def alert_event(self, event: AlertEvent) -> None:
        """Open or close the event's alert (idempotent: the MQTT sink and the pipeline both report it)."""
        self._apply(event)
        self._update(event.alert.zone)

    # -- PipelineObserver --------------------------------------------------------------------
    def observation_received(self, zone: str, observation: Observation) -> None:
        book = self._book(zone)
        now = self._clock()
        book.last_arrival = now
        if book.first_unjudged is None:
            book.first_unjudged = now
        self._been_online.add(observation.source)  # it delivered: it is not merely starting

    def window_settled(self, settled: Settled) -> None:
        window, book = settled.window, self._book(settled.window.zone)
        if settled.error is not None:
            book.last_error = f"{settled.error.kind}: {shorten(settled.error, _ERROR_CHARS)}"
        else:
            self._covered(book, window)
            if settled.verdict is not None:
                book.backend, book.degraded = settled.verdict.backend or None, settled.verdict.degraded
            assessment = settled.verdict.assessment if settled.verdict is not None else None
            book.last_danger = assessment.hazard.strip() or "unspecified hazard" if assessment and assessment.danger \
                else None
        if settled.event is not None:
            # The window's verdict and its alert are one change: an unknown or blind zone whose first good
            # window warns goes straight to hazard, never through a "clear" that would read "Safe".
            self._apply(settled.event)
        self._update(window.zone)

    def alert_published(self, event: AlertEvent) -> None:
        self.alert_event(event)

    # -- internals -----------------------------------------------------------------------------
    def _book(self, zone: str) -> _Book:
        book = self._books.get(zone)
        if book is None:
            book = self._books[zone] = _Book(monitoring=self.controls.is_monitoring(zone))
        return book

    def _apply(self, event: AlertEvent) -> None:
        book = self._book(event.alert.zone)
        if event.type == "end":
            book.open.pop(event.alert.id, None)
            book.last_end = (event.alert.hazard, event.end_reason or "ended", event.at)
        else:
            book.open[event.alert.id] = event.alert

    def _covered(self, book: _Book, window: Window) -> None:
        now = self._clock()
        snapshot = now - max(0.0, self._wall() - window.created_at)  # the window's creation on our clock
        book.covered_until = max(book.covered_until or snapshot, snapshot)
        unjudged = book.last_arrival is not None and book.last_arrival > book.covered_until
        book.first_unjudged = book.covered_until if unjudged else None
        book.last_error = None
        book.last_success_wall = self._wall()
        if book.fresh_after is None or snapshot >= book.fresh_after:
            book.assessed = True  # a window from before a switch-on or a return says nothing about now

    def _control_changed(self, zone: str) -> None:
        book = self._book(zone)
        monitoring = self.controls.is_monitoring(zone)
        if monitoring and not book.monitoring:
            # What was seen before the switch-off says nothing about now: judge afresh.
            self._judge_afresh(book, "monitoring was switched on")
            book.first_unjudged, book.last_error = None, None
        book.monitoring = monitoring
        self._update(zone)

    def _update(self, zone: str) -> ZoneState | None:
        book = self._book(zone)
        new = self._evaluate(zone, book)
        if book.current is not None and new.to_json() == book.current.to_json():
            return None
        book.current = new
        for listener in self.listeners:
            listener(new)
        return new

    def _evaluate(self, zone: str, book: _Book) -> ZoneState:
        state, reason = self._classify(zone, book)
        top = _top_alert(book.open.values())
        previous = book.current
        if state == "hazard" and top is not None:
            since = top.created_at
        elif previous is not None and previous.state == state:
            since = previous.since
        else:
            since = self._wall()
        watched = state in SEEING
        alarms = tuple(alarm_kinds(alert.hazard for alert in book.open.values()))
        return ZoneState(zone, state, reason, since, top, len(book.open), alarms=alarms,
                         backend=book.backend if watched else None, degraded=book.degraded if watched else None)

    def _judge_afresh(self, book: _Book, what_came_back: str) -> None:
        book.assessed, book.resumed, book.fresh_after = False, what_came_back, self._clock()

    def _note_online(self, book: _Book) -> None:
        """A zone whose sources were all offline and one is back: like a switch-on, it waits for a fresh look."""
        if book.offline:
            book.offline = False
            self._judge_afresh(book, "its sources came back online")

    def _classify(self, zone: str, book: _Book) -> tuple[ZoneStateName, str]:
        if not self.controls.is_monitoring(zone):
            return "off", "monitoring is switched off"
        if (offline := self._all_offline(zone)) is not None:
            starting, reason = offline
            if not starting:
                book.offline = True
                return "blind", reason
            if not book.assessed:
                return "unknown", reason
        else:
            self._note_online(book)
        if book.first_unjudged is not None and self._clock() - book.first_unjudged >= self.blind_after_s:
            return "blind", self._blind_reason(book)
        top = _top_alert(book.open.values())
        if top is not None:
            degraded = f" (degraded: {book.degraded})" if book.degraded else ""
            return "hazard", f"{top.severity} hazard: {top.hazard}{degraded}"
        if not book.assessed:
            return "unknown", self._unknown_reason(book)
        if book.degraded:
            return "degraded", f"clear (degraded): {book.degraded}; {self._clear_reason(book)}"
        return "clear", self._clear_reason(book)

    @staticmethod
    def _clear_reason(book: _Book) -> str:
        """What a clear zone's reason can truthfully say: an alert that ended since the last look says how."""
        last_look = book.last_success_wall
        if book.last_end is not None and (last_look is None or book.last_end[2] > last_look):
            hazard, reason, _at = book.last_end
            return f"no alert open: '{hazard}' ended ({reason})"
        if book.last_danger is not None:
            return (f"the last assessment found '{book.last_danger}', below the alert thresholds "
                    "(alerts.min_severity, the zone's sensitivity)")
        return "the last assessment found no hazard"

    def _all_offline(self, zone: str) -> tuple[bool, str] | None:
        """None while a source of the zone is online; else whether they are all still starting, and why.

        A source that has never been online gets `blind_after_s` from when the tracker first saw it (a camera
        connecting at start-up): until then its zone is waiting, not blind.
        """
        sources = self.sources().get(zone, ())
        now = self._clock()
        for sid, health in sources:
            self._first_seen.setdefault(sid, now)
            if health.state == "online":
                self._been_online.add(sid)
        if not sources or any(health.state == "online" for _, health in sources):
            return None
        parts = [f"{sid} ({shorten(h.last_error, _ERROR_CHARS)})" if h.last_error else sid for sid, h in sources]
        starting = all(sid not in self._been_online and now - self._first_seen[sid] < self.blind_after_s
                       for sid, _ in sources)
        if starting:
            return True, "waiting for the zone's sources to come online: " + ", ".join(parts)
        return False, "every source of the zone is offline: " + ", ".join(parts)

    def _blind_reason(self, book: _Book) -> str:
        waited = f"observations waited {self.blind_after_s:g} s (health.blind_after_s) with no successful assessment"
        if book.last_error is not None:
            return f"{waited}; last error: {book.last_error}"
        return f"{waited}; no assessment finished (the model may be hanging)"

    def _unknown_reason(self, book: _Book) -> str:
        since = f"since {book.resumed}" if book.resumed else "since start"
        if book.last_error is not None:
            return f"not assessed {since}; last error: {book.last_error}"
        if book.first_unjudged is None:
            return f"no observations {since}"
        return f"not assessed {since}; waiting for the first assessment"


def _top_alert(alerts: Iterable[Alert]) -> Alert | None:
    """The most severe open alert, then the most recently confirmed."""
    return max(alerts, key=lambda a: (SEVERITY_RANK[a.severity], a.updated_at), default=None)
