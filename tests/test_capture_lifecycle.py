"""The capture-thread lifecycle cameras and microphones share (sensors/capture.py).

A scripted source drives the loop through every outcome: the backoff attempt grows while an input
fails and starts again after one that delivered; a fatal error ends the thread with its credentials
redacted; a stop during the backoff wait is no reconnect. Then the real camera and microphone, pointed
at a closed loopback port, are shown to back off the same way through the same code.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.core.aio import Backoff
from monitor.core.errors import SensorError
from sensors.audio import MicrophoneSource
from sensors.audio_config import MicrophoneSettings
from sensors.camera import CameraSource
from sensors.camera_config import CameraSettings, ReconnectSettings
from sensors.capture import CaptureLifecycle, OpenFailed, Outcome

SECRET_URL = "rtsp://user:secret@127.0.0.1:{port}/live"


class RecordingBackoff(Backoff):
    """Notes every attempt number it is asked about and waits `wait_s`."""

    def __init__(self, wait_s: float = 0.0) -> None:
        super().__init__(1.0, 1.0, jitter=0.0)
        self.attempts: list[int] = []
        self.wait_s = wait_s

    def delay(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return self.wait_s


class Scripted(CaptureLifecycle[str]):
    """Each step is what `_open` does: fail ("open-fails"), raise, or open an input the pump turns into that outcome."""

    noun = "scripted"

    def __init__(self, steps: list[str | Exception], *, reconnect: ReconnectSettings | None = None) -> None:
        super().__init__("s1", reconnect or ReconnectSettings(), logger="tests.capture")
        self.steps: deque[str | Exception] = deque(steps)
        self.closed: list[str] = []
        self.finished = threading.Event()

    def _open(self) -> str:
        step = self.steps.popleft() if self.steps else "open-fails"
        if isinstance(step, Exception):
            raise step
        if step == "open-fails":
            raise OpenFailed("scripted 's1': cannot open the input")
        return step

    def _pump(self, opened: str) -> Outcome:
        self._set_state("online")
        assert opened in ("stopped", "ended", "looped", "failed", "delivered")
        return opened  # type: ignore[return-value]  # checked just above

    def _close_input(self, opened: str) -> None:
        self.closed.append(opened)

    def _lost(self) -> str:
        return "scripted 's1': stopped delivering"

    def _capture_ended(self) -> None:
        self.finished.set()


def test_the_backoff_grows_while_an_input_fails_and_starts_again_after_one_that_delivered() -> None:
    source = Scripted(["open-fails", "open-fails", "failed", "delivered", "open-fails", "failed", "looped",
                       "failed", "ended"])
    source._backoff = backoff = RecordingBackoff()
    with capture_logs() as logs:
        source._capture()
    assert backoff.attempts == [1, 2, 3, 1, 2, 3, 4]  # reset by "delivered"; "looped" reopens at once
    assert source.reconnects == 7
    assert source.closed == ["failed", "delivered", "failed", "looped", "failed", "ended"]  # every opened input
    assert source._state == "offline" and source.finished.is_set() and source._error is None
    assert source._last_error == "scripted 's1': stopped delivering"
    events = [e["event"] for e in logs]
    assert events[0] == "scripted offline" and events[-1] == "scripted closed"
    assert logs[-1]["reason"] == "ended"
    assert events.count("scripted online") == 5  # a looped input stays online into its next pass


def test_a_fatal_error_ends_the_capture_with_its_credentials_redacted() -> None:
    url = SECRET_URL.format(port=554)
    source = Scripted(["looped", SensorError(f"scripted 's1': cannot read {url}")])
    source._backoff = RecordingBackoff()
    with capture_logs() as logs:
        source._capture()
    assert isinstance(source._error, SensorError)  # run() raises it on the event loop
    assert source._last_error == "scripted 's1': cannot read rtsp://***@127.0.0.1:554/live"
    assert source._state == "offline" and source.finished.is_set()
    assert [e["reason"] for e in logs if e["event"] == "scripted closed"] == ["error"]


async def test_a_stop_during_the_backoff_wait_ends_the_thread_and_is_no_reconnect() -> None:
    source = Scripted([], reconnect=ReconnectSettings(initial_s=60.0, max_s=60.0, jitter=0.0))
    source._start_capture()
    deadline = time.monotonic() + 10
    while source._last_error is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert source._last_error == "scripted 's1': cannot open the input"
    started = time.monotonic()
    await source._stop_capture()
    assert time.monotonic() - started < 5.0  # not the 60 s of the backoff
    assert source.finished.is_set() and source.ended and source.reconnects == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _retries(source: CameraSource | MicrophoneSource, backoff: RecordingBackoff, count: int) -> None:
    source._backoff = backoff
    task = asyncio.create_task(source.run(_ignore))
    try:
        deadline = time.monotonic() + 20
        while len(backoff.attempts) < count and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("kind", ["camera", "microphone"])
async def test_a_stream_that_never_opens_backs_off_further_each_time_with_its_credentials_hidden(kind: str) -> None:
    url = SECRET_URL.format(port=_closed_port())
    reconnect = {"initial_s": 0.01, "max_s": 0.02, "open_timeout_s": 2.0}
    source: CameraSource | MicrophoneSource
    if kind == "camera":
        source = CameraSource(CameraSettings(id="cam", kind="url", url=url, decoder="pyav", reconnect=reconnect))
    else:
        source = MicrophoneSource(MicrophoneSettings(id="mic", kind="url", url=url, reconnect=reconnect))
    backoff = RecordingBackoff(wait_s=0.01)
    await _retries(source, backoff, 3)
    assert backoff.attempts[:3] == [1, 2, 3]
    health = source.health()
    assert health.state == "offline" and health.reconnects >= 2
    assert health.last_error is not None and "127.0.0.1" in health.last_error
    assert "secret" not in health.last_error and "***@" in health.last_error


async def _ignore(observation: Any) -> None:
    return None
