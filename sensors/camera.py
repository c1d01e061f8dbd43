"""Camera sources: USB devices, video files, RTSP/HTTP streams and image folders.

Devices and folders are read through OpenCV; files and streams through PyAV, which decodes only the
frames `max_fps` needs (`sensors.camera_av`), or through OpenCV with `decoder = "opencv"`. Both are
readers (`_Reader`) inside the same source: reconnects, health, sampling and the gate are shared.

One capture thread per camera reads frames (OpenCV blocks), samples them at
`max_fps`, scores change on a small grey image, and for the frames the gate
passes downscales to `longest_side`, runs the optional pose pre-filter and
encodes JPEG. Frames reach the event loop through a bounded buffer whose drop
policy is named: live sources (devices, URLs, files and folders played at a
speed) drop the oldest frame and count it; a file or folder read as fast as
possible (speed 0) blocks instead, because nothing is lost by waiting.

Clocks: live sources sample by wall time and stamp frames with `time.time()`.
Files and folders sample by media time (frame timestamps with PyAV, frame index / fps with
OpenCV), so a replay at any speed sees the same frames; at speed 0 frames are stamped with the start time
plus media time, at other speeds with wall time. Live sources that fail to
open or stop delivering go `offline` and are reopened with exponential backoff
and jitter until they come back `online`. A file or folder that cannot be read
(missing, corrupt, no frames) makes `run` raise `SensorError` with the camera
`offline` and its `last_error` set; the pipeline restarts it with backoff, and
`run` may be called again. An image of a folder that cannot be decoded (empty,
corrupt, unreadable) is skipped and counted in `bad_input`.

Decoding is bounded by `max_pixels`: a folder's image is measured from its
header before it is read whole or decoded (`sensors.image_header`), and one
over the budget, or of a format the header reader does not know, is skipped
and counted like a corrupt one. A video file or stream whose frames are over
the budget is refused at open (and any frame that comes out larger after all,
at once): counted in `bad_input`, then handled like a source that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from monitor.core.errors import SensorError
from monitor.core.text import redact_credentials
from sensors.camera_config import CameraSettings
from sensors.capture import CaptureLifecycle, CaptureRun, OpenFailed, Outcome, State
from sensors.gating import ChangeGate
from sensors.image_header import ImageRefused, check_image, max_file_bytes
from sensors.pose import PosePrefilter, create_pose_prefilter
from sensors.types import Emit, Frame

Image = npt.NDArray[Any]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
CAPTURE_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
MAX_PIXELS_SETTING = "cameras.max_pixels"
_DEFAULT_FILE_FPS = 25.0
# OpenCV reads the FFmpeg options from the environment while opening: one opener at a time.
_ENV_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class CameraHealth:
    """A camera's health at one moment, for logs, status topics and metrics."""

    source: str
    state: State
    last_frame_age_s: float | None
    fps: float
    frames_read: int
    frames_sampled: int
    frames_emitted: int
    frames_dropped: int
    reconnects: int
    gate: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    ended: bool = False
    bad_input: int = 0
    decoder: str = "opencv"
    keyframe_interval_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "state": self.state,
            "last_frame_age_s": None if self.last_frame_age_s is None else round(self.last_frame_age_s, 3),
            "fps": round(self.fps, 2), "frames_read": self.frames_read, "frames_sampled": self.frames_sampled,
            "frames_emitted": self.frames_emitted, "frames_dropped": self.frames_dropped,
            "reconnects": self.reconnects, "gate": dict(self.gate), "last_error": self.last_error,
            "ended": self.ended, "bad_input": self.bad_input, "decoder": self.decoder,
            "keyframe_interval_s": None if self.keyframe_interval_s is None else round(self.keyframe_interval_s, 3),
        }


class _Reader(Protocol):
    """One opened source. `fps` is the media frame rate (None for live sources).

    `grab` reads (and decodes, as far as the reader must) the next frame; `retrieve` converts the
    grabbed frame to a BGR image, only for the frames that are sampled. `mode` is what the camera
    decodes with (`DECODE_MODES`); `slack_s` how early a frame may stand in for a due sample.
    """

    fps: float | None

    @property
    def mode(self) -> str: ...

    @property
    def slack_s(self) -> float: ...

    def grab(self) -> bool: ...

    def retrieve(self) -> Image | None: ...

    def media_time(self, index: int) -> float | None: ...

    def due(self, after_s: float) -> None: ...

    def close(self) -> None: ...

    @property
    def keyframe_interval_s(self) -> float | None: ...

    @property
    def error(self) -> str | None: ...


