"""The capture-thread lifecycle shared by cameras and microphones.

A source that reads a blocking input (OpenCV, PyAV) does it in one thread per source: open the
input, pump it until it ends, fails or the source is stopped, and for a live input (a device, a
stream) reopen it with exponential backoff and jitter, going `offline` with its `last_error` in the
meantime. An input that cannot get better by retrying (a missing or corrupt file) raises from `_open`
or `_pump`; the exception ends the thread and `run` raises it on the event loop, so the pipeline
restarts the source with its own backoff. The attempt count restarts after an input that delivered.

Each run of the thread has its own `CaptureRun`: its stop flag, its error and whatever it hands its
frames or facts to. A thread that outlived its join (blocked in a read when its run ended) still sees
its own stop flag when the read returns, stops, and touches nothing of the run started after it.

Subclasses say what to open, pump and close, and what to do when the thread ends; the states,
reconnect counter, log events (`<noun> online`, `<noun> offline`, `<noun> closed`) and errors (with
credentials redacted) are the same for every kind of source.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, Literal, TypeVar

import structlog

from monitor.core.aio import Backoff
from monitor.core.text import redact_credentials
from sensors.camera_config import ReconnectSettings

State = Literal["online", "offline"]
# What pumping an input came to: "delivered" means it failed, but only after delivering something,
# so the next reopen starts the backoff afresh.
Outcome = Literal["stopped", "ended", "looped", "failed", "delivered"]
InputT = TypeVar("InputT")


class CaptureRun:
    """One run of a capture thread: its own stop flag and error, handed to the thread as an argument."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None


RunT = TypeVar("RunT", bound=CaptureRun)

_JOIN_TIMEOUT_S = 2.0


class OpenFailed(Exception):
    """A live input could not be opened this time; worth retrying."""


class CaptureLifecycle(ABC, Generic[InputT, RunT]):
    """A source read in its own thread: open, pump, reopen with backoff; online or offline with the last error.

    `noun` names the kind of source in log events and the thread's name ("camera" -> `camera online`).
    """

    noun: ClassVar[str]

    def __init__(self, source_id: str, reconnect: ReconnectSettings, *, logger: str) -> None:
        self.id = source_id
        self.ended = False
        self.reconnects = 0
        self._log: Any = structlog.get_logger(logger).bind(source=source_id)
        self._backoff = Backoff(reconnect.initial_s, reconnect.max_s, jitter=reconnect.jitter)
        self._state: State = "offline"
        self._last_error: str | None = None
        self._run: RunT | None = None  # the current run: only its thread may end it or change the state
        self._current = threading.Lock()  # held while a run is made current, and while its thread ends it
        self._thread: threading.Thread | None = None
        self._started_at = time.time()  # when the run began: a file read at speed 0 is stamped from it

    # -- what a kind of source says ------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> InputT:
        """Open the input; raise `OpenFailed` to retry later, anything else to end the run with that error."""

    @abstractmethod
    def _pump(self, opened: InputT, run: RunT) -> Outcome:
        """Read the opened input until it ends, fails or `run` is stopped ("stopped" once a read returns after that)."""

    @abstractmethod
    def _close_input(self, opened: InputT) -> None:
        """Release an opened input (after every pump, whatever its outcome)."""

    @abstractmethod
    def _lost(self) -> str:
        """The error shown when a live input stops delivering."""

    def _capture_ended(self, run: RunT) -> None:
        """Called last in the capture thread of the current run: hand the end (and `run.error`) to the event loop."""

    def _unblock(self, run: RunT) -> None:
        """Called after `run`'s stop flag is set: wake its capture thread waiting for something else than it."""

    def _state_changed(self, state: State) -> None:
        """Called when the state changes, before it is logged."""

    def _online_fields(self) -> dict[str, Any]:
        """What the `<noun> online` log line says besides the source."""
        return {}

    # -- the event-loop side ---------------------------------------------------------------------------
    def _start_capture(self, run: RunT) -> None:
        """Start a fresh capture thread for `run` (an old thread that outlived its join keeps its own run)."""
        self.ended = False
        with self._current:
            self._run = run
        self._started_at = time.time()
        self._thread = threading.Thread(target=self._capture, args=(run,), name=f"{self.noun}:{self.id}", daemon=True)
        self._thread.start()

    async def _stop_capture(self) -> None:
        """Stop the capture thread and wait for it a bounded time (a blocked read ends by its own timeout)."""
        self.ended = True
        if self._run is not None:
            self._run.stop.set()
            self._unblock(self._run)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, _JOIN_TIMEOUT_S)

    # -- the capture thread ----------------------------------------------------------------------------
    def _capture(self, run: RunT) -> None:
        try:
            self._capture_loop(run)
        except BaseException as exc:  # handed to run(), which raises it on the loop
            run.error = exc
        finally:
            with self._current:
                if run is self._run:
                    self._end(run)
                else:  # a newer run owns the state, the last error and the hand-off now
                    self._log.info(f"{self.noun} capture thread outlived its run",
                                   error=None if run.error is None else redact_credentials(str(run.error)))

    def _end(self, run: RunT) -> None:
        if run.error is not None:
            self._last_error = redact_credentials(str(run.error))
        if self._state == "online":
            self._state = "offline"
            reason = "error" if run.error is not None else "stopped" if run.stop.is_set() else "ended"
            self._log.info(f"{self.noun} closed", reason=reason)
        self._capture_ended(run)

    def _capture_loop(self, run: RunT) -> None:
        attempt = 0
        while not run.stop.is_set():
            try:
                opened = self._open()
            except OpenFailed as exc:
                attempt += 1
                self._retry_later(run, str(exc), attempt)
                continue
            try:
                outcome = self._pump(opened, run)
            finally:
                self._close_input(opened)
            if outcome == "delivered":
                attempt = 0
            if outcome in ("stopped", "ended"):
                return
            if outcome == "looped":
                continue
            attempt += 1
            self._retry_later(run, self._lost(), attempt)

    def _retry_later(self, run: RunT, error: str, attempt: int) -> None:
        if run is not self._run:  # an old thread whose open or read returned after a newer run started
            return
        delay = self._backoff.delay(attempt)
        self._set_state("offline", error, retry_in_s=round(delay, 2))
        if not run.stop.wait(delay):
            self.reconnects += 1

    def _set_state(self, state: State, error: str | None = None, **fields: Any) -> None:
        new_error = error is not None and error != self._last_error
        if error is not None:
            self._last_error = error
        if state == self._state:
            if state == "offline" and new_error:  # e.g. a source that has not come online since the start
                self._log.warning(f"{self.noun} offline", error=error, **fields)
            elif state == "offline" and fields:
                self._log.debug(f"{self.noun} still offline", error=error, **fields)
            return
        self._state = state
        self._state_changed(state)
        if state == "online":
            self._log.info(f"{self.noun} online", **self._online_fields())
        else:
            self._log.warning(f"{self.noun} offline", error=error, **fields)
