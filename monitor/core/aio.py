"""Small asyncio helpers shared by the stages."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set.

    Uses `asyncio.timeout` rather than `asyncio.wait_for`: on Python 3.11, `wait_for`
    can swallow a cancellation that races with the awaited result, which leaves a
    cancelled task running (and a task group waiting for it forever).
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until every one has finished.

    Cancels again while any is still running: on Python 3.11, `asyncio.wait_for`
    (which aiomqtt awaits on) swallows a cancellation that races with its result.
    """
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [task for task in pending if not task.done()]
    await asyncio.gather(*tasks, return_exceptions=True)


class Backoff:
    """Exponential backoff with jitter: delays are uniform in [ceiling/2, ceiling], within [min_s, max_s]."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.max_s, self.min_s * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return random.uniform(max(self.min_s, ceiling / 2), ceiling)

    def reset(self) -> None:
        self.attempt = 0


def leaf_errors(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception inside a (nested) exception group, in order."""
    leaves: list[BaseException] = []
    for error in group.exceptions:
        leaves.extend(leaf_errors(error) if isinstance(error, BaseExceptionGroup) else [error])
    return leaves
