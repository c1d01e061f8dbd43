"""The capture-thread lifecycle shared by cameras and microphones.

A source that reads a blocking input (OpenCV, PyAV) does it in one thread per source: open the
input, pump it until it ends, fails or the source is stopped, and for a live input (a device, a
stream) reopen it with exponential backoff and jitter, going `offline` with its `last_error` in the
meantime. An input that cannot get better by retrying (a missing or corrupt file) raises from `_open`
or `_pump`; the exception ends the thread and `run` raises it on the event loop, so the pipeline
restarts the source with its own backoff. The attempt count restarts after an input that delivered.

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

_JOIN_TIMEOUT_S = 2.0


class OpenFailed(Exception):
    """A live input could not be opened this time; worth retrying."""


class CaptureLifecycle(ABC, Generic[InputT]):
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started_at = time.time()  # when the run began: a file read at speed 0 is stamped from it

    # -- what a kind of source says ------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> InputT:
        """Open the input; raise `OpenFailed` to retry later, anything else to end the run with that error."""

    @abstractmethod
    def _pump(self, opened: InputT) -> Outcome:
        """Read the opened input until it ends, fails or the source is stopped."""

    @abstractmethod
    def _close_input(self, opened: InputT) -> None:
        """Release an opened input (after every pump, whatever its outcome)."""

    @abstractmethod
    def _lost(self) -> str:
        """The error shown when a live input stops delivering."""

    def _capture_ended(self) -> None:
        """Called last in the capture thread: hand the end (and any error) to the event loop."""

    def _unblock(self) -> None:
        """Called after the stop flag is set: wake a capture thread waiting for something else than it."""

    def _state_changed(self, state: State) -> None:
        """Called when the state changes, before it is logged."""

    def _online_fields(self) -> dict[str, Any]:
        """What the `<noun> online` log line says besides the source."""
        return {}

    # -- the event-loop side ---------------------------------------------------------------------------
    def _start_capture(self) -> None:
        """Start a fresh capture thread: a new stop flag (an old thread that outlived its join keeps its own)."""
        self.ended = False
        self._stop = threading.Event()
        self._error = None
        self._started_at = time.time()
        self._thread = threading.Thread(target=self._capture, name=f"{self.noun}:{self.id}", daemon=True)
        self._thread.start()

    async def _stop_capture(self) -> None:
        """Stop the capture thread and wait for it a bounded time (a blocked read ends by its own timeout)."""
        self.ended = True
        self._stop.set()
        self._unblock()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, _JOIN_TIMEOUT_S)

    # -- the capture thread ----------------------------------------------------------------------------
    def _capture(self) -> None:
        try:
            self._capture_loop()
        except BaseException as exc:  # handed to run(), which raises it on the loop
            self._error = exc
            self._last_error = redact_credentials(str(exc))
        finally:
            if self._state == "online":
                self._state = "offline"
                reason = "error" if self._error is not None else "stopped" if self._stop.is_set() else "ended"
                self._log.info(f"{self.noun} closed", reason=reason)
            self._capture_ended()

    def _capture_loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                opened = self._open()
            except OpenFailed as exc:
                attempt += 1
                self._retry_later(str(exc), attempt)
                continue
            try:
                outcome = self._pump(opened)
            finally:
                self._close_input(opened)
            if outcome == "delivered":
                attempt = 0
            if outcome in ("stopped", "ended"):
                return
            if outcome == "looped":
                continue
            attempt += 1
            self._retry_later(self._lost(), attempt)

    def _retry_later(self, error: str, attempt: int) -> None:
        delay = self._backoff.delay(attempt)
        self._set_state("offline", error, retry_in_s=round(delay, 2))
        if not self._stop.wait(delay):
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