class _CaptureReader:
    mode = "opencv"
    slack_s = 1e-6
    keyframe_interval_s = None
    error = None

    def __init__(self, capture: cv2.VideoCapture, fps: float | None, max_pixels: int) -> None:
        self._capture = capture
        self.fps = fps
        self._max_pixels = max_pixels
        self._image: Image | None = None

    def grab(self) -> bool:
        # grab() demuxes and decodes; the colour conversion waits for retrieve(), for sampled frames only.
        return bool(self._capture.grab())

    def retrieve(self) -> Image | None:
        # Decoded into the previous frame's array: the camera keeps only a downscaled copy, so the
        # full-size buffer is free again, and a 3-6 MB allocation per frame is saved.
        ok, image = self._capture.retrieve(self._image)
        if not ok or image is None:
            return None
        height, width = image.shape[:2]
        if width * height > self._max_pixels:  # the stream changed its size since it was opened
            raise ImageRefused(f"a frame of {width} x {height} pixels is over {MAX_PIXELS_SETTING}={self._max_pixels}")
        self._image = image
        return image

    def media_time(self, index: int) -> float | None:
        return index / self.fps if self.fps else None

    def due(self, after_s: float) -> None:
        return None  # OpenCV decodes every frame whatever comes next

    def close(self) -> None:
        self._capture.release()


class _FolderReader:
    mode = "opencv"
    slack_s = 1e-6
    keyframe_interval_s = None
    error = None

    def __init__(self, paths: list[Path], fps: float, on_bad: Callable[[Path, str], None], max_pixels: int) -> None:
        self._paths = deque(paths)
        self.fps: float | None = fps
        self._on_bad = on_bad
        self._max_pixels = max_pixels
        self._grabbed = False

    def grab(self) -> bool:
        if self._grabbed:  # the previous image was not sampled: passed over unread
            self._paths.popleft()
        self._grabbed = bool(self._paths)
        return self._grabbed

    def retrieve(self) -> Image | None:
        """The grabbed image, or the next readable one: a bad image does not take a frame's slot."""
        self._grabbed = False
        while self._paths:
            path = self._paths.popleft()
            image, problem = _read_image(path, self._max_pixels)
            if image is not None:
                return image
            self._on_bad(path, problem)
        return None

    def media_time(self, index: int) -> float | None:
        return index / self.fps if self.fps else None

    def due(self, after_s: float) -> None:
        return None

    def close(self) -> None:
        self._paths.clear()


