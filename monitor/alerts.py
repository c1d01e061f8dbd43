"""Alert lifecycle: new / update / end, stable ids, dedup within a TTL.

A warning about the same hazard in the same zone while an alert is open updates
that alert (same id, `update` event) instead of creating a new one. An alert
ends when no verdict has confirmed it for `dedup_ttl_s`.

With a journal (the daemon's `<state_dir>/open-alerts.json`) the open alerts
are written durably on every change. After a crash or a stop with alerts open,
the next start ends each of them with the reason "monitor restarted", so a
subscriber waiting for closure gets it rather than a hazard that stays open
forever.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field

from monitor.assess.verdict import SEVERITY_RANK, Severity, Verdict, same_hazard
from monitor.control import ZoneControls
from monitor.core.config import PositiveFloat, Section
from monitor.core.statefile import JsonStateFile
from monitor.core.text import iso_time
from monitor.windows import Window

log = structlog.get_logger("monitor.alerts")

# `escalate` and `ack` come from the escalation engine (monitor/escalation/): a persisting hazard warned
# about again, and a person saying they have seen the warning.
EventType = Literal["new", "update", "end", "escalate", "ack"]
OPEN_ALERTS_FILE = "open-alerts.json"
RESTARTED = "monitor restarted"
_JOURNAL_VERSION = 1


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
            "strategy": self.strategy,
            "window_id": self.window_id,
            "updates": self.updates,
            "timings": {"model_latency_s": round(self.latency_s, 4)},
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
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
        )


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One message about an alert's life. `message_id` lets subscribers deduplicate."""

    type: EventType
    alert: Alert
    at: float = field(default_factory=time.time)
    end_reason: str | None = None  # why an `end` ended: not confirmed within the TTL, or a restart

    @property
    def message_id(self) -> str:
        # Several escalations may fall between two updates: they are numbered by their level.
        n = self.alert.escalation_level if self.type == "escalate" else self.alert.updates
        return f"{self.alert.id}:{self.type}:{n}"

    def to_json(self) -> dict[str, Any]:
        data = {"type": self.type, "message_id": self.message_id, "at": self.at, **self.alert.to_json()}
        if self.end_reason is not None:
            data["end_reason"] = self.end_reason
        return data


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
    """Turns verdicts into alert events; holds the open alerts."""

    def __init__(self, settings: AlertSettings, *, controls: ZoneControls | None = None,
                 clock: Callable[[], float] = time.time, journal: OpenAlertJournal | None = None) -> None:
        self.settings = settings
        self.controls = controls or ZoneControls()
        self.open: dict[str, Alert] = {}
        self.journal = journal
        self._clock = clock

    def end_previous_run(self) -> list[AlertEvent]:
        """`end` events, reason "monitor restarted", for the alerts the journal says were open at the last stop.

        The journal keeps them until `persist()` is called after these events were published, so a crash
        in between ends them at the next start instead.
        """
        if self.journal is None:
            return []
        now = self._clock()
        previous = self.journal.load()
        if previous:
            log.info("ending alerts left open by the previous run", alerts=[a.id for a in previous],
                     path=str(self.journal.file.path))
        return [AlertEvent("end", replace(a, updated_at=now, updates=a.updates + 1, reason=RESTARTED), at=now,
                           end_reason=RESTARTED) for a in previous]

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

    def decide(self, window: Window, verdict: Verdict) -> AlertEvent | None:
        """The event a verdict causes: a new alert, an update of an open one, or nothing."""
        if not self.warns(window.zone, verdict):
            return None
        now = self._clock()
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
        )
        self.open[updated.id] = updated
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
            id=uuid.uuid4().hex[:16],
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
        )

    def expire(self) -> list[AlertEvent]:
        """End every open alert not confirmed within the TTL."""
        now = self._clock()
        ended = [a for a in self.open.values() if now - a.updated_at >= self.settings.dedup_ttl_s]
        events = [self._end(alert, now) for alert in ended]
        if events:
            self.persist()
        return events

    def _end(self, alert: Alert, now: float) -> AlertEvent:
        del self.open[alert.id]
        reason = f"not confirmed for dedup_ttl_s={self.settings.dedup_ttl_s:g} s"
        return AlertEvent("end", replace(alert, updated_at=now, updates=alert.updates + 1), at=now,
                          end_reason=reason)
