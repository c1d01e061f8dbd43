"""Zones: the places the monitor watches. Sources that share a `zone` share one window."""

from __future__ import annotations

from monitor.assess.settings import AssessmentSettings
from monitor.core.config import Identifier, Section


class ZoneSettings(Section):
    """A zone groups sources (by their `zone` key) and may override the assessment strategy."""

    id: Identifier
    name: str | None = None
    assessment: AssessmentSettings | None = None
