"""The home's feedback as context: zones that ask for it get their recent feedback notes with each window.

A note is a short dict of strings (what the home said about an earlier alert or a
missed hazard in the zone). The prompt shows notes inside the observations block
as JSON data, like every observation; the instructions never change. Which notes
a window gets is the provider's business: the live store (`monitor.history`) or
the labels of a replayed history, always bounded by the zone's
`assessment.feedback_context` settings.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import structlog

from monitor.assess.settings import AssessmentSettings, FeedbackContextSettings
from monitor.assess.single import Assessor
from monitor.assess.verdict import Verdict
from monitor.core.text import shorten
from monitor.windows import Window
from monitor.zones import ZoneSettings

log = structlog.get_logger("monitor.assess.context")

Note = dict[str, str]
# Notes are an extra: a lookup slower than this is given up and the window assessed without them.
NOTES_TIMEOUT_S = 2.0
# A store that fails every window says so at once, then once a minute with the count.
_LOG_EVERY_S = 60.0
# The key of `failures` (the service's `optional_failures`) this counts under.
PART = "feedback_context"


class NotesProvider(Protocol):
    """Where feedback notes come from: the home's recent feedback about `zone` before time `at`."""

    async def notes(self, zone: str, at: float, settings: FeedbackContextSettings) -> tuple[Note, ...]: ...


class WithFeedbackContext:
    """Adds the zone's feedback notes to each window of the zones that enable it, then assesses it.

    `clock` says what "now" is: the wall clock live, the recorded time in a replay of the
    home's history (so a window only sees feedback about what happened before it).
    """

    def __init__(self, inner: Assessor, provider: NotesProvider, *, default: FeedbackContextSettings,
                 zones: Mapping[str, FeedbackContextSettings], clock: Callable[[], float] = time.time,
                 failures: Counter[str] | None = None, timeout_s: float = NOTES_TIMEOUT_S) -> None:
        self.inner = inner
        self.provider = provider
        self.default = default
        self.zones = dict(zones)
        self.clock = clock
        self.name = inner.name
        self.failures: Counter[str] = failures if failures is not None else Counter()
        self.timeout_s = timeout_s
        self._logged_at = float("-inf")

    def settings(self, zone: str) -> FeedbackContextSettings:
        return self.zones.get(zone, self.default)

    async def assess(self, window: Window) -> Verdict:
        settings = self.settings(window.zone)
        if not settings.enabled:
            return await self.inner.assess(window)
        notes = await self._notes(window, settings)
        return await self.inner.assess(replace(window, context=notes) if notes else window)

    async def _notes(self, window: Window, settings: FeedbackContextSettings) -> tuple[Note, ...]:
        """The zone's notes, or none when they cannot be had: an extra must never fail an assessment."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.provider.notes(window.zone, self.clock(), settings)
        except Exception as exc:  # a corrupt store, a lock held too long, a bug: assess without notes
            self._failed(window, exc)
            return ()

    def _failed(self, window: Window, exc: Exception) -> None:
        self.failures[PART] += 1
        now = time.monotonic()
        if now - self._logged_at < _LOG_EVERY_S:
            return
        self._logged_at = now
        error = f"no answer within {self.timeout_s:g} s" if isinstance(exc, TimeoutError) else shorten(exc, 300)
        log.error("feedback notes unavailable; assessing without them", zone=window.zone, window=window.id,
                  error=error, error_type=type(exc).__name__, failures=self.failures[PART])


def with_feedback_context(assessor: Assessor, provider: NotesProvider | None, default: AssessmentSettings,
                          zones: Sequence[ZoneSettings], *, clock: Callable[[], float] = time.time,
                          failures: Counter[str] | None = None) -> Assessor:
    """`assessor`, wrapped to add feedback notes when any zone enables them (and a provider exists).

    A lookup that fails or takes longer than NOTES_TIMEOUT_S is counted in `failures` under
    "feedback_context" and logged, and the window is assessed without notes.
    """
    per_zone = {z.id: z.assessment.feedback_context for z in zones if z.assessment is not None}
    wanted = default.feedback_context.enabled or any(s.enabled for s in per_zone.values())
    if provider is None or not wanted:
        return assessor
    return WithFeedbackContext(assessor, provider, default=default.feedback_context, zones=per_zone, clock=clock,
                               failures=failures)
