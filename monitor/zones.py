"""Zones: the places the monitor watches. Sources that share a `zone` share one window."""

from __future__ import annotations

from pydantic import Field

from monitor.assess.settings import AssessmentSettings
from monitor.core.config import Identifier, Section
from monitor.escalation.settings import QuietPeriod, ZoneEscalation


class ZoneSettings(Section):
    """A zone groups sources (by their `zone` key) and may override the assessment strategy."""

    id: Identifier
    name: str | None = None
    assessment: AssessmentSettings | None = None

    # Reaching the person (docs/escalation.md): this zone's escalation overrides and quiet hours.
    escalation: ZoneEscalation | None = None
    quiet_hours: list[QuietPeriod] = Field(
        default_factory=list, description='local times when info alerts are silenced, e.g. ["22:00-07:00"]')
