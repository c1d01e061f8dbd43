"""Configuration of escalation (`[escalation]`) and of the per-zone block in `[[zones]]`.

Escalation is off by default: it adds `escalate` events to the alert stream, which
subscribers written before it may not expect. Quiet hours apply to `info` alerts
only; `warning` and `critical` are never silenced.
"""

from __future__ import annotations

import re
from datetime import datetime
from datetime import time as clock_time
from typing import Annotated

from pydantic import AfterValidator, Field

from monitor.assess.verdict import Severity
from monitor.core.config import PositiveFloat, Section

_PERIOD = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


def _minutes(hours: str, minutes: str, *, end: bool) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and (m or not end)):
        raise ValueError(f"{hours}:{minutes} is not a time of day (00:00 to 23:59; 24:00 only as an end)")
    return h * 60 + m


def parse_period(text: str) -> tuple[int, int]:
    """`"22:00-07:00"` as (start, end) minutes after midnight; the end may be before the start (overnight)."""
    match = _PERIOD.match(text.strip())
    if match is None:
        raise ValueError(f"'{text}' is not a period of the day: write it as HH:MM-HH:MM, e.g. \"22:00-07:00\"")
    start = _minutes(match[1], match[2], end=False)
    end = _minutes(match[3], match[4], end=True)
    if start == end:
        raise ValueError(f"'{text}' starts where it ends: for all day write \"00:00-24:00\"")
    return start, end


def _check_period(text: str) -> str:
    parse_period(text)
    return text.strip()


QuietPeriod = Annotated[str, AfterValidator(_check_period)]


def in_periods(periods: list[str], moment: datetime | clock_time) -> bool:
    """Whether the local time of day `moment` falls in one of `periods` (start included, end excluded)."""
    minute = moment.hour * 60 + moment.minute
    for period in periods:
        start, end = parse_period(period)
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if inside:
            return True
    return False


class Ladder(Section):
    """How alerts of one severity escalate. Without `escalate_after_s` they never do."""

    escalate_after_s: PositiveFloat | None = Field(
        default=None, description="warn again this long after the first warning, if the hazard is still confirmed")
    repeat_after_s: PositiveFloat | None = Field(
        default=None, description="each further escalation this long after the previous one (default: "
                                  "escalate_after_s)")
    caregivers_from_level: int = Field(
        default=2, ge=1, description="escalations from this level on also notify caregivers (<prefix>/escalations)")

    @property
    def enabled(self) -> bool:
        return self.escalate_after_s is not None

    @property
    def repeat_s(self) -> float:
        assert self.escalate_after_s is not None
        return self.repeat_after_s or self.escalate_after_s


class EscalationSettings(Section):
    """`[escalation]`: when a persisting, unacknowledged hazard is warned about again, and the limits."""

    enabled: bool = Field(default=False, description="off by default: escalate events are new on the alert stream")
    confirmed_within_s: PositiveFloat = Field(
        default=60.0, description="still confirmed: an update arrived after the previous warning and at most "
                                  "this long ago")
    raise_severity: bool = Field(default=True, description="the first escalation raises the severity one step")
    max_per_alert: int = Field(default=3, ge=1, description="escalations of one alert at most")
    max_per_hour: int = Field(
        default=10, ge=1, description="repeats to the person (escalations below caregivers_from_level) of all "
                                      "alerts in any rolling hour; past it a repeat is skipped, the ladder climbs on")
    caregivers_max_per_hour: int = Field(
        default=10, ge=1, description="caregiver notifications of all alerts in any rolling hour; past it one "
                                      "summary an hour names every alert waiting")
    info: Ladder = Field(default_factory=Ladder)
    warning: Ladder = Field(default_factory=lambda: Ladder(escalate_after_s=120.0))
    critical: Ladder = Field(default_factory=lambda: Ladder(escalate_after_s=30.0))

    def ladder(self, severity: Severity, zone: ZoneEscalation | None = None) -> Ladder:
        """The ladder for `severity`: the zone's own when it sets one, else the global one."""
        own = getattr(zone, severity) if zone is not None else None
        return own if own is not None else getattr(self, severity)  # type: ignore[no-any-return]


class ZoneEscalation(Section):
    """Per-zone overrides under `[zones.escalation]`: a ladder given here replaces the global one whole."""

    enabled: bool | None = Field(default=None, description="false: this zone never escalates")
    info: Ladder | None = None
    warning: Ladder | None = None
    critical: Ladder | None = None
