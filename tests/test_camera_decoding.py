"""Decoding only what the gate needs (PyAV): real H.264 made here, keyframes every 1 s and 2 s, 720p and 1080p,
from files and through the RTSP relay. Frames arrive at the configured rate, the mode is the documented one,
and a stream that goes away comes back."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from monitor.core.errors import SensorError
from sensors.camera import CameraSource
from sensors.camera_av import DecodePlan, parse_options
from sensors.camera_config import DECODE_MODES, CameraSettings
from sensors.types import Frame
from tests.support.daemon import Daemon, responder, wait_until
from tests.support.faults import Rig, metric, stops_cleanly, table
from tests.support.media import RtspRelay, Scene, moving_square, rtsp_missing, write_h264, write_video
from tests.support.openai_server import ScriptedOpenAIServer
from tests.test_camera_sources import _collect, _wait_for

W, H = 1280, 720
NO_GATE = {"enabled": False}  # every sampled frame is emitted: the count is the sampling rate


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("h264")
    scene = Scene(width=W, height=H, seed=4, moving=moving_square(W, H))
    return {
        "720p-gop1": write_h264(folder / "720p-gop1.mp4", scene, seconds=8, fps=30, keyframe_s=1.0),
        "720p-gop2": write_h264(folder / "720p-gop2.mp4", scene, seconds=8, fps=30, keyframe_s=2.0),
        # B-frames, some of them referenced (x264's pyramid): skipping the others leaves 2 of every 4 frames
        "720p-bframes": write_h264(folder / "720p-bframes.mp4", scene, seconds=4, fps=30, keyframe_s=1.0, bframes=3),
    }


def _camera(path: Path, **values: Any) -> CameraSource:
    return CameraSource(CameraSettings(id="cam", kind="file", path=path, speed=0, gating=NO_GATE, **values))


def _spacing(frames: list[Frame]) -> list[float]:
    return [round(b.ts - a.ts, 3) for a, b in itertools.pairwise(frames)]


# -- the mode each stream gets, and the rate it delivers --------------------------------------------------------
async def test_keyframes_every_second_at_max_fps_1_decode_only_the_keyframes(clips: dict[str, Path]) -> None:
    """max_fps 1 is at the keyframe rate: after learning the interval (3 keyframes), only keyframes are decoded,
    and still one frame per second of video arrives, a second apart."""
    camera = _camera(clips["720p-gop1"], max_fps=1)
    frames = await _collect(camera)
    health = camera.health()
    assert health.decoder == "pyav-keyframes"
    assert health.keyframe_interval_s == pytest.approx(1.0, abs=0.01)
    assert len(frames) == 8 and set(_spacing(frames)) == {1.0}
    # 3 seconds of learning at 30 frames, then one keyframe a second: far fewer than the 240 frames of the clip
    assert health.frames_read <= 3 * 30 + 5, health
    assert health.to_json()["decoder"] == "pyav-keyframes"


async def test_keyframes_every_two_seconds_at_max_fps_1_decode_each_gop_up_to_its_last_due_frame(
        clips: dict[str, Path]) -> None:
    """Keyframes are rarer than max_fps needs: keyframe-only decoding would halve the rate, so it is not chosen;
    but once the interval is known, a GOP is decoded only up to its last due frame (here 1 s of its 2)."""
    camera = _camera(clips["720p-gop2"], max_fps=1)
    frames = await _collect(camera)
    health = camera.health()
    assert health.decoder == "pyav-nonref"
    assert health.keyframe_interval_s == pytest.approx(2.0, abs=0.01)
    assert len(frames) == 8 and set(_spacing(frames)) == {1.0}
    # 4 s of learning (120 frames), then 31 of each GOP's 60 frames: 182 at most, instead of 240
    assert health.frames_read <= 120 + 2 * 31, health


async def test_max_fps_above_the_keyframe_rate_decodes_half_of_each_gop(clips: dict[str, Path]) -> None:
    """max_fps 2 (the default) with keyframes every second: frames at 0 and 0.5 s of each GOP are due, so the
    second half of each GOP is never decoded; the rate is kept."""
    camera = _camera(clips["720p-gop1"], max_fps=2)
    frames = await _collect(camera)
    health = camera.health()
    assert health.decoder == "pyav-nonref"
    assert len(frames) == 16 and set(_spacing(frames)) == {0.5}
    assert health.frames_read <= 60 + 6 * 16, health  # 2 s of learning, then 16 of each GOP's 30 frames


async def test_keyframes_every_two_seconds_at_max_fps_half_decode_only_the_keyframes(clips: dict[str, Path]) -> None:
    camera = _camera(clips["720p-gop2"], max_fps=0.5)
    frames = await _collect(camera)
    assert camera.health().decoder == "pyav-keyframes"
    assert len(frames) == 4 and set(_spacing(frames)) == {2.0}


async def test_a_rate_the_reference_frames_cannot_give_decodes_every_frame(clips: dict[str, Path]) -> None:
    """Non-reference B-frames skipped leave a frame every 1/15 s at best: max_fps 20 needs them all back."""
    fast = _camera(clips["720p-bframes"], max_fps=20)
    frames = await _collect(fast)
    assert fast.health().decoder == "pyav-all"
    assert len(frames) >= 20 * 4 * 0.9, len(frames)
    slow = _camera(clips["720p-bframes"], max_fps=10)  # the reference frames alone are enough for 10 a second
    frames = await _collect(slow)
    assert slow.health().decoder == "pyav-nonref"
    assert slow.health().frames_read < 4 * 30 * 0.7, "skipping non-reference frames decoded fewer frames"
    # 10 a second on average; each one the first reference frame at or after its due time
    assert len(frames) == 40 and max(_spacing(frames)) < 0.15


async def test_opencv_decoder_reads_every_frame_at_the_same_rate(clips: dict[str, Path]) -> None:
    camera = _camera(clips["720p-gop1"], max_fps=1, decoder="opencv")
    frames = await _collect(camera)
    assert camera.health().decoder == "opencv" and camera.health().frames_read == 240
    assert len(frames) == 8 and set(_spacing(frames)) == {1.0}


async def test_1080p_keyframes_every_second_decode_only_keyframes(tmp_path: Path) -> None:
    scene = Scene(width=1920, height=1080, seed=6, moving=moving_square(1920, 1080))
    clip = write_h264(tmp_path / "1080p.mp4", scene, seconds=5, fps=30, keyframe_s=1.0)
    camera = _camera(clip, max_fps=1, longest_side=640)
    frames = await _collect(camera)
    assert camera.health().decoder == "pyav-keyframes"
    assert len(frames) == 5 and (frames[0].width, frames[0].height) == (640, 360)


async def test_paced_playback_of_keyframes_follows_the_file_clock(clips: dict[str, Path]) -> None:
    """At speed 1 the frames come at the media's pace, keyframe-only or not."""
    camera = CameraSource(CameraSettings(id="cam", kind="file", path=clips["720p-gop1"], speed=4, max_fps=1,
                                         gating=NO_GATE))
    frames = await _collect(camera)
    assert len(frames) == 8
    took = frames[-1].ts - frames[0].ts
    assert took == pytest.approx(7 / 4, abs=0.5), took


