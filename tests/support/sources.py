"""In-memory observation sources for pipeline tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sensors.types import InputHealth, LogEntry, Observation


def entry(text: str, *, source: str = "kitchen", ts: float | None = None) -> LogEntry:
    return LogEntry(source=source, ts=time.time() if ts is None else ts, text=text, behaviour=text, raw=text)


class ListSource:
    """Emits the given observations, each after waiting for `gate` (if given) or `interval_s`."""

    def __init__(self, source_id: str, observations: Sequence[Observation], *, interval_s: float = 0.0,
                 gate: Callable[[], Awaitable[None]] | None = None) -> None:
        self.id = source_id
        self.ended = False
        self.observations = list(observations)
        self.interval_s = interval_s
        self.gate = gate

    async def run(self, emit: Callable[[Observation], Awaitable[None]]) -> None:
        for observation in self.observations:
            if self.gate is not None:
                await self.gate()
            elif self.interval_s:
                await asyncio.sleep(self.interval_s)
            await emit(observation)

    def health(self) -> InputHealth:
        return InputHealth(self.id, "online", entries=len(self.observations))


async def ignore(observation: Observation) -> None:
    """An emit that drops what it is given (tests that look at a source's health, not its output)."""
    del observation


async def run_until_reconnected(source: Any, times: int, *, timeout_s: float, poll_s: float = 0.02) -> None:
    """Run a capture source until it has reconnected `times` times (or `timeout_s` passed), then stop it."""
    task = asyncio.create_task(source.run(ignore))
    deadline = time.monotonic() + timeout_s
    while source.reconnects < times and time.monotonic() < deadline:
        await asyncio.sleep(poll_s)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
