"""Camera sources on real media made here: mp4v files, an image folder, MJPEG over HTTP, RTSP, a missing device."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from monitor.core.aio import Backoff
from monitor.core.errors import SensorError
from sensors.camera import CameraSource
from sensors.camera_config import CameraSettings
from sensors.types import Frame, Observation
from tests.support.media import (
    MjpegServer,
    RtspRelay,
    Scene,
    appears_at,
    moving_square,
    rtsp_missing,
    write_folder,
    write_video,
)

W, H, FPS = 640, 360, 10.0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {
        "static": write_video(folder / "static.mp4", Scene(width=W, height=H, seed=3), seconds=30, fps=FPS),
        "moving": write_video(folder / "moving.mp4", Scene(width=W, height=H, seed=4, moving=moving_square(W, H)),
                              seconds=10, fps=FPS),
        "change": write_video(folder / "change.mp4", Scene(width=W, height=H, seed=5, moving=appears_at(12.0, W, H)),
                              seconds=20, fps=FPS),
    }


def _camera(**values: Any) -> CameraSource:
    return CameraSource(CameraSettings(id=values.pop("id", "cam"), **values))


async def _collect(source: CameraSource, *, until: Callable[[list[Frame]], bool] | None = None,
                   timeout_s: float = 20.0, on_frame: Callable[[Frame], Any] | None = None) -> list[Frame]:
    """Run the source until it ends (or `until` holds), collecting its frames."""
    frames: list[Frame] = []
    done = asyncio.Event()

    async def emit(observation: Observation) -> None:
        assert isinstance(observation, Frame)
        frames.append(observation)
        if on_frame is not None:
            result = on_frame(observation)
            if asyncio.iscoroutine(result):
                await result
        if until is not None and until(frames):
            done.set()

    task = asyncio.create_task(source.run(emit))
    waiter = asyncio.create_task(done.wait())
    finished, _ = await asyncio.wait({task, waiter}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task not in finished:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert finished, f"no result within {timeout_s} s; health: {source.health()}"
    return frames


async def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not {what} within {timeout_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


# -- video files --------------------------------------------------------------------------------------
async def test_static_scene_is_skipped_except_for_heartbeats(media: dict[str, Path]) -> None:
    camera = _camera(kind="file", path=media["static"], speed=0, max_fps=2, gating={"heartbeat_s": 10})
    frames = await _collect(camera)
    offsets = [round(f.ts - frames[0].ts, 1) for f in frames]
    assert offsets == [0.0, 10.0, 20.0]
    health = camera.health()
    # frames_read counts decoded frames: PyAV leaves out the end of each GOP no sample needs
    assert health.frames_sampled == 60 and 60 < health.frames_read <= 300
    assert health.gate == {"changed": 1, "heartbeat": 2, "skipped": 57}
    assert health.ended and health.frames_dropped == 0


async def test_moving_scene_passes_every_sampled_frame(media: dict[str, Path]) -> None:
    camera = _camera(kind="file", path=media["moving"], speed=0, max_fps=2)
    frames = await _collect(camera)
    assert len(frames) == 20
    assert all(f.change > 0.005 for f in frames)
    assert camera.health().gate == {"changed": 20, "heartbeat": 0, "skipped": 0}
    first = frames[0]
    assert (first.width, first.height) == (640, 360)
    image = cv2.imdecode(np.frombuffer(first.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (360, 640, 3)


async def test_scene_that_goes_static_then_changes_is_assessed_at_the_change(media: dict[str, Path]) -> None:
    camera = _camera(kind="file", path=media["change"], speed=0, max_fps=2, longest_side=320,
                     gating={"heartbeat_s": None})
    frames = await _collect(camera)
    offsets = [round(f.ts - frames[0].ts, 1) for f in frames]
    # the first frame, then nothing until the object walks in at 12 s, then nothing once it stands still
    assert offsets[0] == 0.0
    assert offsets[1] == 12.0
    assert all(12.0 <= t <= 13.0 for t in offsets[1:])
    assert max(f.width for f in frames) == 320  # downscaled to longest_side


async def test_paced_playback_follows_the_file_clock(media: dict[str, Path]) -> None:
    started = time.monotonic()
    frames = await _collect(_camera(kind="file", path=media["moving"], speed=5, max_fps=2))
    elapsed = time.monotonic() - started
    assert 1.6 <= elapsed <= 4.0  # 10 s of video at 5x
    assert len(frames) == 20  # sampling follows media time, whatever the speed


async def test_looping_file_keeps_going_with_rising_timestamps(media: dict[str, Path]) -> None:
    camera = _camera(kind="file", path=media["moving"], speed=0, loop=True, max_fps=2)
    frames = await _collect(camera, until=lambda fs: len(fs) >= 45)
    assert len(frames) >= 45 and camera.health().frames_read > 100
    offsets = [f.ts - frames[0].ts for f in frames]
    assert offsets == sorted(offsets) and offsets[44] == pytest.approx(22.0, abs=0.2)


async def test_live_policy_drops_the_oldest_frames_and_counts_them(media: dict[str, Path]) -> None:
    camera = _camera(kind="file", path=media["moving"], speed=4, max_fps=10, queue_size=2)
    frames = await _collect(camera, on_frame=lambda f: asyncio.sleep(0.25))
    health = camera.health()
    assert health.frames_dropped > 0
    assert health.frames_emitted + health.frames_dropped == health.gate["changed"]
    assert len(frames) == health.frames_emitted


async def test_as_fast_as_possible_waits_for_a_slow_pipeline_instead_of_dropping(media: dict[str, Path]) -> None:
    camera = _camera(kind="file", path=media["moving"], speed=0, max_fps=2, queue_size=1)
    frames = await _collect(camera, on_frame=lambda f: asyncio.sleep(0.01))
    assert len(frames) == 20 and camera.health().frames_dropped == 0


async def test_missing_file_is_a_sensor_error_naming_the_camera(tmp_path: Path) -> None:
    camera = _camera(id="porch", kind="file", path=tmp_path / "nope.mp4")
    with pytest.raises(SensorError, match=r"camera 'porch': video file .*nope\.mp4 not found"):
        await camera.run(_ignore)
    assert camera.ended


async def _ignore(observation: Observation) -> None:
    return None


# -- image folder -------------------------------------------------------------------------------------
async def test_image_folder_plays_in_name_order_at_its_rate(tmp_path: Path) -> None:
    scene = Scene(width=320, height=240, seed=6, moving=moving_square(320, 240, period_s=20.0))
    folder = write_folder(tmp_path / "shots", scene, count=12, step_s=1.0, ext="jpg")
    (folder / "frame-0003.jpg").rename(folder / "frame-3.jpg")  # natural order: 3 before 0004
    (folder / "zz-broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored")
    started = time.monotonic()
    camera = _camera(kind="folder", path=folder, folder_fps=8, max_fps=8)
    frames = await _collect(camera)
    assert 1.0 <= time.monotonic() - started <= 4.0  # 13 entries at 8/s
    assert len(frames) == 12
    xs = [_square_x(f) for f in frames]
    assert xs == sorted(xs)


def _square_x(frame: Frame) -> int:
    image = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    red = (image[:, :, 2] > 180) & (image[:, :, 0] < 90) & (image[:, :, 1] < 90)
    return int(np.flatnonzero(red.any(axis=0))[0])


async def test_empty_folder_is_a_sensor_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SensorError, match="no images"):
        await _camera(kind="folder", path=tmp_path / "empty").run(_ignore)


# -- live streams -------------------------------------------------------------------------------------
FAST_RECONNECT = {"initial_s": 0.2, "max_s": 1.0, "open_timeout_s": 3.0, "read_timeout_s": 2.0}


async def test_mjpeg_stream_goes_offline_and_comes_back_by_itself() -> None:
    scene = Scene(width=320, height=240, seed=7, moving=moving_square(320, 240))
    server = MjpegServer(scene, fps=10).start()
    camera = _camera(kind="url", url=server.url, max_fps=5, reconnect=FAST_RECONNECT)
    frames: list[Frame] = []

    async def emit(observation: Observation) -> None:
        assert isinstance(observation, Frame)
        frames.append(observation)

    task = asyncio.create_task(camera.run(emit))
    try:
        await _wait_for(lambda: len(frames) >= 3, 10, "streaming")
        assert camera.health().state == "online" and camera.health().fps > 0
        server.stop()
        await _wait_for(lambda: camera.health().state == "offline", 10, "offline")
        await asyncio.sleep(1.5)  # a few failed reconnects while the server is away
        assert camera.health().state == "offline" and camera.health().reconnects >= 1
        count = len(frames)
        server.start()
        await _wait_for(lambda: camera.health().state == "online" and len(frames) >= count + 3, 10, "back")
        health = camera.health()
        assert health.last_frame_age_s is not None and health.last_frame_age_s < 1.0
        assert "cannot open http://127.0.0.1" in (health.last_error or "")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.stop()
    assert camera.ended


async def test_rtsp_stream_on_loopback_goes_offline_and_comes_back(tmp_path: Path) -> None:
    reason = rtsp_missing()
    if reason is not None:
        pytest.skip(reason)
    clip = write_video(tmp_path / "clip.mp4", Scene(width=320, height=240, seed=8, moving=moving_square(320, 240)),
                       seconds=4, fps=10)
    with RtspRelay(clip) as relay:
        camera = _camera(kind="url", url=relay.url, capture_options="rtsp_transport;udp", max_fps=5,
                         reconnect=FAST_RECONNECT)
        frames: list[Frame] = []

        async def emit(observation: Observation) -> None:
            assert isinstance(observation, Frame)
            frames.append(observation)

        task = asyncio.create_task(camera.run(emit))
        try:
            await _wait_for(lambda: len(frames) >= 3, 20, "streaming over RTSP")
            relay.stop_pusher()
            await _wait_for(lambda: camera.health().state == "offline", 20, "offline")
            count = len(frames)
            relay.start_pusher()
            await _wait_for(lambda: len(frames) >= count + 3, 30, "streaming again")
            assert camera.health().state == "online"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_missing_device_stays_offline_and_keeps_retrying() -> None:
    camera = _camera(kind="device", device=99, reconnect={"initial_s": 0.05, "max_s": 0.2, "open_timeout_s": 1})
    task = asyncio.create_task(camera.run(_ignore))
    try:
        await _wait_for(lambda: camera.health().reconnects >= 3, 10, "retrying")
        health = camera.health()
        assert health.state == "offline" and health.frames_read == 0
        assert health.last_error == "camera 'cam': cannot open video device 99"
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert camera.health().to_json()["state"] == "offline"


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    import random

    backoff = Backoff(0.5, 8.0, jitter=0.25, rng=random.Random(1))
    delays = [backoff.next() for _ in range(1, 9)]
    for n, delay in enumerate(delays, start=1):
        base = min(8.0, 0.5 * 2 ** (n - 1))
        assert 0.75 * base <= delay <= 1.25 * base
    assert len({round(d, 6) for d in delays[5:]}) == 3  # capped, yet not in lock step


async def test_frames_from_a_camera_are_not_encoded_until_asked(media: dict[str, Path]) -> None:
    """The camera hands over pixels and the gate's grey image; JPEG is the keyframe choice's business."""
    frames = await _collect(_camera(kind="file", path=media["moving"], speed=0, max_fps=5))
    assert frames and not any(frame.encoded for frame in frames)
    assert all(frame.image is not None and frame.thumbnail is not None for frame in frames)
    assert frames[0].jpeg.startswith(b"\xff\xd8") and frames[0].encoded