def _read_image(path: Path, max_pixels: int) -> tuple[Image | None, str]:
    """An image file decoded, or None and why not: one bad file of a folder must not stop the camera.

    Decoded only if its header states a size within `max_pixels`: a small file can hold a huge image.
    """
    limit = max_file_bytes(max_pixels)
    try:
        raw = _read_regular(path, limit + 1)  # bounded: a file still growing or far too large is not read whole
    except OSError as exc:  # deleted meanwhile, no permission, a folder or a pipe named like an image
        return None, f"cannot read: {exc.strerror or exc}"
    if not raw:
        return None, "empty file"  # imdecode asserts on an empty buffer (cv2.error), so never hand it one
    if len(raw) > limit:
        return None, f"file larger than {limit} bytes, more than an image of {MAX_PIXELS_SETTING}={max_pixels} needs"
    try:
        check_image(raw, max_pixels, setting=MAX_PIXELS_SETTING)
    except ImageRefused as exc:
        return None, str(exc)
    data = np.frombuffer(raw, dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        return None, f"OpenCV cannot decode it: {str(exc).strip().splitlines()[-1]}"
    return (image, "") if image is not None else (None, "not an image OpenCV can decode")


def _read_regular(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file. Opened without blocking: a FIFO named like an image would
    otherwise hold the camera's thread until something writes to it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks: list[bytes] = []
        while limit > 0 and (chunk := os.read(fd, min(limit, 1 << 20))):
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class _End:
    """Marks the end of a camera's frames in its buffer."""


_END = _End()


class _FrameBuffer:
    """A bounded hand-off from the capture thread to the event loop.

    `put` drops the oldest frame when full (and says so), or with `block` waits
    for room. `notify` is called after every put, from the capture thread.
    """

    def __init__(self, size: int, *, block: bool) -> None:
        self.size = size
        self.block = block
        self._items: deque[Frame | _End] = deque()
        self._room = threading.Condition()
        self.notify: Callable[[], None] = lambda: None

    def put(self, frame: Frame, stop: threading.Event) -> int:
        """Add a frame; returns how many frames were dropped to make room."""
        dropped = 0
        with self._room:
            if self.block:
                while len(self._items) >= self.size and not stop.is_set():
                    self._room.wait(0.1)
            while len(self._items) >= self.size:
                self._items.popleft()
                dropped += 1
            was_empty = not self._items
            self._items.append(frame)
        if was_empty:  # the reader drains until empty before it waits: only a first frame must wake it
            self.notify()
        return dropped

    def close(self) -> None:
        with self._room:
            self._items.append(_END)
        self.notify()

    def take(self) -> Frame | _End | None:
        with self._room:
            if not self._items:
                return None
            item = self._items.popleft()
            self._room.notify_all()
            return item

    def wake(self) -> None:
        with self._room:
            self._room.notify_all()


class _Filming(CaptureRun):
    """One run of a camera's capture thread: the buffer its frames (and its end) go to."""

    def __init__(self, buffer: _FrameBuffer) -> None:
        super().__init__()
        self.buffer = buffer


class CameraSource(CaptureLifecycle[_Reader, _Filming]):
    """An `ObservationSource` of camera `Frame`s; see the module docstring for clocks and drop policy."""

    noun = "camera"

    def __init__(self, settings: CameraSettings, *, pose: PosePrefilter | None = None) -> None:
        super().__init__(settings.id, settings.reconnect, logger="sensors.camera")
        self.settings = settings
        self.gate = ChangeGate(settings.gating)
        if pose is None and settings.pose_prefilter:
            pose = create_pose_prefilter()
        self._pose = pose
        self._last_frame_at: float | None = None
        # Keyframe-only decoding yields a frame per keyframe interval, but packets keep arriving, and a paced
        # file waits on purpose: the source is alive until this moment (monotonic) even without a frame.
        self._alive_until: float | None = None
        self._fps = 0.0
        self._fps_window: tuple[float, int] = (time.monotonic(), 0)
        self.frames_read = 0
        self.frames_sampled = 0
        self.frames_emitted = 0
        self.frames_dropped = 0
        self.bad_images = 0
        self._media_offset = 0.0
        # What the frames are decoded with now (DECODE_MODES), and the keyframe interval PyAV learned.
        self.decode_mode = "pyav-nonref" if settings.uses_pyav else "opencv"
        self.keyframe_interval_s: float | None = None
        self._plan: Any = None  # sensors.camera_av.DecodePlan, kept across reopenings

    # -- the event-loop side --------------------------------------------------------------------
    async def run(self, emit: Emit) -> None:
        """Capture in a thread and emit the frames the gate passes, until the source ends or is cancelled.

        Raises SensorError when a file or folder cannot be read; may be called again after that.
        """
        loop = asyncio.get_running_loop()
        available = asyncio.Event()
        # A fresh start after a failed run: a new buffer, stop flag and error, all the new thread's own.
        filming = _Filming(_FrameBuffer(self.settings.queue_size, block=not self.settings.live))

        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
                loop.call_soon_threadsafe(available.set)

        filming.buffer.notify = notify
        self._start_capture(filming)
        try:
            while True:
                available.clear()
                while (item := filming.buffer.take()) is not None:
                    if isinstance(item, _End):
                        if filming.error is not None:
                            raise filming.error
                        return
                    await emit(item)
                    self.frames_emitted += 1
                await available.wait()
        finally:
            await self._stop_capture()

    def health(self) -> CameraHealth:
        """A snapshot of this camera's health; safe to call from the event loop at any time."""
        now = time.monotonic()
        age = None if self._last_frame_at is None else now - self._last_frame_at
        state = self._state
        alive_age = None if self._alive_until is None else now - self._alive_until
        silent = age if alive_age is None or age is None else min(age, alive_age)
        if state == "online" and silent is not None and silent > self.settings.reconnect.read_timeout_s:
            state = "offline"  # the capture thread is still blocked in a read that will time out
        fps = self._fps
        since, count = self._fps_window
        if fps == 0.0 and self._last_frame_at is not None and self._last_frame_at - since >= 0.2:
            fps = (self.frames_read - count) / (self._last_frame_at - since)  # the first second online
        keyframes = self.keyframe_interval_s if self.decode_mode == "pyav-keyframes" else None
        if age is None or age > 2.0 + (keyframes or 0.0):  # keyframe-only: a frame per keyframe interval
            fps = 0.0
        return CameraHealth(
            source=self.id, state=state, last_frame_age_s=age, fps=fps,
            frames_read=self.frames_read, frames_sampled=self.frames_sampled,
            frames_emitted=self.frames_emitted, frames_dropped=self.frames_dropped,
            reconnects=self.reconnects, gate=dict(self.gate.counts), last_error=self._last_error,
            ended=self.ended, bad_input=self.bad_images, decoder=self.decode_mode,
            keyframe_interval_s=self.keyframe_interval_s,
        )

    # -- the capture thread ---------------------------------------------------------------------------
    def _capture_ended(self, run: _Filming) -> None:
        if self._pose is not None and run.error is None:
            self._pose.close()  # after an error the pipeline runs the camera again, pose and all
        run.buffer.close()

    def _unblock(self, run: _Filming) -> None:
        run.buffer.wake()  # a capture thread waiting for room in a full buffer

    def _lost(self) -> str:
        return f"camera '{self.id}': stream stopped delivering frames"

    def _close_input(self, opened: _Reader) -> None:
        opened.close()

    def _state_changed(self, state: State) -> None:
        self._fps = 0.0
        if state == "online":
            self._fps_window = (time.monotonic(), self.frames_read)

    def _online_fields(self) -> dict[str, Any]:
        return {"kind": self.settings.kind, "decoder": self.decode_mode, "decoder_setting": self.settings.decoder}

    def _open(self) -> _Reader:
        """A frame size over the pixel budget is bad input: a file fails, a live source retries."""
        try:
            return self._open_reader()
        except ImageRefused as exc:
            self._refused(exc)
            raise OpenFailed(str(exc)) from exc

    def _pump(self, reader: _Reader, run: _Filming) -> Outcome:
        """Read until the stream ends or fails; 'delivered' means it failed after delivering frames."""
        try:
            return self._read_frames(reader, run)
        except ImageRefused as exc:
            self._refused(exc)
            return "failed"

    def _refused(self, exc: ImageRefused) -> None:
        """Count frames over the pixel budget as bad input; a video file cannot get better by retrying."""
        self.bad_images += 1
        self._log.warning("frames over the pixel budget refused", error=str(exc), max_pixels=self.settings.max_pixels,
                          bad_total=self.bad_images)
        if self.settings.kind == "file":
            raise SensorError(f"camera '{self.id}': {exc}") from exc

    def _open_reader(self) -> _Reader:
        settings = self.settings
        if settings.kind == "folder":
            return self._open_folder()
        if settings.uses_pyav:
            return self._open_av()
        if settings.kind == "file":
            assert settings.path is not None  # validated by CameraSettings
            if not settings.path.is_file():
                raise SensorError(f"camera '{self.id}': video file {settings.path} not found")
            capture = cv2.VideoCapture(str(settings.path), cv2.CAP_FFMPEG, _decode_params(settings))
            if not capture.isOpened():
                raise SensorError(f"camera '{self.id}': OpenCV cannot open video file {settings.path}")
            self._measure(capture, f"video file {settings.path}")
            return _CaptureReader(capture, _file_fps(capture.get(cv2.CAP_PROP_FPS)), settings.max_pixels)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(settings.reconnect.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(settings.reconnect.read_timeout_s * 1000)]
        if settings.kind == "device":
            assert settings.device is not None
            capture = cv2.VideoCapture(settings.device, cv2.CAP_ANY, params)
            where = f"video device {settings.device}"
        else:
            assert settings.url is not None
            capture = _open_url(settings.url, settings.capture_options, params + _decode_params(settings))
            where = redact_credentials(settings.url)
        if not capture.isOpened():
            capture.release()
            raise OpenFailed(f"camera '{self.id}': cannot open {where}")
        if settings.kind == "device":
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        self._measure(capture, where)
        return _CaptureReader(capture, None, settings.max_pixels)

    def _open_av(self) -> _Reader:
        """A file or stream through PyAV; failures are classified as OpenCV's are (a file fails, a stream retries)."""
        from sensors.camera_av import AvReader, DecodePlan, parse_options  # loaded by the cameras that use it

        settings = self.settings
        if self._plan is None:
            self._plan = DecodePlan(settings.max_fps)
        common: dict[str, Any] = dict(
            max_pixels=settings.max_pixels, longest_side=settings.longest_side, threads=settings.decode_threads,
            max_fps=settings.max_fps, plan=self._plan, on_packet=self._packet_arrived)
        if settings.kind == "file":
            assert settings.path is not None  # validated by CameraSettings
            if not settings.path.is_file():
                raise SensorError(f"camera '{self.id}': video file {settings.path} not found")
            where = f"camera '{self.id}': video file {settings.path}"
            try:
                return AvReader(str(settings.path), live=False, where=where, **common)
            except (av_errors(), OSError) as exc:
                raise SensorError(f"{where}: PyAV cannot open it: {exc}") from exc
        assert settings.url is not None
        url = redact_credentials(settings.url)
        where = f"camera '{self.id}': {url}"
        reconnect = settings.reconnect
        options = parse_options(settings.capture_options)
        if settings.url.startswith(("rtsp:", "rtsps:")):
            options.setdefault("rtsp_transport", "tcp")  # as OpenCV asks: no frames torn by lost UDP packets
        try:
            return AvReader(settings.url, live=True, where=where, options=options,
                            timeout=(reconnect.open_timeout_s, reconnect.read_timeout_s), **common)
        except (av_errors(), OSError) as exc:
            raise OpenFailed(f"camera '{self.id}': cannot open {url}: {redact_credentials(str(exc))}") from exc

    def _packet_arrived(self) -> None:
        self._alive_until = time.monotonic()

    def _measure(self, capture: cv2.VideoCapture, where: str) -> None:
        """Refuse (and release) a capture whose frames are over the budget, before its first frame is read."""
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > self.settings.max_pixels:
            capture.release()
            raise ImageRefused(f"camera '{self.id}': {where} has frames of {width} x {height} pixels, over "
                               f"{MAX_PIXELS_SETTING}={self.settings.max_pixels}")

    def _open_folder(self) -> _Reader:
        folder = self.settings.path
        assert folder is not None
        if not folder.is_dir():
            raise SensorError(f"camera '{self.id}': image folder {folder} not found")
        paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not paths:
            raise SensorError(f"camera '{self.id}': no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")

        def bad(path: Path, problem: str) -> None:
            self.bad_images += 1
            self._log.warning("unreadable image skipped", path=str(path), problem=problem, bad_total=self.bad_images)

        return _FolderReader(paths, self.settings.folder_fps, bad, self.settings.max_pixels)

    def _read_frames(self, reader: _Reader, run: _Filming) -> Outcome:
        settings = self.settings
        period = 1.0 / settings.max_fps
        opened_at = time.monotonic()
        next_sample: float | None = None
        index = 0
        while not run.stop.is_set():
            grabbed = reader.grab()
            if run.stop.is_set():  # a read blocked past the stop: its frame (or failure) is not this run's any more
                return "stopped"
            if not grabbed:
                return self._stream_end(reader, index)
            media_t = reader.media_time(index)
            if media_t is not None and settings.speed > 0:
                wait = opened_at + media_t / settings.speed - time.monotonic()
                if wait > 0:
                    self._alive_until = time.monotonic() + wait  # waiting for the media clock is not silence
                    if run.stop.wait(wait):
                        return "stopped"
            index += 1
            self._track_mode(reader)
            self._count_read()
            sample_clock = self._media_offset + media_t if media_t is not None else time.monotonic()
            # A frame due within half the reader's frame spacing counts as on time: keyframes a second apart
            # must all be taken at max_fps 1, whatever the jitter of a live stream's arrival.
            if next_sample is not None and sample_clock < next_sample - min(reader.slack_s, period / 2):
                continue
            image = reader.retrieve()
            if image is None:
                continue
            # A grid of due times keeps the average rate exact; after a stall, start afresh.
            next_sample = sample_clock + period if next_sample is None else next_sample + period
            if next_sample <= sample_clock:
                next_sample = sample_clock + period
            reader.due(next_sample - sample_clock)
            self._sampled(image, self._timestamp(media_t), run)
        return "stopped"

    def _track_mode(self, reader: _Reader) -> None:
        """Note what the camera decodes with; a change is logged (learned from the stream, or a reopen)."""
        interval = reader.keyframe_interval_s
        if reader.mode == self.decode_mode and interval == self.keyframe_interval_s:
            return
        changed = reader.mode != self.decode_mode
        self.decode_mode, self.keyframe_interval_s = reader.mode, interval
        if changed:
            self._log.info("camera decoding", decoder=reader.mode, setting=self.settings.decoder,
                           max_fps=self.settings.max_fps,
                           keyframe_interval_s=None if interval is None else round(interval, 3))

    def _stream_end(self, reader: _Reader, index: int) -> Outcome:
        if self.settings.kind not in ("file", "folder"):  # a live source stopped delivering
            if reader.error:
                self._log.info("stream read failed", error=redact_credentials(reader.error))
            return "delivered" if index else "failed"
        if self.settings.loop and index > 0:
            self._media_offset += reader.media_time(index) or 0.0
            return "looped"
        if index == 0:  # a corrupt or empty file: not the end of a recording, a broken input
            raise SensorError(f"camera '{self.id}': no frame could be read from {self.settings.path}")
        self._log.info("camera reached the end", path=str(self.settings.path), frames=self.frames_read)
        return "ended"

    def _timestamp(self, media_t: float | None) -> float:
        if media_t is not None and self.settings.speed == 0:
            return self._started_at + self._media_offset + media_t
        return time.time()

    def _count_read(self) -> None:
        now = time.monotonic()
        self.frames_read += 1
        self._last_frame_at = now
        if self._state != "online":
            self._set_state("online")
        since, count = self._fps_window
        if now - since >= 1.0:
            self._fps = (self.frames_read - count) / (now - since)
            self._fps_window = (now, self.frames_read)

    def _sampled(self, image: Image, ts: float, run: _Filming) -> None:
        self.frames_sampled += 1
        # Downscaled first, once: the gate's grey image comes from the small frame for a fraction of
        # the cost of reading the full one, and a frame the gate passes needs the small frame anyway.
        small = downscale(image, self.settings.longest_side)
        if small is image:
            small = image.copy()  # the reader decodes the next frame into `image`
        decision = self.gate.decide(small, ts)
        if not decision.passed:
            return
        facts = self._pose.facts(small, ts) if self._pose is not None else ()
        # No JPEG here: the frame is encoded when the model is going to see it (keyframes), once.
        frame = Frame(source=self.id, ts=ts, image=small, width=small.shape[1], height=small.shape[0],
                      change=decision.score, facts=facts, jpeg_quality=self.settings.jpeg_quality,
                      thumbnail=decision.thumbnail)
        dropped = run.buffer.put(frame, run.stop)
        if dropped:
            self.frames_dropped += dropped
            self._log.info("frames dropped", reason="queue_full", dropped=dropped, total=self.frames_dropped)


def downscale(image: Image, longest_side: int) -> Image:
    """`image` with its longest side at most `longest_side` (area averaging; never upscales).

    Halving is OpenCV's fast area path; other ratios are five times slower per pixel. So the
    image is halved while it is at least twice too large, and a bilinear step of less than 2x
    finishes (as close to a plain area resize as halving twice is: about 50 dB PSNR).
    """
    height, width = image.shape[:2]
    while max(height, width) >= 2 * longest_side and min(height, width) >= 2:
        image = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        height, width = image.shape[:2]
    scale = longest_side / max(height, width)
    if scale >= 1.0:
        return np.asarray(image)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))


def encode_jpeg(image: Image, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SensorError(f"JPEG encoding failed for a {image.shape} image")
    return bytes(data.tobytes())


def _decode_params(settings: CameraSettings) -> list[int]:
    # FFmpeg decodes (and converts to BGR) on every core by default: for a camera read in its own
    # thread, one decoding thread costs the least CPU per frame, and several cameras use the cores.
    return [] if settings.decode_threads == 0 else [cv2.CAP_PROP_N_THREADS, settings.decode_threads]


def _open_url(url: str, options: str | None, params: list[int]) -> cv2.VideoCapture:
    if options is None:
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    with _ENV_LOCK:
        previous = os.environ.get(CAPTURE_OPTIONS_ENV)
        os.environ[CAPTURE_OPTIONS_ENV] = options
        try:
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if previous is None:
                os.environ.pop(CAPTURE_OPTIONS_ENV, None)
            else:
                os.environ[CAPTURE_OPTIONS_ENV] = previous


def av_errors() -> type[Exception]:
    """PyAV's error base class (PyAV imported only when a camera uses it)."""
    import av.error

    return av.error.FFmpegError


def _file_fps(value: float) -> float:
    return float(value) if 0 < value <= 1000 else _DEFAULT_FILE_FPS


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]