async def test_looping_a_file_learns_again_and_keeps_its_clock(clips: dict[str, Path]) -> None:
    camera = CameraSource(CameraSettings(id="cam", kind="file", path=clips["720p-gop1"], speed=0, loop=True,
                                         max_fps=1, gating=NO_GATE))
    frames = await _collect(camera, until=lambda got: len(got) >= 20)
    assert set(_spacing(frames[:20])) == {1.0}
    assert camera.health().decoder == "pyav-keyframes"


async def test_keyframes_further_apart_than_the_read_timeout_are_not_silence(tmp_path: Path) -> None:
    """Keyframe-only at keyframes every 3 s (1.5 s of wall time at speed 2) with read_timeout_s 1: between two
    keyframes no frame comes, yet the camera is alive; it must not show offline (its zone would go blind)."""
    clip = write_h264(tmp_path / "gop3.mp4", Scene(width=320, height=240, seed=9, moving=moving_square(320, 240)),
                      seconds=15, fps=10, keyframe_s=3.0)
    camera = CameraSource(CameraSettings(id="cam", kind="file", path=clip, speed=2, max_fps=0.3, gating=NO_GATE,
                                         reconnect={"read_timeout_s": 1.0}))
    states: list[str] = []

    async def watch() -> None:
        await _wait_for(lambda: camera.health().decoder == "pyav-keyframes", 20, "keyframe-only")
        while camera.frames_emitted < 5:  # the last keyframe's frame; the file's end closes the camera after
            states.append(camera.health().state)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    frames = await _collect(camera)
    await watcher
    assert len(frames) == 5 and len(states) > 40
    assert set(states) == {"online"}, f"offline in {states.count('offline')} of {len(states)} looks"


