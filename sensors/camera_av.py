"""The PyAV capture path: decode only the frames the change gate needs.

A camera sampled at `max_fps` 2 from a 30 fps stream keeps one frame in 15, yet OpenCV
decodes all 30, and decoding is what decides how many cameras a box can watch. FFmpeg's
decoder can skip frames before decoding them (`skip_frame`), which OpenCV does not expose;
PyAV does. `DecodePlan` picks, per stream, the cheapest skip mode whose frames still meet
`max_fps`, from what it learns while reading:

- `keyframes` (`NONKEY`): only keyframes are decoded, when the stream's keyframe interval is
  at most the sampling period (`max_fps` at or below the keyframe rate). The interval is the
  longest of the recent ones between keyframe packets, which the demuxer flags without
  decoding anything, so it is known after three keyframes (2 s at keyframes every 1 s).
- `nonref` (`NONREF`): frames no other frame refers to (most B-frames) are skipped, as long as
  the frames left are never further apart than the sampling period (one gap longer than it,
  and the stream is decoded whole from then on).
- `all` (`DEFAULT`): every frame is decoded; only sampled frames are converted to BGR.

A stream starts in `nonref` and moves as its facts arrive: a camera whose keyframes become
rarer (a "smart" codec stretching its GOP over a static scene) goes back from `keyframes`.
After leaving `keyframes`, packets are fed from the next keyframe on (the frames in between
refer to frames that were never decoded); `nonref` to `all` goes on at once (every
reference was decoded).

A sampled frame is converted once, by FFmpeg's scaler, straight to BGR at the camera's
`longest_side`: a 1080p frame is never converted at full size. Decoding uses FFmpeg's
threads (`thread_type` AUTO) up to the camera's `decode_threads`.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any, Literal

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from sensors.image_header import ImageRefused

Image = npt.NDArray[Any]
SkipMode = Literal["all", "nonref", "keyframes"]
# The decoder's skip_frame for each mode (FFmpeg's AVDiscard).
SkipFrame = Literal["DEFAULT", "NONREF", "NONKEY"]
SKIP_FRAME: dict[SkipMode, SkipFrame] = {"all": "DEFAULT", "nonref": "NONREF", "keyframes": "NONKEY"}
# Timestamps of RTP and of containers round: an interval of 1.0004 s still serves 1 frame per second.
_TOLERANCE = 0.02
_KEYFRAMES_TO_LEARN = 3  # two intervals: one could be the stream's first, cut short
_HISTORY = 8


class DecodePlan:
    """The cheapest skip mode whose frames meet `max_fps`, updated from the stream's keyframes and frames.

    Pure bookkeeping on media times (seconds), so it can be tested without a stream.
    """

    def __init__(self, max_fps: float) -> None:
        self.period = 1.0 / max_fps
        self.mode: SkipMode = "nonref"
        self._keys: deque[float] = deque(maxlen=_HISTORY + 1)
        self._carried: float | None = None  # learned before the stream restarted its clock (a reopen, a loop)
        self._last_frame: float | None = None
        self._gaps: deque[float] = deque(maxlen=_HISTORY)
        self._nonref_fails = False

    @property
    def keyframe_interval_s(self) -> float | None:
        """The longest recent interval between keyframes, once there are enough to tell.

        After a restart the interval learned before stands until new ones replace it, unless a new one is longer.
        """
        intervals = [b - a for a, b in itertools.pairwise(self._keys)]
        if len(intervals) >= _KEYFRAMES_TO_LEARN - 1:
            return max(intervals)
        if self._carried is None:
            return None
        return max([self._carried, *intervals])

    def keyframe(self, t: float) -> None:
        """A keyframe packet at media time `t` (seen by the demuxer, decoded or not)."""
        if self._keys and t <= self._keys[-1]:  # a stream restarted its clock (a reopen, a loop): learn afresh
            self._carried = self.keyframe_interval_s
            self._keys.clear()
        self._keys.append(t)

    def skipped(self) -> None:
        """Frames were left out on purpose since the last one: the next spacing says nothing of the stream."""
        self._last_frame = None

    def frame(self, t: float) -> None:
        """A decoded frame at media time `t`."""
        if self._last_frame is not None and t > self._last_frame and self.mode == "nonref":
            self._gaps.append(t - self._last_frame)
        self._last_frame = t

    def choose(self) -> SkipMode:
        """The mode to decode in from now on (and remember it)."""
        interval = self.keyframe_interval_s
        if interval is not None and interval <= self.period * (1 + _TOLERANCE):
            mode: SkipMode = "keyframes"
        elif self._nonref_fails:
            mode = "all"
        elif self.mode == "nonref" and self._gaps and self._gaps[-1] > self.period * (1 + _TOLERANCE):
            # The stream's structure: skipping its non-reference frames leaves holes longer than the period.
            self._nonref_fails = True
            mode = "all"
        else:
            mode = "nonref"
        if mode != self.mode:
            self._gaps.clear()
            self._last_frame = None
        self.mode = mode
        return mode


def parse_options(options: str | None) -> dict[str, str]:
    """FFmpeg options written as for OPENCV_FFMPEG_CAPTURE_OPTIONS ('key;value|key;value') as a dict."""
    if not options:
        return {}
    pairs = (item.split(";", 1) for item in options.split("|") if item.strip())
    return {key.strip(): value.strip() for key, value in (p if len(p) == 2 else (p[0], "") for p in pairs)}


class AvReader:
    """One opened file or stream, decoded by PyAV under a `DecodePlan`.

    `grab` decodes up to the next frame the plan lets through; `retrieve` converts it to BGR
    at `longest_side`. `media_time` is the frame's time since the first frame (files only).
    Raises `ImageRefused` for frames over `max_pixels`; `av` errors while opening are the caller's.
    """

    def __init__(self, target: str, *, live: bool, max_fps: float, max_pixels: int, longest_side: int,
                 threads: int, options: dict[str, str] | None = None,
                 timeout: tuple[float, float] | None = None, where: str = "", plan: DecodePlan | None = None,
                 on_packet: Callable[[], None] = lambda: None) -> None:
        # Metadata in another encoding than UTF-8 (a camera's title) must not make the stream unreadable.
        self._container: InputContainer = av.open(target, options=options or {}, timeout=timeout,
                                                  metadata_errors="replace")
        self._where = where or target
        try:
            if not self._container.streams.video:
                raise av.error.InvalidDataError(0, f"{self._where} has no video stream")
            self._stream: VideoStream = self._container.streams.video[0]
            self._max_pixels = max_pixels
            self._check_size(self._stream.codec_context.width, self._stream.codec_context.height)
        except BaseException:
            self._container.close()
            raise
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = threads
        self._live = live
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps: float | None = None if live or not rate else float(rate)
        self._spacing = 1.0 / float(rate) if rate else 1.0 / 30
        # A camera keeps its plan across reopenings: a looped file or a reconnected camera need not learn again.
        self.plan = plan or DecodePlan(max_fps)
        self._longest_side = longest_side
        self._need_key = True  # a stream may start mid-GOP; its first frames would refer to nothing
        self._opened_at = time.monotonic()
        self._first: float | None = None
        self._last: float | None = None
        self._end = 0.0  # where the last packet demuxed ends: the media's length, decoded or not
        self._shift = 0.0  # added to a file's timestamps after they started again
        base = self._stream.time_base
        self._time_base = float(base) if base else None  # a float: Fraction arithmetic per packet costs
        self._reformatter = VideoReformatter()  # one scaler context for the stream, not one per frame
        # Skipping the rest of a GOP (see `due`): stream times of the newest frame, keyframe and due sample.
        self._last_raw: float | None = None
        self._last_key_raw: float | None = None
        self._due_raw: float | None = None
        self._reorders = False  # B-frames: packets come in another order than frames; never skip a GOP's rest
        self._gap_broken = False
        self._frame: VideoFrame | None = None
        self._frames = self._decoded()
        self._on_packet = on_packet  # liveness: between keyframes no frame comes, but packets do
        self.skipped_packets = 0
        self.error: str | None = None
        self._apply(self.plan.mode)

    @property
    def mode(self) -> str:
        """What this camera decodes with, as health and metrics name it."""
        return f"pyav-{self.plan.mode}"

    @property
    def keyframe_interval_s(self) -> float | None:
        return self.plan.keyframe_interval_s

    @property
    def slack_s(self) -> float:
        """How early a frame may be taken for a due sample: half the spacing of the frames decoded."""
        interval = self.plan.keyframe_interval_s if self.plan.mode == "keyframes" else None
        return (interval or self._spacing) / 2

    def media_time(self, index: int) -> float | None:
        """The grabbed frame's media time (after the end: the media's length); None for live sources."""
        if self._live or self._first is None or self._last is None:
            return None
        if self._frame is None:
            return max(self._end, self._last + self._spacing) - self._first
        return self._last - self._first

    def grab(self) -> bool:
        self._frame = next(self._frames, None)
        return self._frame is not None

    def due(self, after_s: float) -> None:
        """The next sample is due `after_s` seconds after the frame just taken.

        When that falls at or after the next keyframe, nothing before the keyframe will be sampled, so the
        rest of the GOP is not decoded: at max_fps 2 and keyframes every second, half of each GOP.
        """
        if self._last_raw is not None:
            self._due_raw = self._last_raw + after_s

    def retrieve(self) -> Image | None:
        frame = self._frame
        if frame is None:
            return None
        self._check_size(frame.width, frame.height)  # the stream changed its size since it was opened
        width, height = _fit(frame.width, frame.height, self._longest_side)
        scaled = (width, height) != (frame.width, frame.height)
        image = self._reformatter.reformat(frame, width=width, height=height, format="bgr24",
                                           interpolation="AREA" if scaled else None).to_ndarray()
        return np.ascontiguousarray(image)

    def close(self) -> None:
        self._frames.close()
        self._container.close()

    # -- decoding ---------------------------------------------------------------------------------------
    def _decoded(self) -> Generator[VideoFrame, None, None]:
        codec = self._stream.codec_context
        try:
            for packet in self._container.demux(self._stream):
                if not self._feed(packet):
                    continue
                try:
                    frames = codec.decode(packet)
                except av.error.InvalidDataError:  # a damaged packet: the frames after it wait for a keyframe
                    self._need_key = True
                    continue
                for frame in frames:
                    if self._timed(frame):
                        yield frame
        except (av.error.FFmpegError, OSError) as exc:  # a read timeout, a dropped connection, a cut file
            self.error = f"{self._where}: {exc}"

    def _feed(self, packet: av.Packet[VideoStream]) -> bool:
        """Whether `packet` goes to the decoder; learns the keyframe interval on the way."""
        if packet.size == 0:
            return True  # the demuxer's last, empty packet flushes the decoder's delayed frames
        self._on_packet()
        if packet.pts is not None and self._time_base is not None:
            self._end = max(self._end, (packet.pts + (packet.duration or 0)) * self._time_base + self._shift)
            self._reorders = self._reorders or (packet.dts is not None and packet.dts != packet.pts)
        if packet.is_keyframe:
            self._last_key_raw = self._time(packet.pts)
            self.plan.keyframe(self._last_key_raw)
            self._need_key = False
        elif self._need_key or self.plan.mode == "keyframes":
            self.skipped_packets += 1
            return False  # never handed to the decoder: not even parsed
        elif self._rest_of_gop_unneeded():
            self.skipped_packets += 1
            self._gap_broken = True
            return False
        return True

    def _rest_of_gop_unneeded(self) -> bool:
        """No frame before the next keyframe is due: the next sample is at or after it (its interval learned)."""
        interval = self.plan.keyframe_interval_s
        if interval is None or self._reorders or self._due_raw is None or self._last_key_raw is None:
            return False
        return self._due_raw >= self._last_key_raw + interval - self._spacing / 2

    def _timed(self, frame: VideoFrame) -> bool:
        self._last_raw = raw = self._time(frame.pts)
        if self._gap_broken:  # frames left out on purpose: not a gap in what the stream's structure gives
            self.plan.skipped()
            self._gap_broken = False
        t = raw + self._shift
        if self._last is not None and t < self._last and not self._live:
            # Timestamps that start again (recordings joined end to end): the media clock goes on from here.
            self._shift += self._last + self._spacing - t
            t = self._last + self._spacing
        if self._first is None:
            self._first = t
        self._last = t
        self.plan.frame(t)
        before = self.plan.mode
        if self.plan.choose() != before:
            self._apply(self.plan.mode, after=before)
        return True

    def _apply(self, mode: SkipMode, *, after: SkipMode | None = None) -> None:
        self._stream.codec_context.skip_frame = SKIP_FRAME[mode]
        if after == "keyframes":
            self._need_key = True

    def _time(self, pts: int | None) -> float:
        if pts is None or self._time_base is None:
            return time.monotonic() - self._opened_at  # no timestamps (some MJPEG streams): arrival time
        return pts * self._time_base

    def _check_size(self, width: int, height: int) -> None:
        if width * height > self._max_pixels:
            raise ImageRefused(f"{self._where} has frames of {width} x {height} pixels, over "
                               f"cameras.max_pixels={self._max_pixels}")


def _fit(width: int, height: int, longest_side: int) -> tuple[int, int]:
    """`width` x `height` scaled so the longest side is at most `longest_side` (never upscaled), rounded
    as `sensors.camera.downscale` rounds, so both paths hand the gate the same size."""
    scale = longest_side / max(width, height)
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))
