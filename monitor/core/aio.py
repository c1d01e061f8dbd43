"""Small asyncio helpers shared by the stages."""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


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
    """Exponential backoff with jitter, the one formula every reconnect and retry uses.

    Attempt n (1, 2, ...) waits `min(max_s, initial_s * 2**(n-1))` scaled by a random
    factor in [1 - jitter, 1 + jitter]: doubling, capped, and never in lock step with
    another client retrying against the same server.
    """

    def __init__(self, initial_s: float, max_s: float, *, jitter: float = 0.25,
                 rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry `attempt` (1, 2, ...)."""
        base = min(self.max_s, self.initial_s * 2.0 ** min(max(attempt, 1) - 1, 64))
        return base * self._rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def next(self) -> float:
        """The delay before the next attempt; counts the attempt."""
        self.attempt += 1
        return self.delay(self.attempt)

    def reset(self) -> None:
        """Start again from `initial_s` (after a success)."""
        self.attempt = 0


def leaf_errors(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every exception inside a (nested) exception group, in order."""
    leaves: list[BaseException] = []
    for error in group.exceptions:
        leaves.extend(leaf_errors(error) if isinstance(error, BaseExceptionGroup) else [error])
    return leaves


# The first generation is collected after this many new container objects (Python's default: 700).
# A replay allocates fast and nearly all of it dies young; 600 collections per run cost 0.2 s of the
# event loop, a tenth as many cost 0.03 s.
GC_YOUNG_THRESHOLD = 10_000
_owns_process = False  # set by run_loop: the command line's process, not a test's


def settle_startup_heap() -> None:
    """Tell the garbage collector that what start-up built stays: call once the heavy imports are done.

    Modules, classes and validation schemas (the `openai` package alone brings some 60,000
    objects) are never garbage, yet every full collection traversed them all; frozen, they are
    left out (a replay's full collections went from 0.25 s to 0.03 s). Safe to call again. Only
    in a process `run_loop` owns: a test that runs the service in its own process keeps its heap.
    """
    if _owns_process:
        gc.freeze()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is importable, else on asyncio's loop (with the start-up heap settled)."""
    global _owns_process
    _owns_process = True
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(GC_YOUNG_THRESHOLD, young), older, oldest)
    settle_startup_heap()
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every platform
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
