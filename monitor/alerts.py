"""Alert lifecycle: new / update / end, stable ids, dedup within a TTL.

A warning about the same hazard in the same zone while an alert is open updates
that alert (same id, `update` event) instead of creating a new one. An alert
ends when no verdict has confirmed it for `dedup_ttl_s`, and its `end` says
what happened (`end_cause`, `end_reason`): the zone was assessed without
finding it, or not assessed at all, or switched off, or the monitor restarted.

A zone that cannot be assessed (blind, its sources offline, its newest
assessment failed; `unseen`) cannot fail to confirm anything: its alerts are
held open, marked `unconfirmed_since` and `unconfirmed_reason`, and the TTL
counts again from the moment the zone can be assessed.

With a journal (the daemon's `<state_dir>/open-alerts.json`) the open alerts
are written durably on every change. After a crash or a stop with alerts open,
the next start restores the alerts confirmed less than `dedup_ttl_s` before it,
held as unconfirmed since the restart: the same hazard seen again continues
the same alert (same id, and its escalation where it was), and one not seen
again within `dedup_ttl_s` after the restart ends with the cause `restart`.
Older ones end at once, with that cause.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import Field

from monitor.assess.verdict import SEVERITY_RANK, Severity, Verdict, same_hazard
from monitor.control import ZoneControls
from monitor.core.config import PositiveFloat, Section
from monitor.core.statefile import JsonStateFile
from monitor.core.text import iso_time
from monitor.windows import Window
from sensors.types import Frame

if TYPE_CHECKING:
    from monitor.evidence import EvidenceFrame

log = structlog.get_logger("monitor.alerts")
# The form of every alert id the monitor gives (`new_alert_id`): what an acknowledgement may name.
ALERT_ID = re.compile(r"^[0-9a-f]{16}$")


def new_alert_id() -> str:
    """A new alert's id: 16 lowercase hex digits (matches ALERT_ID)."""
    return uuid.uuid4().hex[:16]


# `escalate` and `ack` come from the escalation engine (monitor/escalation/): a persisting hazard warned
# about again, and a person saying they have seen the warning.
EventType = Literal["new", "update", "end", "escalate", "ack"]
# Why an alert ended: no assessment of its zone finished since its last confirmation (a quiet zone), the zone
# assessed without finding it, monitoring of the zone switched off, or the monitor restarted meanwhile.
EndCause = Literal["not_confirmed", "assessed_clear", "monitoring_off", "restart"]
OPEN_ALERTS_FILE = "open-alerts.json"
RESTARTED = "monitor restarted"
HELD_AT_RESTART = "monitor restarted; the zone was not assessed since"
_JOURNAL_VERSION = 1
# The observations an alert quotes as its evidence: the newest of its window, each cut to a line.
JUDGED_OBSERVATIONS = 10
JUDGED_CHARS = 240


class AlertSettings(Section):
    """Alert lifecycle: which verdicts warn and how repeats merge."""

    dedup_ttl_s: PositiveFloat = 300.0
    min_severity: Literal["info", "warning", "critical"] = "info"
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)


