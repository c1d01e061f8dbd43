"""The escalation and acknowledgement state machine: alert events and a clock in, alert events out.

Nothing here does I/O or knows about asyncio; the clock and the local time of
day are injected, so every rule is testable step by step.

The ladder of one alert (per zone and per severity, `EscalationSettings.ladder`; the severity is the
highest the model gave before the first escalation, so the escalation's own raise does not change it):

- level 0 is the first warning (`new`).
- level 1 is due `escalate_after_s` after it; level n+1 `repeat_after_s` after level n.
- A due escalation fires only while the hazard is **still confirmed**: an `update`
  of the alert arrived after the previous warning (the `new` or the last
  escalation) and at most `confirmed_within_s` ago. Until then it waits; if the
  alert ends first, it never fires.
- From `caregivers_from_level` on, an escalation also notifies caregivers.
- The first escalation raises the severity one step (`raise_severity`).
- At most `max_per_alert` escalations per alert. Two hourly budgets, one per
  audience, so repeats to the person can never use up the caregivers' calls:
  `max_per_hour` repeats to the person (past it a repeat is skipped, not
  waited for: the ladder climbs on, silently, towards the caregivers), and
  `caregivers_max_per_hour` caregiver notifications (past it, due ones wait,
  and once per hour one summary notification names every alert waiting). A
  limit that stops, skips or holds an escalation is written into the alert
  (`escalation_limit`), so the next events carry it.
- An acknowledged alert never escalates again; its updates and its end go on.
- An `info` alert inside its zone's quiet hours is `quiet`: it never escalates.

The open alerts live in the `AlertManager`; the engine writes its fields
(`escalation_level`, `acknowledged_at`, ...) into them, so every later
`update` and the `end` carry them, and the alerts' journal keeps them.

With a state file (the daemon's `<state_dir>/escalation.json`) the ladders
and the budgets outlive a restart: an alert restored after a restart climbs on
from the level it reached, and the hour's budgets are not refilled by a crash.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from monitor.alerts import Alert, AlertEvent, AlertManager
from monitor.assess.verdict import SEVERITY_RANK, Severity
from monitor.core.statefile import JsonStateFile
from monitor.escalation.settings import EscalationSettings, ZoneEscalation, in_periods
from monitor.zones import ZoneSettings

log = structlog.get_logger("monitor.escalation")

_HOUR_S = 3600.0
ESCALATION_STATE_FILE = "escalation.json"
_STATE_VERSION = 1
_RAISED: dict[Severity, Severity] = {"info": "warning", "warning": "critical", "critical": "critical"}
AckStatus = Literal["acknowledged", "already_acknowledged", "not_found", "invalid"]


@dataclass(frozen=True, slots=True)
class AckRequest:
    """Someone says they have seen the warning: one alert (`alert_id`) or every open alert of a `zone`."""

    alert_id: str | None
    zone: str | None
    by: str
    via: str
    reply_to: str | None = None  # the CLI's request id, when it waits for an answer

    def describe(self) -> str:
        if self.alert_id is not None:
            return f"alert '{self.alert_id}'" + (f" in zone '{self.zone}'" if self.zone else "")
        return f"every open alert in zone '{self.zone}'"


@dataclass(frozen=True, slots=True)
class AckResult:
    """What an acknowledgement did; `events` are the `ack` events to publish."""

    status: AckStatus
    detail: str
    alert_ids: tuple[str, ...] = ()
    events: tuple[AlertEvent, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "alert_ids": list(self.alert_ids)}


@dataclass(slots=True)
class _Track:
    """What the engine remembers about one open alert."""

    ladder_severity: Severity  # chooses the ladder: the highest severity the model gave before level 1
    warned_at: float  # the last warning: the `new`, then each escalation
    level: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ladder_severity": self.ladder_severity, "warned_at": self.warned_at, "level": self.level}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Track:
        severity = data["ladder_severity"]
        if severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {severity!r}")
        return cls(severity, float(data["warned_at"]), int(data["level"]))


@dataclass(frozen=True, slots=True)
class _Step:
    """An escalation due now: the alert, its track, and whether it is the caregivers' turn."""

    alert: Alert
    track: _Track
    caregivers: bool


