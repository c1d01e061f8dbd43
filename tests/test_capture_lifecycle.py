"""The capture-thread lifecycle cameras and microphones share (sensors/capture.py).

A scripted source drives the loop through every outcome: the backoff attempt grows while an input
fails and starts again after one that delivered; a fatal error ends the thread with its credentials
redacted; a stop during the backoff wait is no reconnect; a thread that outlived its join leaves the
next run alone. Then the real camera and microphone, pointed
at a closed loopback port, are shown to back off the same way through the same code.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from structlog.testing import capture_logs

from monitor.core.aio import Backoff
from monitor.core.errors import SensorError
from sensors import capture
from sensors.audio import MicrophoneSource
from sensors.audio_config import MicrophoneSettings
from sensors.camera import CameraSource
from sensors.camera_config import CameraSettings, ReconnectSettings
from sensors.capture import CaptureLifecycle, CaptureRun, OpenFailed, Outcome

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


class Scripted(CaptureLifecycle[str, CaptureRun]):
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

    def _pump(self, opened: str, run: CaptureRun) -> Outcome:
        self._set_state("online")
        assert opened in ("stopped", "ended", "looped", "failed", "delivered")
        return opened  # type: ignore[return-value]  # checked just above

    def _close_input(self, opened: str) -> None:
        self.closed.append(opened)

    def _lost(self) -> str:
        return "scripted 's1': stopped delivering"

    def _capture_ended(self, run: CaptureRun) -> None:
        self.finished.set()


def _capture_to_the_end(source: Scripted) -> CaptureRun:
    run = CaptureRun()
    source._start_capture(run)
    assert source._thread is not None
    source._thread.join(10)
    assert not source._thread.is_alive()
    return run


def test_the_backoff_grows_while_an_input_fails_and_starts_again_after_one_that_delivered() -> None:
    source = Scripted(["open-fails", "open-fails", "failed", "delivered", "open-fails", "failed", "looped",
                       "failed", "ended"])
    source._backoff = backoff = RecordingBackoff()
    with capture_logs() as logs:
        run = _capture_to_the_end(source)
    assert backoff.attempts == [1, 2, 3, 1, 2, 3, 4]  # reset by "delivered"; "looped" reopens at once
    assert source.reconnects == 7
    assert source.closed == ["failed", "delivered", "failed", "looped", "failed", "ended"]  # every opened input
    assert source._state == "offline" and source.finished.is_set() and run.error is None
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
        run = _capture_to_the_end(source)
    assert isinstance(run.error, SensorError)  # run() raises it on the event loop
    assert source._last_error == "scripted 's1': cannot read rtsp://***@127.0.0.1:554/live"
    assert source._state == "offline" and source.finished.is_set()
    assert [e["reason"] for e in logs if e["event"] == "scripted closed"] == ["error"]


async def test_a_stop_during_the_backoff_wait_ends_the_thread_and_is_no_reconnect() -> None:
    source = Scripted([], reconnect=ReconnectSettings(initial_s=60.0, max_s=60.0, jitter=0.0))
    source._start_capture(CaptureRun())
    deadline = time.monotonic() + 10
    while source._last_error is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert source._last_error == "scripted 's1': cannot open the input"
    started = time.monotonic()
    await source._stop_capture()
    assert time.monotonic() - started < 5.0  # not the 60 s of the backoff
    assert source.finished.is_set() and source.ended and source.reconnects == 0


class _Stuck:
    """A live input: with a `gate`, its second read blocks until `gate.release` is set, then fails or delivers."""

    def __init__(self, gate: _Gate | None) -> None:
        self.gate = gate
        self.reads = 0

    def read(self) -> None:
        if self.gate is not None and self.reads >= 1:
            self.gate.blocked.set()
            self.gate.release.wait(30)
            if self.gate.fails:
                raise SensorError("the read blocked past the stop failed at last")
        self.reads += 1
        time.sleep(0.01)


class _Gate:
    def __init__(self, *, fails: bool) -> None:
        self.fails = fails
        self.blocked = threading.Event()  # the first run's thread is in its blocked read
        self.release = threading.Event()  # the test lets that read return


class _StuckReader(_Stuck):
    """A camera `_Reader` on `_Stuck`: small frames that all differ."""

    fps = None
    mode = "opencv"
    slack_s = 1e-6
    keyframe_interval_s = None
    error = None

    def grab(self) -> bool:
        self.read()
        return True

    def retrieve(self) -> Any:
        return np.full((48, 64, 3), self.reads * 40 % 256, np.uint8)

    def media_time(self, index: int) -> float | None:
        return None

    def due(self, after_s: float) -> None:
        return None

    def close(self) -> None:
        return None


class _StuckContainer(_Stuck):
    """A PyAV container on `_Stuck`, for a microphone: a tenth of a second of quiet per read."""

    streams = SimpleNamespace(audio=["track"])

    def demux(self, stream: str) -> Any:
        while True:
            self.read()
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.float32), format="flt", layout="mono")
            frame.sample_rate = 16000
            yield SimpleNamespace(decode=lambda frame=frame: [frame])

    def close(self) -> None:
        return None


class _StuckCamera(CameraSource):
    def __init__(self, inputs: list[_StuckReader]) -> None:
        super().__init__(CameraSettings(id="cam", kind="url", url="rtsp://127.0.0.1/live", max_fps=50,
                                        gating={"enabled": False}))
        self.inputs = deque(inputs)

    def _open(self) -> Any:
        return self.inputs.popleft()


class _StuckMicrophone(MicrophoneSource):
    def __init__(self, inputs: list[_StuckContainer]) -> None:
        super().__init__(MicrophoneSettings(id="mic", kind="url", url="rtsp://127.0.0.1/live"))
        self.inputs = deque(inputs)

    def _open(self) -> Any:
        return self.inputs.popleft()


async def _until(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("ending", ["fails", "delivers"])
@pytest.mark.parametrize("kind", ["camera", "microphone"])
async def test_a_capture_thread_that_outlived_its_join_leaves_the_next_run_delivering(
        kind: str, ending: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first run ends while its thread is blocked in a read (the camera's by a failing emit, the
    # microphone's by a cancel); the join gives up, a second run starts, then the old read returns.
    monkeypatch.setattr(capture, "_JOIN_TIMEOUT_S", 0.1)
    gate = _Gate(fails=ending == "fails")
    source: _StuckCamera | _StuckMicrophone
    if kind == "camera":
        source = _StuckCamera([_StuckReader(gate), _StuckReader(None)])
    else:
        source = _StuckMicrophone([_StuckContainer(gate), _StuckContainer(None)])
    frames: list[Any] = []

    async def refuse(observation: Any) -> None:
        await asyncio.to_thread(gate.blocked.wait, 10)
        raise RuntimeError("emit failed")

    async def keep(observation: Any) -> None:
        frames.append(observation)

    def delivered() -> int:
        return len(frames) if isinstance(source, CameraSource) else source.samples

    first = asyncio.create_task(source.run(refuse))
    await _until(gate.blocked.is_set, "the first run's read to block")
    if kind == "microphone":
        first.cancel()
    assert isinstance((await asyncio.gather(first, return_exceptions=True))[0], RuntimeError | asyncio.CancelledError)
    old = source._thread
    assert old is not None and old.is_alive()  # outlived its join, blocked in the read
    first_delivered = delivered()
    second = asyncio.create_task(source.run(keep))
    with capture_logs() as logs:
        try:
            await _until(lambda: delivered() > first_delivered, "the second run to deliver")
            gate.release.set()
            await asyncio.to_thread(old.join, 10)
            assert not old.is_alive()  # it saw its own stop flag, not the second run's
            before = delivered()
            await _until(lambda: delivered() > before or second.done(), "the second run to deliver again")
            assert not second.done()  # not ended by the old thread's exit
            health = source.health()
            assert health.state == "online" and not health.ended and health.last_error is None
        finally:
            second.cancel()
            await asyncio.gather(second, return_exceptions=True)
    stale_error = "the read blocked past the stop failed at last" if gate.fails else None
    assert [e["error"] for e in logs if e["event"] == f"{kind} capture thread outlived its run"] == [stale_error]


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