@dataclass(frozen=True, slots=True)
class Alert:
    """A warning the monitor decided to give, as subscribers see it."""

    id: str
    zone: str
    sources: tuple[str, ...]
    created_at: float
    updated_at: float
    severity: Severity
    hazard: str
    reason: str
    advice: str
    evidence: tuple[str, ...]
    confidence: float
    model: str
    strategy: str
    window_id: str
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    updates: int = 0
    # Reaching the person (monitor/escalation/, docs/escalation.md); set by the escalation engine only.
    escalation_level: int = 0
    escalated_at: float | None = None
    caregivers_notified: bool = False
    escalation_limit: str | None = None
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    quiet: bool = False
    # How a person calls the zone (`[[zones]] name`): what texts and voices say; `zone` stays the id.
    zone_name: str | None = None
    # Held open without confirmation: since the last confirmation, because its zone could not be assessed.
    unconfirmed_since: float | None = None
    unconfirmed_reason: str | None = None
    # The configured backend whose verdict made or last confirmed it, and what was lost when that was a
    # fallback (docs/failover.md).
    backend: str = ""
    degraded: str | None = None
    # Evidence (monitor/evidence.py): the observations judged, quoted and bounded, and the keyframes sent, by id.
    observations: tuple[str, ...] = ()
    frames: tuple[str, ...] = ()

    @property
    def zone_label(self) -> str:
        """The zone as a person reads or hears it: its display name, else its id."""
        return self.zone_name or self.zone

    def reach_state(self) -> dict[str, Any]:
        """What a zone's state adds about this alert once it was escalated or acknowledged.

        Nothing before that: the state of a zone whose alert is just open stays what it always was.
        """
        if self.escalation_level == 0 and self.acknowledged_at is None:
            return {}
        acknowledged = None if self.acknowledged_at is None else iso_time(self.acknowledged_at)
        return {"escalation_level": self.escalation_level, "acknowledged_at": acknowledged,
                "acknowledged_at_epoch": self.acknowledged_at, "acknowledged_by": self.acknowledged_by}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "zone": self.zone,
            "zone_name": self.zone_label,
            "sources": list(self.sources),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "severity": self.severity,
            "hazard": self.hazard,
            "reason": self.reason,
            "advice": self.advice,
            "evidence": list(self.evidence),
            "confidence": self.confidence,
            "model": self.model,
            "backend": self.backend,
            "degraded": self.degraded,
            "strategy": self.strategy,
            "window_id": self.window_id,
            "updates": self.updates,
            "timings": {"model_latency_s": round(self.latency_s, 4)},
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "unconfirmed_since": self.unconfirmed_since,
            "unconfirmed_reason": self.unconfirmed_reason,
            "observations": list(self.observations),
            "evidence_frames": list(self.frames),
            "evidence_frame": self.frames[-1] if self.frames else None,
            **self._reach_json(),
        }

    def _reach_json(self) -> dict[str, Any]:
        return {
            "escalation_level": self.escalation_level,
            "escalated_at": self.escalated_at,
            "caregivers_notified": self.caregivers_notified,
            "escalation_limit": self.escalation_limit,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "quiet": self.quiet,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alert:
        """The alert `to_json` wrote; KeyError, TypeError or ValueError when it is not one."""
        severity = data["severity"]
        if severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {severity!r}")
        tokens, timings = data.get("tokens") or {}, data.get("timings") or {}
        return cls(
            id=str(data["id"]), zone=str(data["zone"]), sources=tuple(str(s) for s in data["sources"]),
            created_at=float(data["created_at"]), updated_at=float(data["updated_at"]), severity=severity,
            hazard=str(data["hazard"]), reason=str(data["reason"]), advice=str(data["advice"]),
            evidence=tuple(str(e) for e in data["evidence"]), confidence=float(data["confidence"]),
            model=str(data["model"]), strategy=str(data["strategy"]), window_id=str(data["window_id"]),
            latency_s=float(timings.get("model_latency_s", 0.0)), prompt_tokens=int(tokens.get("prompt", 0)),
            completion_tokens=int(tokens.get("completion", 0)), updates=int(data.get("updates", 0)),
            zone_name=_optional(data.get("zone_name"), str), backend=str(data.get("backend") or ""),
            degraded=_optional(data.get("degraded"), str), **_reach_from_json(data),
            observations=tuple(str(o) for o in data.get("observations") or ()),
            frames=tuple(str(f) for f in data.get("evidence_frames") or ()),
        )


def _optional(value: Any, kind: Callable[[Any], Any]) -> Any:
    return None if value is None else kind(value)


def _reach_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """The escalation and hold fields of a journaled alert: a restart must not forget the level reached."""
    return {
        "escalation_level": int(data.get("escalation_level") or 0),
        "escalated_at": _optional(data.get("escalated_at"), float),
        "caregivers_notified": bool(data.get("caregivers_notified", False)),
        "escalation_limit": _optional(data.get("escalation_limit"), str),
        "acknowledged_at": _optional(data.get("acknowledged_at"), float),
        "acknowledged_by": _optional(data.get("acknowledged_by"), str),
        "quiet": bool(data.get("quiet", False)),
        "unconfirmed_since": _optional(data.get("unconfirmed_since"), float),
        "unconfirmed_reason": _optional(data.get("unconfirmed_reason"), str),
    }


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One message about an alert's life. `message_id` lets subscribers deduplicate."""

    type: EventType
    alert: Alert
    at: float = field(default_factory=time.time)
    end_reason: str | None = None  # what ended an `end`, in words
    end_cause: EndCause | None = None  # the same as a keyword automations can test
    # A caregivers' escalation standing for several alerts (a storm past escalation.caregivers_max_per_hour).
    summary: tuple[Alert, ...] = ()
    # The keyframes of this event's window as sent to the model (only for `new` and `update`): not in the JSON.
    frames: tuple[EvidenceFrame, ...] = field(default=(), repr=False, compare=False)

    @property
    def message_id(self) -> str:
        # Several escalations may fall between two updates: they are numbered by their level.
        n = self.alert.escalation_level if self.type == "escalate" else self.alert.updates
        return f"{self.alert.id}:{self.type}:{n}"

    def to_json(self) -> dict[str, Any]:
        data = {"type": self.type, "message_id": self.message_id, "at": self.at, **self.alert.to_json()}
        if self.end_reason is not None:
            data["end_reason"] = self.end_reason
            data["end_cause"] = self.end_cause
        if self.summary:
            data["summary"] = [summary_json(alert) for alert in self.summary]
        return data


def summary_json(alert: Alert) -> dict[str, Any]:
    """One alert named in a caregivers' summary."""
    return {"alert_id": alert.id, "zone": alert.zone, "zone_name": alert.zone_label, "hazard": alert.hazard,
            "severity": alert.severity, "escalation_level": alert.escalation_level}


class OpenAlertJournal:
    """The open alerts, kept durably in the state dir so a restart can end them."""

    def __init__(self, path: Path) -> None:
        self.file = JsonStateFile(path, what="open alerts file")

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> OpenAlertJournal:
        return cls(state_dir / OPEN_ALERTS_FILE)

    def load(self) -> list[Alert]:
        """The alerts open when the previous run stopped; an unusable file is moved aside (none then)."""
        document = self.file.load()
        if document is None:
            return []
        try:
            items = document["alerts"]
            if not isinstance(items, list):
                raise TypeError("'alerts' is not a list")
            return [Alert.from_json(item) for item in items]
        except (KeyError, TypeError, ValueError) as exc:
            self.file.corrupt(f"not a list of alerts: {exc!r}")
            return []

    def record(self, alerts: Iterable[Alert]) -> None:
        self.file.save({"version": _JOURNAL_VERSION, "alerts": [alert.to_json() for alert in alerts]})

    async def flush(self) -> None:
        await self.file.flush()


class AlertManager:
    """Turns verdicts into alert events; holds the open alerts.

    `unseen(zone)` says why a zone cannot be assessed now (None when it can): the daemon asks its
    `ZoneStatus`. `zone_names` are the display names alerts carry.
    """

    def __init__(self, settings: AlertSettings, *, controls: ZoneControls | None = None,
                 clock: Callable[[], float] = time.time, journal: OpenAlertJournal | None = None,
                 unseen: Callable[[str], str | None] | None = None,
                 zone_names: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.controls = controls or ZoneControls()
        self.open: dict[str, Alert] = {}
        self.journal = journal
        self.unseen: Callable[[str], str | None] = unseen or _always_seen
        self.zone_names: Mapping[str, str] = dict(zone_names or {})
        self.restored: set[str] = set()  # restored at start and not confirmed since
        self.restarted_at: float | None = None
        self._clock = clock
        self._assessed_at: dict[str, float] = {}  # zone -> its last successful assessment
        self._ttl_from: dict[str, float] = {}  # alert id -> the TTL counts from here (a hold, a restart)

    def restore_previous_run(self) -> list[AlertEvent]:
        """Reopen the alerts the journal says were open at the last stop; `end` events for those too old.

        An alert confirmed less than `dedup_ttl_s` before this start is open again, held as unconfirmed
        since the restart: the hazard seen again continues it. The journal keeps the old ones until
        `persist()` is called after their ends were published, so a crash in between ends them next time.
        """
        if self.journal is None:
            return []
        now = self._clock()
        self.restarted_at = now
        ends = []
        for alert in self.journal.load():
            if now - alert.updated_at >= self.settings.dedup_ttl_s:
                reason = (f"{RESTARTED}: last confirmed {now - alert.updated_at:.0f} s before, more than "
                          f"alerts.dedup_ttl_s = {self.settings.dedup_ttl_s:g} s")
                ends.append(AlertEvent("end", replace(alert, updated_at=now, updates=alert.updates + 1,
                                                      reason=RESTARTED), at=now, end_reason=reason,
                                       end_cause="restart"))
                continue
            self.open[alert.id] = replace(alert, unconfirmed_since=alert.unconfirmed_since or alert.updated_at,
                                          unconfirmed_reason=HELD_AT_RESTART)
            self.restored.add(alert.id)
            self._ttl_from[alert.id] = now
        if self.open or ends:
            log.info("alerts left open by the previous run", restored=sorted(self.open),
                     ended=[e.alert.id for e in ends], path=str(self.journal.file.path))
        return ends

    def confirmed(self) -> list[Alert]:
        """The open alerts a subscriber may show as current: all but those restored and not seen again."""
        return [alert for alert in self.open.values() if alert.id not in self.restored]

    def held_escalations(self) -> list[Alert]:
        """Escalated alerts restored at start and not seen again: not a current hazard, but an escalation
        nobody acknowledged is still open for the caregiver (the retained escalation state)."""
        return [alert for alert in self.open.values() if alert.id in self.restored and alert.escalation_level > 0]

    async def flush(self) -> None:
        """Wait until the journal holds the latest open alerts (at shutdown)."""
        if self.journal is not None:
            await self.journal.flush()

    def persist(self) -> None:
        """Write the open alerts to the journal (every change does; the service calls it once at start)."""
        if self.journal is not None:
            self.journal.record(self.open.values())

    def warns(self, zone: str, verdict: Verdict) -> bool:
        assessment = verdict.assessment
        return (
            assessment.danger
            and SEVERITY_RANK[assessment.severity] >= SEVERITY_RANK[self.settings.min_severity]
            and assessment.confidence >= self.controls.min_confidence(zone, self.settings.min_confidence)
        )

    def decide(self, window: Window, verdict: Verdict, *, assessed: bool = True) -> AlertEvent | None:
        """The event a verdict causes: a new alert, an update of an open one, or nothing.

        `assessed=False` for a verdict that did not look at the zone's window (an alarm pattern heard,
        monitor/assess/acoustic.py): it confirms its own alert but says nothing about the zone's others.
        """
        now = self._clock()
        if assessed:
            self._assessed_at[window.zone] = now  # a model's verdict is a successful assessment of its zone
        if not self.warns(window.zone, verdict):
            return None
        assessment = verdict.assessment
        hazard = assessment.hazard.strip() or "unspecified hazard"
        existing = self._find_open(window.zone, hazard)
        if existing is None:
            alert = self._new_alert(window, verdict, hazard, now)
            self.open[alert.id] = alert
            self.persist()
            return AlertEvent("new", alert, at=now)
        updated = replace(
            existing,
            updated_at=now,
            severity=max(existing.severity, assessment.severity, key=SEVERITY_RANK.__getitem__),
            reason=assessment.reason or existing.reason,
            advice=assessment.advice or existing.advice,
            evidence=tuple(dict.fromkeys([*existing.evidence, *assessment.evidence]))[-20:],
            confidence=assessment.confidence,
            window_id=window.id,
            sources=tuple(dict.fromkeys([*existing.sources, *window.sources])),
            latency_s=verdict.usage.latency_s,
            prompt_tokens=verdict.usage.prompt_tokens,
            completion_tokens=verdict.usage.completion_tokens,
            updates=existing.updates + 1,
            zone_name=self.zone_names.get(window.zone),
            unconfirmed_since=None,
            unconfirmed_reason=None,
            backend=verdict.backend,
            degraded=verdict.degraded,
            observations=judged(window),
        )
        self.open[updated.id] = updated
        self.restored.discard(updated.id)
        self._ttl_from.pop(updated.id, None)
        self.persist()
        return AlertEvent("update", updated, at=now)

    def _find_open(self, zone: str, hazard: str) -> Alert | None:
        for alert in self.open.values():
            if alert.zone == zone and same_hazard(alert.hazard, hazard):
                return alert
        return None

    def _new_alert(self, window: Window, verdict: Verdict, hazard: str, now: float) -> Alert:
        assessment = verdict.assessment
        return Alert(
            id=new_alert_id(),
            zone=window.zone,
            sources=window.sources,
            created_at=now,
            updated_at=now,
            severity=assessment.severity,
            hazard=hazard,
            reason=assessment.reason,
            advice=assessment.advice,
            evidence=tuple(assessment.evidence),
            confidence=assessment.confidence,
            model=verdict.model,
            strategy=verdict.strategy,
            window_id=window.id,
            latency_s=verdict.usage.latency_s,
            prompt_tokens=verdict.usage.prompt_tokens,
            completion_tokens=verdict.usage.completion_tokens,
            zone_name=self.zone_names.get(window.zone),
            backend=verdict.backend,
            degraded=verdict.degraded,
            observations=judged(window),
        )

    # -- the end of an alert --------------------------------------------------------------
    def expire(self) -> list[AlertEvent]:
        """End every open alert not confirmed within the TTL; hold those whose zone cannot be assessed."""
        now = self._clock()
        before = dict(self.open)
        events = [event for alert in list(self.open.values()) if (event := self._expiry(alert, now)) is not None]
        if events or self.open != before:
            self.persist()
        return events

    def _expiry(self, alert: Alert, now: float) -> AlertEvent | None:
        ttl = self.settings.dedup_ttl_s
        age = now - alert.updated_at
        if not self.controls.is_monitoring(alert.zone):
            if age < ttl:
                return None
            return self._end(alert, now, "monitoring_off",
                             f"zone switched off: monitoring of the zone is off; not confirmed for {age:.0f} s")
        due = now - max(alert.updated_at, self._ttl_from.get(alert.id, 0.0)) >= ttl
        if not due and alert.unconfirmed_reason is None:
            return None
        # Due, or held: a held alert's TTL starts again only once its zone can be assessed.
        why = self._unseen(alert.zone)
        if why is not None:
            self._hold(alert, now, why)
            return None
        return self._end(alert, now, *self._expiry_reason(alert, now)) if due else None

    def _unseen(self, zone: str) -> str | None:
        try:
            return self.unseen(zone)
        except Exception as exc:  # a broken check must not stop the expiry task: the plain TTL applies
            log.error("could not tell whether a zone can be assessed; its alerts expire by the TTL alone",
                      zone=zone, error=str(exc), error_type=type(exc).__name__)
            return None

    def _hold(self, alert: Alert, now: float, why: str) -> None:
        """A zone that cannot be assessed cannot fail to confirm: the TTL counts again once it can."""
        self._ttl_from[alert.id] = now
        if alert.unconfirmed_reason == why:
            return
        self.open[alert.id] = replace(alert, unconfirmed_since=alert.unconfirmed_since or alert.updated_at,
                                      unconfirmed_reason=why)
        log.warning("alert held open: its zone cannot be assessed", alert=alert.id, zone=alert.zone,
                    hazard=alert.hazard, unconfirmed_since=iso_time(alert.unconfirmed_since or alert.updated_at),
                    why=why)

    def _expiry_reason(self, alert: Alert, now: float) -> tuple[EndCause, str]:
        ttl, age = self.settings.dedup_ttl_s, now - alert.updated_at
        held = "" if alert.unconfirmed_reason in (None, HELD_AT_RESTART) else (
            f"; it was held open while the zone could not be assessed ({alert.unconfirmed_reason})")
        assessed = self._assessed_at.get(alert.zone)
        if alert.id in self.restored and self.restarted_at is not None:
            seen = "the zone's assessments did not find it" if assessed is not None else \
                "no assessment of the zone finished"
            return "restart", (f"{RESTARTED} at {iso_time(self.restarted_at)}; in the {now - self.restarted_at:.0f} s "
                               f"since, {seen} (alerts.dedup_ttl_s = {ttl:g} s)")
        if assessed is not None and assessed > alert.updated_at:
            return "assessed_clear", (f"assessed clear: the zone's assessments in the {age:.0f} s since the last "
                                      f"confirmation did not find it (alerts.dedup_ttl_s = {ttl:g} s){held}")
        return "not_confirmed", (f"expired unconfirmed after {age:.0f} s (alerts.dedup_ttl_s = {ttl:g} s): no "
                                 f"assessment of the zone finished since{held}")

    def _end(self, alert: Alert, now: float, cause: EndCause, reason: str) -> AlertEvent:
        del self.open[alert.id]
        self.restored.discard(alert.id)
        self._ttl_from.pop(alert.id, None)
        ended = replace(alert, updated_at=now, updates=alert.updates + 1)
        if cause == "restart":
            ended = replace(ended, reason=RESTARTED)
        return AlertEvent("end", ended, at=now, end_reason=reason, end_cause=cause)


def judged(window: Window) -> tuple[str, ...]:
    """The window's newest observations as quoted lines: `12:03:04 kitchen-log: "Sam leaves the pan"`.

    Quoted as JSON strings: what a sensor wrote is data, never markup, in every sink that shows it.
    """
    lines = []
    for observation in window.observations[-JUDGED_OBSERVATIONS:]:
        at = time.strftime("%H:%M:%S", time.localtime(observation.ts))
        if isinstance(observation, Frame):
            what = "frame" + (f" {json.dumps('; '.join(observation.facts)[:JUDGED_CHARS])}" if observation.facts
                              else "")
        else:
            what = json.dumps(observation.text[:JUDGED_CHARS], ensure_ascii=False)
        lines.append(f"{at} {observation.source[:64]}: {what}")
    return tuple(lines)


def _always_seen(zone: str) -> str | None:
    return None
