"""Configuration of camera sources and of the frames a window sends to the model.

`CameraSettings` is one `[[cameras]]` entry; `KeyframeSettings` is the
`[keyframes]` section. `check_camera_capability` and `check_camera_ids` are the
cross-section rules the settings validator applies to the whole tree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlparse

from pydantic import Field, model_validator

from monitor.config_base import Identifier, PositiveFloat, Section

URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")
CameraKind = Literal["device", "file", "url", "folder"]


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

    @model_validator(mode="after")
    def _odd_blur(self) -> GatingSettings:
        if self.blur % 2 == 0:
            raise ValueError(f"blur must be odd, got {self.blur}")
        return self


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
    longest_side: int = Field(default=640, ge=64, le=4096, description="frames are downscaled to this longest side")
    jpeg_quality: int = Field(default=80, ge=10, le=100)
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
        if self.kind in ("device", "url") and (self.speed != 1.0 or self.loop):
            raise ValueError(f"speed and loop are only used by kinds 'file' and 'folder', not '{self.kind}'")
        return self

    @property
    def zone_id(self) -> str:
        return self.zone or self.id

    @property
    def live(self) -> bool:
        """A live source drops its oldest frames when the pipeline lags; a file at speed 0 waits instead."""
        return self.kind in ("device", "url") or self.speed > 0


class KeyframeSettings(Section):
    """Which frames of a window go to the model, how large, and how many tokens they may cost.

    Token estimate per image, `estimate = tiles` (OpenAI's published rule for detail=high):
    scale to fit 2048x2048, then the shortest side down to 768, then
    `85 + 170 * tiles` with 512 px tiles. `fixed`: `tokens_per_image` each
    (e.g. 258 for Gemini; check your local model's vision encoder).
    """

    max_frames: int = Field(default=4, ge=1, le=32, description="K: frames per request at most")
    longest_side: int = Field(default=768, ge=64, le=4096)
    jpeg_quality: int = Field(default=80, ge=10, le=100)
    min_change: float = Field(
        default=0.005, ge=0.0, le=1.0,
        description="a frame this close to every chosen frame of its camera adds nothing and is left out",
    )
    estimate: Literal["tiles", "fixed"] = Field(default="tiles", description="how image tokens are estimated")
    tokens_per_image: int = Field(default=258, ge=1, le=100_000, description="estimate = fixed: tokens per image")
    max_image_tokens: int = Field(default=3000, ge=1, le=1_000_000, description="image tokens per request at most")

    @model_validator(mode="after")
    def _one_image_fits(self) -> KeyframeSettings:
        worst = self.estimate_tokens(self.longest_side, self.longest_side)
        if worst > self.max_image_tokens:
            raise ValueError(
                f"max_image_tokens ({self.max_image_tokens}) is below the estimate for one "
                f"{self.longest_side}x{self.longest_side} image ({worst}); raise it or lower longest_side"
            )
        return self

    def estimate_tokens(self, width: int, height: int) -> int:
        """Estimated prompt tokens of one image of this size."""
        if self.estimate == "fixed":
            return self.tokens_per_image
        return openai_image_tokens(width, height)


def openai_image_tokens(width: int, height: int) -> int:
    """OpenAI's detail=high estimate: 85 + 170 per 512 px tile after its two downscales."""
    scale = min(1.0, 2048 / max(width, height))
    scale *= min(1.0, 768 / (min(width, height) * scale))
    return 85 + 170 * math.ceil(width * scale / 512) * math.ceil(height * scale / 512)


class _Model(Protocol):
    @property
    def backend(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def images_supported(self) -> bool: ...


class _Source(Protocol):
    @property
    def id(self) -> str: ...


class _Tree(Protocol):
    @property
    def model(self) -> _Model: ...

    @property
    def cameras(self) -> Sequence[CameraSettings]: ...


class _TreeWithSources(_Tree, Protocol):
    @property
    def sources(self) -> Sequence[_Source]: ...


def check_camera_capability(settings: _Tree) -> list[str]:
    """Problems with cameras the configured model cannot see: one line each, naming the key.

    A camera needs a backend that accepts images, unless its pose pre-filter
    turns frames into text facts; the pre-filter needs the mediapipe extra.
    """
    from sensors.pose import pose_unavailable_reason

    problems: list[str] = []
    model = settings.model
    for index, camera in enumerate(settings.cameras):
        key = f"cameras[{index}]"
        if camera.pose_prefilter:
            reason = pose_unavailable_reason()
            if reason is not None:
                problems.append(f"{key}.pose_prefilter: camera '{camera.id}': {reason}")
        elif not model.images_supported:
            problems.append(
                f"{key}: camera '{camera.id}' (zone '{camera.zone_id}') needs a model that accepts images, but "
                f"model '{model.model}' (backend '{model.backend}') is text-only: use a vision model and set "
                f"model.accepts_images = true, or set {key}.pose_prefilter = true to send text facts instead"
            )
    return problems


def check_camera_ids(settings: _TreeWithSources) -> list[str]:
    """Camera ids must be unique among cameras and activity-log sources (observations carry the id)."""
    problems: list[str] = []
    seen = {source.id for source in settings.sources}
    for index, camera in enumerate(settings.cameras):
        if camera.id in seen:
            problems.append(f"cameras[{index}].id: duplicate source id '{camera.id}'")
        seen.add(camera.id)
    return problems
