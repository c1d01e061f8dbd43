"""Long-lived tasks the daemon depends on: restarted with backoff when they die, and visibly so.

A task that dies of an unexpected exception (a bug, an input nobody foresaw) must neither stop
the daemon nor vanish: `supervise` logs it with its traceback, counts it in the task's `Crashes`,
and runs it again after the one `Backoff`. `Crashes.problem()` says so, naming the task and the
error, for as long as the last crash is recent (`hold_s`), so `/readyz`, the stats topic and the
hub's problem entity in Home Assistant show it at once, and clear once the task has run that long
without dying again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from monitor.core.aio import Backoff
from monitor.core.text import shorten

log = structlog.get_logger("monitor.supervise")

DEFAULT_HOLD_S = 60.0
RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0


class Crashes:
    """How often a named task died of an unexpected error, and the last time and error."""

    def __init__(self, name: str, *, hold_s: float = DEFAULT_HOLD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.hold_s = hold_s
        self.count = 0
        self.last_at: float | None = None
        self.last_error = ""
        self._clock = clock

    def failed(self, error: BaseException) -> None:
        self.count += 1
        self.last_at = self._clock()
        self.last_error = f"{type(error).__name__}: {shorten(str(error), 200)}".rstrip(": ")

    def problem(self) -> str | None:
        """What to show while the last crash is recent; None once the task has run `hold_s` since."""
        if self.last_at is None:
            return None
        ago = self._clock() - self.last_at
        if ago >= self.hold_s:
            return None
        return (f"task {self.name} died {ago:.0f} s ago and was restarted ({self.count} time(s) so far): "
                f"{self.last_error}")


async def supervise(run: Callable[[], Awaitable[None]], crashes: Crashes, *,
                    backoff: Backoff | None = None) -> None:
    """Await `run()` until it returns or is cancelled; after an unexpected exception, restart it with backoff."""
    backoff = backoff or Backoff(RESTART_MIN_S, RESTART_MAX_S)
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except Exception as exc:  # anything but cancellation: the task is restarted, never lost
            crashes.failed(exc)
            if time.monotonic() - started > RESTART_MAX_S:
                backoff.reset()  # it had been running well: a new fault starts from the short delay
            delay = backoff.next()
            log.error("task died of an unexpected error; restarting it", task=crashes.name,
                      restarts=crashes.count, retry_in_s=round(delay, 2), error=crashes.last_error, exc_info=exc)
            await asyncio.sleep(delay)
