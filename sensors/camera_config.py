"""Configuration of camera sources and of the frames a window sends to the model.

`CameraSettings` is one `[[cameras]]` entry; `KeyframeSettings` is the
`[keyframes]` section. `check_camera_capability` and `check_camera_ids` are the
cross-section rules the settings validator applies to the whole tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import Field, model_validator

from monitor.core.config import Identifier, PositiveFloat, Section
from sensors.image_header import DEFAULT_MAX_PIXELS, MAX_PIXELS_CEILING

URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
CameraKind = Literal["device", "file", "url", "folder"]
Decoder = Literal["auto", "opencv", "pyav"]
# What a camera decodes with, as its health, /metrics and the start-up log name it (docs/cameras.md).
DECODE_MODES = ("opencv", "pyav-all", "pyav-nonref", "pyav-keyframes")


Share = Annotated[float, Field(ge=0.0, le=1.0)]
# [x, y, w, h]: a rectangle as shares of the frame's width and height, from its top-left corner.
Region = tuple[Share, Share, Share, Share]
MAX_IGNORE_REGIONS = 16
_EDGE = 1e-6  # 0.1 + 0.9 is 1.0000000000000002 in floating point, and still inside the frame


class GatingSettings(Section):
    """Which sampled frames go on to the model: the changed ones, and a heartbeat of a static scene."""

    enabled: bool = Field(default=True, description="false: every sampled frame is emitted")
    threshold: float = Field(default=0.005, ge=0.0, le=1.0,
                             description="share of pixels that must change since the last emitted frame")
    heartbeat_s: PositiveFloat | None = Field(default=60.0,
                                              description="emit a frame of a static scene this often; none: never")
    pixel_delta: int = Field(default=15, ge=1, le=255, description="grey levels a pixel must move to count as changed")
    size: int = Field(default=160, ge=16, le=1024, description="longest side of the grey image the score is taken on")
    blur: int = Field(default=5, ge=1, le=31, description="Gaussian kernel (odd) against sensor noise")
    ignore: list[Region] = Field(
        default_factory=list, max_length=MAX_IGNORE_REGIONS,
        description="regions whose changes never count, [x, y, w, h] as shares (0..1) of the width and height "
                    "from the top-left corner, e.g. a TV: [[0.7, 0.05, 0.25, 0.3]]")
    normalize_brightness: bool = Field(
        default=True, description="compare frames at the same mean brightness: daylight and lamps are not changes")

    @model_validator(mode="after")
    def _odd_blur(self) -> GatingSettings:
        if self.blur % 2 == 0:
            raise ValueError(f"blur must be odd, got {self.blur}")
        return self

    @model_validator(mode="after")
    def _regions_inside(self) -> GatingSettings:
        for index, (x, y, w, h) in enumerate(self.ignore):
            where = f"ignore[{index}] = [{x:g}, {y:g}, {w:g}, {h:g}]"
            if w <= 0 or h <= 0:
                raise ValueError(f"{where}: width and height must be above 0")
            if x + w > 1 + _EDGE or y + h > 1 + _EDGE:
                raise ValueError(f"{where}: reaches outside the frame (x + w and y + h must be at most 1)")
        if self.ignore and ignored_share(self.ignore) >= 1.0:
            raise ValueError("ignore covers the whole frame: the gate would never see a change; "
                             "remove a region, or set enabled = false to send every sampled frame")
        return self


def ignored_share(regions: list[Region], *, grid: int = 64) -> float:
    """The share of the frame the regions cover together, on a `grid` x `grid` raster."""
    covered = 0
    for row in range(grid):
        v = (row + 0.5) / grid
        for col in range(grid):
            u = (col + 0.5) / grid
            covered += any(x <= u < x + w and y <= v < y + h for x, y, w, h in regions)
    return covered / grid**2


class ReconnectSettings(Section):
    """Exponential backoff with jitter between attempts to (re)open a live source."""

    initial_s: PositiveFloat = 0.5
    max_s: PositiveFloat = 30.0
    jitter: float = Field(default=0.25, ge=0.0, le=1.0, description="each delay is scaled by 1 +/- jitter at random")
    open_timeout_s: PositiveFloat = 10.0
    read_timeout_s: PositiveFloat = Field(default=5.0, description="no frame for this long: the source is offline")

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectSettings:
        if self.initial_s > self.max_s:
            raise ValueError(f"initial_s ({self.initial_s}) must not exceed max_s ({self.max_s})")
        return self


class CameraSettings(Section):
    """One camera. Cameras and activity logs that share a `zone` share one window."""

    id: Identifier
    zone: Identifier | None = Field(default=None, description="default: the camera id")
    kind: CameraKind
    device: int | None = Field(default=None, ge=0, description="device: the video device index (/dev/videoN)")
    path: Path | None = Field(default=None, description="file: a video file; folder: a folder of images")
    url: str | None = Field(default=None, description="url: rtsp://, http(s):// (MJPEG) or rtmp:// stream")
    capture_options: str | None = Field(
        default=None, description="url: FFmpeg options as OPENCV_FFMPEG_CAPTURE_OPTIONS, e.g. 'rtsp_transport;udp'"
    )
    max_fps: PositiveFloat = Field(default=2.0, description="frames sampled per second at most")
    speed: float = Field(default=1.0, ge=0.0, le=1000.0,
                         description="file/folder: playback speed; 0 = as fast as possible")
    loop: bool = Field(default=False, description="file/folder: start again at the end")
    folder_fps: PositiveFloat = Field(default=1.0, description="folder: images per second at speed 1")
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS, ge=64 * 64, le=MAX_PIXELS_CEILING,
        description="images and stream frames larger than this (width x height) are refused unread, counted in "
                    "bad_input; 40 megapixels holds 8K UHD (33.2) and decodes to 120 MB")
    longest_side: int = Field(default=640, ge=64, le=4096, description="frames are downscaled to this longest side")
    jpeg_quality: int = Field(default=80, ge=10, le=100)
    decode_threads: int = Field(default=1, ge=0, le=64,
                                description="file/url: FFmpeg decoding threads; 0 = FFmpeg's choice (every core)")
    decoder: Decoder = Field(
        default="auto",
        description="file/url: 'auto' decodes with PyAV only the frames max_fps needs (keyframes only when "
                    "max_fps is at or below the stream's keyframe rate); 'opencv' decodes every frame with "
                    "OpenCV; 'pyav' as auto, but an error for devices and folders, which always use OpenCV")
    queue_size: int = Field(default=4, ge=1, le=1000, description="frames waiting for the pipeline; oldest dropped")
    gating: GatingSettings = Field(default_factory=GatingSettings)
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)
    pose_prefilter: bool = Field(
        default=False, description="turn frames into text facts with mediapipe pose (the 'pose' extra)"
    )

    @model_validator(mode="after")
    def _target_matches_kind(self) -> CameraSettings:
        needed = {"device": "device", "file": "path", "folder": "path", "url": "url"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"camera kind '{self.kind}' needs {needed}")
        for key in ("device", "path", "url"):
            if key != needed and getattr(self, key) is not None:
                raise ValueError(f"{key} is not used by camera kind '{self.kind}' (it uses {needed})")
        if self.url is not None:
            scheme = urlparse(self.url).scheme
            if scheme not in URL_SCHEMES or not urlparse(self.url).netloc:
                raise ValueError(f"url must be {', '.join(s + '://' for s in URL_SCHEMES)} with a host, "
                                 f"got scheme '{scheme}'")
        if self.capture_options is not None and self.kind != "url":
            raise ValueError("capture_options is only used by camera kind 'url'")
        if self.decoder == "pyav" and self.kind in ("device", "folder"):
            raise ValueError(f"decoder 'pyav' reads files and streams, not camera kind '{self.kind}' "
                             "(use 'auto' or 'opencv')")
        if self.kind in ("device", "url") and (self.speed != 1.0 or self.loop):
            raise ValueError(f"speed and loop are only used by kinds 'file' and 'folder', not '{self.kind}'")
        return self

    @property
    def zone_id(self) -> str:
        return self.zone or self.id

    @property
    def uses_pyav(self) -> bool:
        """Files and streams decode with PyAV unless `decoder = "opencv"`; devices and folders never do."""
        return self.decoder != "opencv" and self.kind in ("file", "url")

    @property
    def live(self) -> bool:
        """A live source drops its oldest frames when the pipeline lags; a file at speed 0 waits instead."""
        return self.kind in ("device", "url") or self.speed > 0


