"""Small asyncio helpers shared by the stages."""

from __future__ import annotations

import asyncio


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