# -- the same contracts as the OpenCV path --------------------------------------------------------------------
async def test_a_corrupt_file_is_a_sensor_error_naming_the_camera(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(2000))
    camera = CameraSource(CameraSettings(id="yard", kind="file", path=broken))
    with pytest.raises(SensorError, match=r"camera 'yard'.*broken\.mp4"):
        await _collect(camera)
    assert camera.health().state == "offline" and camera.health().last_error


async def test_a_stream_that_grows_over_the_pixel_budget_is_refused_at_its_first_large_frame(tmp_path: Path) -> None:
    """64 x 64 (within 4096 pixels) then 128 x 128 in one MPEG-TS: the frames are measured on the PyAV path too."""
    parts = []
    for side in (64, 128):
        part = write_h264(tmp_path / f"{side}.mp4", Scene(width=side, height=side, seed=side), seconds=2, fps=10)
        ts = tmp_path / f"{side}.ts"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(part), "-c", "copy", str(ts)],
                       check=True)
        parts.append(ts.read_bytes())
    joined = tmp_path / "grows.ts"
    joined.write_bytes(b"".join(parts))
    camera = CameraSource(CameraSettings(id="porch", kind="file", path=joined, speed=0, max_fps=10,
                                         max_pixels=64 * 64, gating=NO_GATE))
    frames: list[Frame] = []

    async def keep(observation: Any) -> None:
        frames.append(observation)

    with pytest.raises(SensorError, match=r"128 x 128 pixels, over cameras.max_pixels=4096"):
        await camera.run(keep)
    assert frames and all(frame.width == 64 for frame in frames)
    assert camera.health().bad_input == 1


# -- what the daemon says about it ---------------------------------------------------------------------------
@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(responder=responder()) as running:
        yield running


def test_the_daemon_shows_each_cameras_decoder_in_its_log_readyz_and_metrics(
        tmp_path: Path, clips: dict[str, Path], server: ScriptedOpenAIServer) -> None:
    """Two cameras on the same H.264 file (keyframes every second) at max_fps 1: the one left to `auto` runs
    keyframe-only, the one set to `opencv` decodes every frame; the log, /readyz and /metrics say which."""
    rig = Rig(tmp_path, server.base_url, sources=[
        table("[[cameras]]", id="hall", kind="file", path=str(clips["720p-gop1"]), loop=True, max_fps=1),
        table("[[cameras]]", id="porch", kind="file", path=str(clips["720p-gop1"]), loop=True, max_fps=1,
              decoder="opencv")])
    with Daemon(rig.write(), tmp_path) as daemon:
        assert daemon.wait_log("camera online", source="hall")[0]["decoder"] == "pyav-nonref"
        assert daemon.wait_log("camera online", source="porch")[0]["decoder"] == "opencv"
        switched = daemon.wait_log("camera decoding", source="hall", decoder="pyav-keyframes")[0]
        assert switched["keyframe_interval_s"] == pytest.approx(1.0, abs=0.01)
        _status, ready = daemon.json("/readyz")
        sources = ready["checks"]["sources"]["detail"]
        assert sources["hall"].startswith("online; decoder pyav-keyframes (keyframes every 1.00 s)"), sources
        assert sources["porch"] == "online; decoder opencv", sources
        wait_until(lambda: metric(daemon, "monitor_camera_decoder", source="hall", mode="pyav-keyframes") == 1,
                   what="the keyframe mode on /metrics")
        assert metric(daemon, "monitor_camera_decoder", source="hall", mode="pyav-nonref") == 0
        assert metric(daemon, "monitor_camera_decoder", source="porch", mode="opencv") == 1
        stops_cleanly(daemon)


