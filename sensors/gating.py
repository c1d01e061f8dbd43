"""Change gating: decide per sampled frame whether it is worth a model call.

The change score is the share of pixels of a small, blurred grey image that
moved more than `pixel_delta` grey levels since the last frame the gate passed
(not the previous sampled frame: a slow change accumulates until it counts).
A frame passes when the score reaches `threshold`, or, in a static scene, when
`heartbeat_s` passed since the last passed frame, so slow hazards are still
looked at. Everything here is plain CPU work for the capture thread.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from sensors.camera_config import GatingSettings

Image = npt.NDArray[Any]
Reason = Literal["changed", "heartbeat", "skipped"]
REASONS: tuple[Reason, ...] = ("changed", "heartbeat", "skipped")


def gray_thumbnail(image: Image, *, size: int, blur: int) -> npt.NDArray[np.uint8]:
    """A grey image with longest side `size`, blurred against sensor noise and JPEG blocks.

    Downscales first, so the colour conversion and blur touch only the small image.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if blur > 1:
        image = cv2.GaussianBlur(image, (blur, blur), 0)
    return np.asarray(image, dtype=np.uint8)


def change_score(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], *, pixel_delta: int) -> float:
    """Share of pixels (0..1) that differ by more than `pixel_delta`; 1.0 when the sizes differ."""
    if a.shape != b.shape:
        return 1.0
    diff = cv2.absdiff(a, b)
    return float(np.count_nonzero(diff > pixel_delta)) / diff.size


@dataclass(frozen=True, slots=True)
class GateDecision:
    """What the gate said about one frame, and why."""

    passed: bool
    reason: Reason
    score: float


@dataclass
class ChangeGate:
    """Frame differencing against the last passed frame, with a heartbeat for static scenes."""

    settings: GatingSettings
    # Every reason is present from the start, so a reader on another thread never sees the dict grow.
    counts: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(REASONS, 0)))
    _reference: npt.NDArray[np.uint8] | None = None
    _passed_at: float | None = None

    def decide(self, image: Image, ts: float) -> GateDecision:
        """Score `image` (BGR or grey) taken at `ts` seconds and decide; counts every decision by reason."""
        thumb = gray_thumbnail(image, size=self.settings.size, blur=self.settings.blur)
        if self._reference is None:
            score = 1.0
        else:
            score = change_score(thumb, self._reference, pixel_delta=self.settings.pixel_delta)
        decision = self._judge(score, ts)
        self.counts[decision.reason] += 1
        if decision.passed:
            self._reference = thumb
            self._passed_at = ts
        return decision

    def _judge(self, score: float, ts: float) -> GateDecision:
        if not self.settings.enabled or self._reference is None or score >= self.settings.threshold:
            return GateDecision(True, "changed", score)
        heartbeat = self.settings.heartbeat_s
        if heartbeat is not None and self._passed_at is not None and ts - self._passed_at >= heartbeat:
            return GateDecision(True, "heartbeat", score)
        return GateDecision(False, "skipped", score)

    def reset(self) -> None:
        """Forget the reference (after a reconnect the scene may have changed)."""
        self._reference = None
        self._passed_at = None
