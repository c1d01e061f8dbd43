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
- At most `max_per_alert` escalations per alert and `max_per_hour` in any
  rolling hour; a limit that stops or holds an escalation is written into the
  alert (`escalation_limit`), so the next events carry it.
- An acknowledged alert never escalates again; its updates and its end go on.
- An `info` alert inside its zone's quiet hours is `quiet`: it never escalates.

The open alerts live in the `AlertManager`; the engine writes its fields
(`escalation_level`, `acknowledged_at`, ...) into them, so every later
`update` and the `end` carry them.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import structlog

from monitor.alerts import Alert, AlertEvent, AlertManager
from monitor.assess.verdict import SEVERITY_RANK, Severity
from monitor.escalation.settings import EscalationSettings, ZoneEscalation, in_periods
from monitor.zones import ZoneSettings

log = structlog.get_logger("monitor.escalation")

_HOUR_S = 3600.0
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


class Escalator:
    """Decides escalations and applies acknowledgements for the alerts open in `alerts`."""

    def __init__(self, settings: EscalationSettings, *, zones: Sequence[ZoneSettings] = (),
                 alerts: AlertManager, clock: Callable[[], float] = time.time,
                 local_time: Callable[[float], datetime] = datetime.fromtimestamp,
                 counters: Counter[str] | None = None) -> None:
        self.alerts = alerts
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._clock = clock
        self._local_time = local_time
        self._tracks: dict[str, _Track] = {}
        self._recent: deque[float] = deque()  # times of the escalations in the last hour
        self.configure(settings, zones)

    def configure(self, settings: EscalationSettings, zones: Sequence[ZoneSettings] = ()) -> None:
        """Apply new settings (a reload); alerts in progress keep their level and timing."""
        self.settings = settings
        self.zones: Mapping[str, ZoneSettings] = {zone.id: zone for zone in zones}

    # -- events in ------------------------------------------------------------------
    def annotate(self, event: AlertEvent) -> AlertEvent:
        """Note a decided event (`new`, `update`, `end`); returns it with the quiet flag set for this moment."""
        alert = event.alert
        if event.type == "end":
            self._tracks.pop(alert.id, None)
            return event
        if event.type not in ("new", "update"):
            return event
        track = self._tracks.setdefault(alert.id, _Track(alert.severity, alert.created_at))
        if track.level == 0 and SEVERITY_RANK[alert.severity] > SEVERITY_RANK[track.ladder_severity]:
            track.ladder_severity = alert.severity  # the model now calls it worse: its ladder applies
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
        while self._recent and now - self._recent[0] >= _HOUR_S:
            self._recent.popleft()
        events = []
        for alert_id, track in list(self._tracks.items()):
            alert = self.alerts.open.get(alert_id)
            if alert is None:  # ended without the engine seeing the `end` (e.g. replaced manager)
                del self._tracks[alert_id]
                continue
            event = self._escalation(alert, track, now)
            if event is not None:
                events.append(event)
        return events

    def _escalation(self, alert: Alert, track: _Track, now: float) -> AlertEvent | None:
        zone = self.zones.get(alert.zone)
        overrides = zone.escalation if zone is not None else None
        ladder = self.settings.ladder(track.ladder_severity, overrides)
        if alert.acknowledged_at is not None or alert.quiet or not ladder.enabled or not self._enabled(overrides):
            return None
        if track.level >= self.settings.max_per_alert:
            return None  # the last escalation recorded the limit
        after = ladder.escalate_after_s if track.level == 0 else ladder.repeat_s
        assert after is not None
        if now < track.warned_at + after or not self._confirmed(alert, track, now):
            return None
        if len(self._recent) >= self.settings.max_per_hour:
            self._hold(alert, f"max_per_hour: {self.settings.max_per_hour} escalations in the last hour "
                              "(escalation.max_per_hour); waiting")
            return None
        return self._escalate(alert, track, now, caregivers=track.level + 1 >= ladder.caregivers_from_level)

    def _enabled(self, overrides: ZoneEscalation | None) -> bool:
        if overrides is not None and overrides.enabled is not None:
            return overrides.enabled
        return self.settings.enabled

    def _confirmed(self, alert: Alert, track: _Track, now: float) -> bool:
        return alert.updated_at > track.warned_at and now - alert.updated_at <= self.settings.confirmed_within_s

    def _escalate(self, alert: Alert, track: _Track, now: float, *, caregivers: bool) -> AlertEvent:
        level = track.level + 1
        raise_now = level == 1 and self.settings.raise_severity
        limit = None
        if level >= self.settings.max_per_alert:
            limit = f"max_per_alert: {self.settings.max_per_alert} escalations of one alert (escalation.max_per_alert)"
        escalated = self._amend(
            alert, escalation_level=level, escalated_at=now, escalation_limit=limit,
            severity=_RAISED[alert.severity] if raise_now else alert.severity,
            caregivers_notified=alert.caregivers_notified or caregivers,
        )
        track.level, track.warned_at = level, now
        self._recent.append(now)
        audience = "caregivers" if caregivers else "person"
        self.counters[f"escalations:{audience}"] += 1
        if limit is not None:
            self.counters["limited:max_per_alert"] += 1
        log.warning("alert escalated", alert=alert.id, zone=alert.zone, level=level, audience=audience,
                    severity=escalated.severity, hazard=alert.hazard)
        return AlertEvent("escalate", escalated, at=now)

    def _hold(self, alert: Alert, reason: str) -> None:
        if alert.escalation_limit == reason:
            return  # said once per alert, not once per tick
        self._amend(alert, escalation_limit=reason)
        self.counters["limited:max_per_hour"] += 1
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
        return amended