# -- through the RTSP relay -----------------------------------------------------------------------------------
async def test_rtsp_keyframes_every_second_run_keyframe_only_and_reconnect(tmp_path: Path) -> None:
    """A live H.264 stream with a keyframe every second (10 fps, GOP 10) at max_fps 1: learned, keyframe-only,
    about a frame per second; the pusher stops (offline), starts again (online, learned again)."""
    reason = rtsp_missing()
    if reason is not None:
        pytest.skip(reason)
    clip = write_video(tmp_path / "clip.mp4", Scene(width=320, height=240, seed=8, moving=moving_square(320, 240)),
                       seconds=4, fps=10)
    with RtspRelay(clip, gop=10) as relay:
        camera = CameraSource(CameraSettings(
            id="door", kind="url", url=relay.url, capture_options="rtsp_transport;udp", max_fps=1, gating=NO_GATE,
            reconnect={"initial_s": 0.2, "max_s": 1.0, "open_timeout_s": 5, "read_timeout_s": 2}))
        frames: list[Frame] = []

        async def emit(observation: Any) -> None:
            frames.append(observation)

        task = asyncio.create_task(camera.run(emit))
        try:
            await _wait_for(lambda: camera.health().decoder == "pyav-keyframes", 30, "keyframe-only over RTSP")
            assert camera.health().keyframe_interval_s == pytest.approx(1.0, abs=0.05)
            start = len(frames)
            await _wait_for(lambda: len(frames) >= start + 4, 20, "4 more frames")
            gaps = _spacing(frames[start:])
            assert all(0.5 <= gap <= 1.6 for gap in gaps), gaps  # a frame per keyframe, each taken
            relay.stop_pusher()
            await _wait_for(lambda: camera.health().state == "offline", 20, "offline")
            count = len(frames)
            relay.start_pusher()
            await _wait_for(lambda: len(frames) >= count + 3, 30, "streaming again")
            assert camera.health().state == "online" and camera.health().reconnects >= 1
            await _wait_for(lambda: camera.health().decoder == "pyav-keyframes", 30, "keyframe-only again")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# -- the plan, on media times alone -----------------------------------------------------------------------------
def test_plan_learns_the_keyframe_interval_from_three_keyframes() -> None:
    plan = DecodePlan(max_fps=1)
    plan.keyframe(0.0)
    plan.keyframe(1.0)
    assert plan.keyframe_interval_s is None and plan.choose() == "nonref"
    plan.keyframe(2.0)
    assert plan.keyframe_interval_s == 1.0 and plan.choose() == "keyframes"


def test_plan_leaves_keyframes_when_the_camera_stretches_its_gop() -> None:
    """A "smart" codec that lengthens its GOP over a static scene: keyframes alone would miss max_fps."""
    plan = DecodePlan(max_fps=1)
    for t in (0.0, 1.0, 2.0, 3.0):
        plan.keyframe(t)
    assert plan.choose() == "keyframes"
    plan.keyframe(7.0)
    assert plan.choose() == "nonref"


def test_plan_decodes_everything_when_the_reference_frames_are_too_far_apart() -> None:
    plan = DecodePlan(max_fps=20)  # a frame every 0.05 s
    plan.keyframe(0.0)
    plan.frame(0.0)
    assert plan.choose() == "nonref"
    plan.frame(1 / 15)  # what skipping non-reference frames left: 1/15 s apart
    assert plan.choose() == "all"
    plan.frame(3.0)
    assert plan.choose() == "all", "it stays: the stream's structure does not change"


def test_plan_carries_what_it_learned_over_a_restarted_clock_until_the_stream_says_otherwise() -> None:
    """A reconnect or a loop restarts the timestamps: the interval learned before stands (no relearning at
    every loop), but one longer interval after the restart is believed at once."""
    plan = DecodePlan(max_fps=1)
    for t in (100.0, 101.0, 102.0):
        plan.keyframe(t)
    plan.keyframe(0.0)
    assert plan.keyframe_interval_s == 1.0 and plan.choose() == "keyframes"
    plan.keyframe(4.0)
    assert plan.keyframe_interval_s == 4.0 and plan.choose() == "nonref"


def test_capture_options_are_read_as_opencv_writes_them() -> None:
    assert parse_options("rtsp_transport;udp|stimeout;5000000") == {"rtsp_transport": "udp", "stimeout": "5000000"}
    assert parse_options(None) == {}


def test_decoder_pyav_is_for_files_and_streams_only() -> None:
    with pytest.raises(ValidationError, match="decoder 'pyav' reads files and streams, not camera kind 'device'"):
        CameraSettings(id="cam", kind="device", device=0, decoder="pyav")
    assert not CameraSettings(id="cam", kind="device", device=0).uses_pyav  # auto: OpenCV for devices
    assert CameraSettings(id="cam", kind="url", url="rtsp://cam/1").uses_pyav
    before_open = {decoder: CameraSource(CameraSettings(id="cam", kind="url", url="rtsp://cam/1", decoder=decoder))
                   .health().decoder for decoder in ("auto", "opencv", "pyav")}
    assert before_open == {"auto": "pyav-nonref", "opencv": "opencv", "pyav": "pyav-nonref"}
    assert set(before_open.values()) <= set(DECODE_MODES)
