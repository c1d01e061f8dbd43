"""The home's feedback as context: zones that ask for it get their recent feedback notes with each window.

A note is a short dict of strings (what the home said about an earlier alert or a
missed hazard in the zone). The prompt shows notes inside the observations block
as JSON data, like every observation; the instructions never change. Which notes
a window gets is the provider's business: the live store (`monitor.history`) or
the labels of a replayed history, always bounded by the zone's
`assessment.feedback_context` settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from monitor.assess.settings import AssessmentSettings, FeedbackContextSettings
from monitor.assess.single import Assessor
from monitor.assess.verdict import Verdict
from monitor.windows import Window
from monitor.zones import ZoneSettings

Note = dict[str, str]


class NotesProvider(Protocol):
    """Where feedback notes come from: the home's recent feedback about `zone` before time `at`."""

    async def notes(self, zone: str, at: float, settings: FeedbackContextSettings) -> tuple[Note, ...]: ...


class WithFeedbackContext:
    """Adds the zone's feedback notes to each window of the zones that enable it, then assesses it.

    `clock` says what "now" is: the wall clock live, the recorded time in a replay of the
    home's history (so a window only sees feedback about what happened before it).
    """

    def __init__(self, inner: Assessor, provider: NotesProvider, *, default: FeedbackContextSettings,
                 zones: Mapping[str, FeedbackContextSettings], clock: Callable[[], float] = time.time) -> None:
        self.inner = inner
        self.provider = provider
        self.default = default
        self.zones = dict(zones)
        self.clock = clock
        self.name = inner.name

    def settings(self, zone: str) -> FeedbackContextSettings:
        return self.zones.get(zone, self.default)

    async def assess(self, window: Window) -> Verdict:
        settings = self.settings(window.zone)
        if not settings.enabled:
            return await self.inner.assess(window)
        notes = await self.provider.notes(window.zone, self.clock(), settings)
        return await self.inner.assess(replace(window, context=notes) if notes else window)


def with_feedback_context(assessor: Assessor, provider: NotesProvider | None, default: AssessmentSettings,
                          zones: Sequence[ZoneSettings], *,
                          clock: Callable[[], float] = time.time) -> Assessor:
    """`assessor`, wrapped to add feedback notes when any zone enables them (and a provider exists)."""
    per_zone = {z.id: z.assessment.feedback_context for z in zones if z.assessment is not None}
    wanted = default.feedback_context.enabled or any(s.enabled for s in per_zone.values())
    if provider is None or not wanted:
        return assessor
    return WithFeedbackContext(assessor, provider, default=default.feedback_context, zones=per_zone, clock=clock)