class Budget:
    """Times of what one audience was sent in the last hour; `limit` of them at most."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.times: deque[float] = deque()

    def prune(self, now: float) -> None:
        while self.times and now - self.times[0] >= _HOUR_S:
            self.times.popleft()

    @property
    def left(self) -> int:
        return max(0, self.limit - len(self.times))

    def load(self, times: object) -> None:
        if not isinstance(times, list):
            raise TypeError("budget times are not a list")
        self.times = deque(sorted(float(t) for t in times))


class Escalator:
    """Decides escalations and applies acknowledgements for the alerts open in `alerts`."""

    def __init__(self, settings: EscalationSettings, *, zones: Sequence[ZoneSettings] = (),
                 alerts: AlertManager, clock: Callable[[], float] = time.time,
                 local_time: Callable[[float], datetime] = datetime.fromtimestamp,
                 counters: Counter[str] | None = None, state: JsonStateFile | None = None) -> None:
        self.alerts = alerts
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.state = state
        self._clock = clock
        self._local_time = local_time
        self._tracks: dict[str, _Track] = {}
        self._person = Budget(settings.max_per_hour)  # repeats to the person in the last hour
        self._caregivers = Budget(settings.caregivers_max_per_hour)  # caregiver notifications in the last hour
        self._summaries = Budget(1)  # the caregivers' storm summary: one an hour
        self.configure(settings, zones)

    @classmethod
    def state_in(cls, state_dir: Path) -> JsonStateFile:
        """The daemon's state file of the ladders and budgets."""
        return JsonStateFile(state_dir / ESCALATION_STATE_FILE, what="escalation state file")

    def configure(self, settings: EscalationSettings, zones: Sequence[ZoneSettings] = ()) -> None:
        """Apply new settings (a reload); alerts in progress keep their level and timing."""
        self.settings = settings
        self._person.limit, self._caregivers.limit = settings.max_per_hour, settings.caregivers_max_per_hour
        self.zones: Mapping[str, ZoneSettings] = {zone.id: zone for zone in zones}

    # -- the state file ------------------------------------------------------------------
    def restore(self) -> None:
        """Take up the ladders and budgets of the previous run (at start, after the alerts were restored).

        An open alert without a stored track (a state file lost or moved aside) continues from the level
        its journaled alert says; tracks of alerts no longer open are dropped.
        """
        document = self.state.load() if self.state is not None else None
        tracks: dict[str, _Track] = {}
        if document is not None:
            try:
                tracks = {str(k): _Track.from_json(v) for k, v in document["tracks"].items()}
                self._person.load(document["person"])
                self._caregivers.load(document["caregivers"])
                self._summaries.load(document["summaries"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                assert self.state is not None
                self.state.corrupt(f"not an escalation state: {exc!r}")
                tracks = {}
        for alert in self.alerts.open.values():
            self._tracks[alert.id] = tracks.get(alert.id) or _Track(
                alert.severity, alert.escalated_at or alert.created_at, alert.escalation_level)
        if self._tracks or self._person.times or self._caregivers.times:
            log.info("escalation state restored", levels={a: t.level for a, t in self._tracks.items()},
                     person_last_hour=len(self._person.times), caregivers_last_hour=len(self._caregivers.times))
        self._save()

    def _save(self) -> None:
        if self.state is not None:
            self.state.save({
                "version": _STATE_VERSION, "tracks": {a: t.to_json() for a, t in self._tracks.items()},
                "person": list(self._person.times), "caregivers": list(self._caregivers.times),
                "summaries": list(self._summaries.times),
            })

    async def flush(self) -> None:
        """Wait until the state file and the alerts' journal hold the latest state."""
        if self.state is not None:
            await self.state.flush()
        await self.alerts.flush()

    # -- events in ------------------------------------------------------------------
    def annotate(self, event: AlertEvent) -> AlertEvent:
        """Note a decided event (`new`, `update`, `end`); returns it with the quiet flag set for this moment."""
        alert = event.alert
        if event.type == "end":
            if self._tracks.pop(alert.id, None) is not None:
                self._save()
            return event
        if event.type not in ("new", "update"):
            return event
        if alert.id not in self._tracks:
            self._tracks[alert.id] = _Track(alert.severity, alert.created_at)
            self._save()
        track = self._tracks[alert.id]
        if track.level == 0 and SEVERITY_RANK[alert.severity] > SEVERITY_RANK[track.ladder_severity]:
            track.ladder_severity = alert.severity  # the model now calls it worse: its ladder applies
            self._save()
        quiet = self.is_quiet(alert.zone, alert.severity, event.at)
        if quiet:
            self.counters["quiet:info"] += 1
        if quiet == alert.quiet:
            return event
        return replace(event, alert=self._amend(alert, quiet=quiet))

    def is_quiet(self, zone: str, severity: Severity, at: float) -> bool:
        """Quiet hours silence `info` only; warning and critical are never quiet."""
        periods = self.zones[zone].quiet_hours if zone in self.zones else []
        return severity == "info" and bool(periods) and in_periods(periods, self._local_time(at))

    # -- the clock ----------------------------------------------------------------------
    def tick(self) -> list[AlertEvent]:
        """The escalations due now, in the order the alerts were opened."""
        now = self._clock()
        for budget in (self._person, self._caregivers, self._summaries):
            budget.prune(now)
        events: list[AlertEvent] = []
        caregivers: list[_Step] = []
        for alert_id, track in list(self._tracks.items()):
            alert = self.alerts.open.get(alert_id)
            if alert is None:  # ended without the engine seeing the `end` (e.g. replaced manager)
                del self._tracks[alert_id]
                continue
            step = self._due(alert, track, now)
            if step is None:
                continue
            if step.caregivers:
                caregivers.append(step)
            elif self._person.left:
                events.append(self._escalate(step, now))
            else:
                self._skip(step, now)
        events += self._notify_caregivers(caregivers, now)
        return events

    def _due(self, alert: Alert, track: _Track, now: float) -> _Step | None:
        zone = self.zones.get(alert.zone)
        overrides = zone.escalation if zone is not None else None
        ladder = self.settings.ladder(track.ladder_severity, overrides)
        if alert.acknowledged_at is not None or alert.quiet or not ladder.enabled or not self._enabled(overrides):
            return None
        if alert.unconfirmed_reason is not None:
            return None  # held (restored after a restart, or its zone blind): never escalated on evidence from before
        if track.level >= self.settings.max_per_alert:
            return None  # the last escalation recorded the limit
        after = ladder.escalate_after_s if track.level == 0 else ladder.repeat_s
        assert after is not None
        if now < track.warned_at + after or not self._confirmed(alert, track, now):
            return None
        return _Step(alert, track, caregivers=track.level + 1 >= ladder.caregivers_from_level)

    def _enabled(self, overrides: ZoneEscalation | None) -> bool:
        if overrides is not None and overrides.enabled is not None:
            return overrides.enabled
        return self.settings.enabled

    def _confirmed(self, alert: Alert, track: _Track, now: float) -> bool:
        return alert.updated_at > track.warned_at and now - alert.updated_at <= self.settings.confirmed_within_s

    def _notify_caregivers(self, steps: list[_Step], now: float) -> list[AlertEvent]:
        """Each due caregivers' step while the budget lasts; past it one summary an hour names the rest."""
        events = [self._escalate(step, now) for step in steps[:self._caregivers.left]]
        waiting = steps[len(events):]
        if not waiting:
            return events
        if self._summaries.left:
            return [*events, self._summarise(waiting, now)]
        limit = (f"caregivers_max_per_hour: {self.settings.caregivers_max_per_hour} caregiver notifications and "
                 "the summary in the last hour (escalation.caregivers_max_per_hour); waiting")
        for step in waiting:
            self._hold(step.alert, limit, "limited:caregivers_max_per_hour")
        return events

    def _summarise(self, steps: list[_Step], now: float) -> AlertEvent:
        """One caregivers' notification for every alert waiting: the most severe leads, the others are named."""
        steps = sorted(steps, key=lambda s: -SEVERITY_RANK[s.alert.severity])
        limit = (f"caregivers_max_per_hour: {self.settings.caregivers_max_per_hour} caregiver notifications in "
                 f"the last hour (escalation.caregivers_max_per_hour); told in one summary of {len(steps)} alerts")
        named = [self._climb(step, now, limit=limit) for step in steps[1:]]
        lead = self._escalate(steps[0], now, limit=limit, budget=self._summaries)  # the hour's one extra
        self.counters["escalations:caregivers_summary"] += 1
        log.warning("caregivers told in one summary", alerts=[s.alert.id for s in steps],
                    zones=sorted({s.alert.zone_label for s in steps}), limit=limit)
        self._save()
        return replace(lead, summary=tuple(named))

    def _escalate(self, step: _Step, now: float, *, limit: str | None = None,
                  budget: Budget | None = None) -> AlertEvent:
        alert, track = step.alert, step.track
        level = track.level + 1
        raise_now = level == 1 and self.settings.raise_severity
        if level >= self.settings.max_per_alert:
            limit = f"max_per_alert: {self.settings.max_per_alert} escalations of one alert (escalation.max_per_alert)"
            self.counters["limited:max_per_alert"] += 1
        escalated = self._amend(
            alert, escalation_level=level, escalated_at=now, escalation_limit=limit,
            severity=_RAISED[alert.severity] if raise_now else alert.severity,
            caregivers_notified=alert.caregivers_notified or step.caregivers,
        )
        track.level, track.warned_at = level, now
        (budget or (self._caregivers if step.caregivers else self._person)).times.append(now)
        audience = "caregivers" if step.caregivers else "person"
        self.counters[f"escalations:{audience}"] += 1
        log.warning("alert escalated", alert=alert.id, zone=alert.zone, level=level, audience=audience,
                    severity=escalated.severity, hazard=alert.hazard)
        self._save()
        return AlertEvent("escalate", escalated, at=now)

    def _climb(self, step: _Step, now: float, *, limit: str) -> Alert:
        """Reach the next level without an event of its own (skipped, or named in a summary)."""
        alert, track = step.alert, step.track
        level = track.level + 1
        track.level, track.warned_at = level, now
        climbed = self._amend(alert, escalation_level=level, escalated_at=now, escalation_limit=limit,
                              caregivers_notified=alert.caregivers_notified or step.caregivers,
                              severity=_RAISED[alert.severity] if level == 1 and self.settings.raise_severity
                              else alert.severity)
        self._save()
        return climbed

    def _skip(self, step: _Step, now: float) -> None:
        """No repeat to the person past `max_per_hour`; the ladder climbs on so caregivers are still reached."""
        limit = (f"max_per_hour: {self.settings.max_per_hour} repeats to the person in the last hour "
                 f"(escalation.max_per_hour); level {step.track.level + 1} reached without a repeat")
        self._climb(step, now, limit=limit)
        self.counters["limited:max_per_hour"] += 1
        log.warning("repeat to the person skipped by a limit", alert=step.alert.id, zone=step.alert.zone,
                    limit=limit)

    def _hold(self, alert: Alert, reason: str, counter: str) -> None:
        if alert.escalation_limit == reason:
            return  # said once per alert, not once per tick
        self._amend(alert, escalation_limit=reason)
        self.counters[counter] += 1
        log.warning("escalation held by a limit", alert=alert.id, zone=alert.zone, limit=reason)

    # -- acknowledgement --------------------------------------------------------------------
    def acknowledge(self, request: AckRequest) -> AckResult:
        """Mark the alerts a request names as acknowledged; each newly acknowledged one gives an `ack` event."""
        targets = [a for a in self.alerts.open.values()
                   if request.alert_id in (None, a.id) and request.zone in (None, a.zone)]
        if not targets:
            return AckResult("not_found", f"no open alert matches: {request.describe()}")
        fresh = [a for a in targets if a.acknowledged_at is None]
        if not fresh:
            first = targets[0]
            return AckResult("already_acknowledged", f"{request.describe()}: already acknowledged by "
                             f"{first.acknowledged_by} at {first.acknowledged_at}", tuple(a.id for a in targets))
        now = self._clock()
        events = []
        for alert in fresh:
            acked = self._amend(alert, acknowledged_at=now, acknowledged_by=request.by)
            events.append(AlertEvent("ack", acked, at=now))
            self.counters[f"acknowledged:{request.via}"] += 1
            log.info("alert acknowledged", alert=alert.id, zone=alert.zone, by=request.by, via=request.via,
                     escalation_level=alert.escalation_level)
        ids = tuple(a.id for a in fresh)
        return AckResult("acknowledged", f"acknowledged {len(ids)} alert(s): {', '.join(ids)}", ids, tuple(events))

    def _amend(self, alert: Alert, **changes: Any) -> Alert:
        amended = replace(alert, **changes)
        if alert.id in self.alerts.open:
            self.alerts.open[alert.id] = amended
            self.alerts.persist()  # the level reached and the acknowledgement outlive a crash
        return amended
