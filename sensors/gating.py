"""Change gating: decide per sampled frame whether it is worth a model call.

The change score is the share of pixels of a small, blurred grey image that
moved more than `pixel_delta` grey levels since the last frame the gate passed
(not the previous sampled frame: a slow change accumulates until it counts).
A frame passes when the score reaches `threshold`, or, in a static scene, when
`heartbeat_s` passed since the last passed frame, so slow hazards are still
looked at. Everything here is plain CPU work for the capture thread.

Light is not motion: with `normalize_brightness` the frame is scaled to the
reference's mean brightness before the comparison, so daylight and a lamp do
not count as change. Regions in `ignore` (a TV, a window onto a street) are
blanked in the grey image, so they count neither for the gate nor for the
keyframe choice that reuses the image.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from sensors.camera_config import GatingSettings, Region

Image = npt.NDArray[Any]
Grey = npt.NDArray[np.uint8]
Reason = Literal["changed", "heartbeat", "skipped"]
REASONS: tuple[Reason, ...] = ("changed", "heartbeat", "skipped")
# A lamp or the sun can halve or double the light; beyond that, a change of light is a change of scene.
_MAX_GAIN = 4.0
_DARK = 2.0  # mean grey level under which a frame has no brightness to match
_CLIPPED = 250  # grey level from which a pixel may have been clipped by the camera


def gray_thumbnail(image: Image, *, size: int, blur: int) -> Grey:
    """A grey image with longest side `size`, blurred against sensor noise and JPEG blocks.

    Bilinear sampling averages 2 x 2 pixels per sample and never reads the rest of the
    image. Up to 4x (a camera's downscaled frame: 640 px to 160) it samples the size
    directly; larger images are sampled at twice the size and area-averaged down, so
    each output pixel still averages 16 input pixels. Colour conversion and blur touch
    only small images.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    if scale < 1.0:
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        sampled = (2 * target[0], 2 * target[1]) if scale < 0.25 else target
        image = cv2.resize(image, sampled, interpolation=cv2.INTER_LINEAR)
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if sampled != target:
            image = cv2.resize(image, target, interpolation=cv2.INTER_AREA)
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if blur > 1:
        image = cv2.GaussianBlur(image, (blur, blur), 0)
    return np.asarray(image, dtype=np.uint8)


def change_score(a: Grey, b: Grey, *, pixel_delta: int) -> float:
    """Share of pixels (0..1) that differ by more than `pixel_delta`; 1.0 when the sizes differ."""
    if a.shape != b.shape:
        return 1.0
    diff = cv2.absdiff(a, b)
    return float(np.count_nonzero(diff > pixel_delta)) / diff.size


def keep_mask(shape: tuple[int, ...], regions: list[Region], *, margin: int = 0) -> Grey:
    """255 where a grey image of `shape` counts, 0 inside the ignored regions (shares of width and height).

    Each region is widened by `margin` pixels: the blur carries what happens inside a region
    that far out of it (a TV's picture would otherwise flicker along its frame).
    """
    height, width = shape[:2]
    keep = np.full((height, width), 255, dtype=np.uint8)
    for x, y, w, h in regions:
        left, top = max(0, int(x * width) - margin), max(0, int(y * height) - margin)
        right = min(width, max(left + 1, round((x + w) * width)) + margin)
        bottom = min(height, max(top + 1, round((y + h) * height)) + margin)
        keep[top:bottom, left:right] = 0
    return keep


def match_brightness(a: Grey, b: Grey, keep: Grey | None = None) -> tuple[Grey, Grey]:
    """`a` and `b` at the same mean brightness (over `keep`): the brighter one scaled down to the darker.

    Light multiplies what surfaces reflect, so a gain (not an offset) undoes a lamp or the
    sun. A camera clips what is too bright, so the gain is measured on the pixels the
    brighter image did not clip; scaling down (not the darker image up) keeps the clipped
    pixels' error small. The gain is bounded, and a dark frame is left as it is.
    """
    mean_a, mean_b = cv2.mean(a, mask=keep)[0], cv2.mean(b, mask=keep)[0]
    if min(mean_a, mean_b) < _DARK:
        return a, b
    dark, bright = (a, b) if mean_a <= mean_b else (b, a)
    unclipped = np.asarray(bright < _CLIPPED, dtype=np.uint8)
    if keep is not None:
        unclipped = np.asarray(cv2.bitwise_and(unclipped, keep), dtype=np.uint8)
    bright_mean = cv2.mean(bright, mask=unclipped)[0]
    if bright_mean < _DARK:
        return a, b
    gain = max(1.0 / _MAX_GAIN, cv2.mean(dark, mask=unclipped)[0] / bright_mean)
    if gain > 1.0 - 1e-3:
        return a, b
    scaled = np.asarray(cv2.convertScaleAbs(bright, alpha=gain), dtype=np.uint8)
    return (a, scaled) if dark is a else (scaled, b)


@dataclass(frozen=True, slots=True)
class GateDecision:
    """What the gate said about one frame, and why; `thumbnail` is the grey image it scored."""

    passed: bool
    reason: Reason
    score: float
    thumbnail: Grey | None = None


@dataclass
class ChangeGate:
    """Frame differencing against the last passed frame, with a heartbeat for static scenes."""

    settings: GatingSettings
    # Every reason is present from the start, so a reader on another thread never sees the dict grow.
    counts: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(REASONS, 0)))
    _reference: Grey | None = None
    _passed_at: float | None = None
    _keep: Grey | None = None
    _kept: int = 0

    def thumbnail(self, image: Image) -> Grey:
        """The grey image the gate scores `image` by, with the ignored regions blanked."""
        thumb = gray_thumbnail(image, size=self.settings.size, blur=self.settings.blur)
        keep = self._keep_for(thumb)
        if keep is not None:
            thumb = np.asarray(cv2.bitwise_and(thumb, keep), dtype=np.uint8)
        return thumb

    def decide(self, image: Image, ts: float) -> GateDecision:
        """Score `image` (BGR or grey) taken at `ts` seconds and decide; counts every decision by reason."""
        thumb = self.thumbnail(image)
        score = 1.0 if self._reference is None else self.score(thumb, self._reference)
        decision = self._judge(score, ts, thumb)
        self.counts[decision.reason] += 1
        if decision.passed:
            self._reference = thumb
            self._passed_at = ts
        return decision

    def score(self, thumb: Grey, reference: Grey) -> float:
        """Share of the counted pixels of `thumb` that moved more than `pixel_delta` since `reference`."""
        if thumb.shape != reference.shape:
            return 1.0
        keep = self._keep_for(thumb)
        if self.settings.normalize_brightness:
            thumb, reference = match_brightness(thumb, reference, keep)
        changed = np.count_nonzero(cv2.absdiff(thumb, reference) > self.settings.pixel_delta)
        # Ignored pixels are 0 in both images, so they never count; they are left out of the share too.
        return float(changed) / (thumb.size if keep is None else self._kept)

    def _keep_for(self, thumb: Grey) -> Grey | None:
        if not self.settings.ignore:
            return None
        if self._keep is None or self._keep.shape != thumb.shape:
            self._keep = keep_mask(thumb.shape, self.settings.ignore, margin=self.settings.blur // 2 + 1)
            self._kept = max(1, int(np.count_nonzero(self._keep)))
        return self._keep

    def _judge(self, score: float, ts: float, thumb: Grey) -> GateDecision:
        if not self.settings.enabled or self._reference is None or score >= self.settings.threshold:
            return GateDecision(True, "changed", score, thumb)
        heartbeat = self.settings.heartbeat_s
        if heartbeat is not None and self._passed_at is not None and ts - self._passed_at >= heartbeat:
            return GateDecision(True, "heartbeat", score, thumb)
        return GateDecision(False, "skipped", score, thumb)

    def reset(self) -> None:
        """Forget the reference (after a reconnect the scene may have changed)."""
        self._reference = None
        self._passed_at = None
