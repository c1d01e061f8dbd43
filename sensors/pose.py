"""Optional pose pre-filter: frames to text facts for text-only models.

Backed by mediapipe's pose landmarker (`mediapipe==0.10.21`, the last release
that ships the pose models in its wheel). mediapipe is imported lazily and only
here; it needs numpy<2, which OpenCV 5 does not accept, so it lives in an
environment with an OpenCV 4.x build (see docs/cameras.md). Without it,
`create_pose_prefilter` raises `PoseUnavailableError` naming the fix.

Facts per frame, e.g. ``("1 person visible", "posture: lying (torso 78 deg from
vertical)", "still for 40 s")``. The torso angle is the angle between the
hip-to-shoulder line and the vertical: about 5-27 degrees upright, 65+ lying.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math
from typing import TYPE_CHECKING, Any

from monitor.core.errors import SensorError

if TYPE_CHECKING:  # OpenCV and numpy only once a pre-filter runs: the config check imports this module
    import numpy as np
    import numpy.typing as npt

PINNED = "0.10.21"
INSTALL_HINT = (
    f"install the pose extra: pip install 'mediapipe=={PINNED}' in an environment with numpy<2 "
    "and opencv-python-headless<4.11 (OpenCV 5 needs numpy>=2)"
)
# mediapipe pose landmark indices
_SHOULDERS = (11, 12)
_HIPS = (23, 24)
_TRACKED = (0, 11, 12, 15, 16, 23, 24, 27, 28)  # nose, shoulders, wrists, hips, ankles


class PoseUnavailableError(SensorError):
    """The pose pre-filter was asked for but mediapipe is missing or the wrong release."""


def pose_unavailable_reason() -> str | None:
    """Why the pose pre-filter cannot run here, or None when it can (without importing mediapipe)."""
    if importlib.util.find_spec("mediapipe") is None:
        return f"the pose pre-filter needs mediapipe, which is not installed; {INSTALL_HINT}"
    try:
        version = importlib.metadata.version("mediapipe")
    except importlib.metadata.PackageNotFoundError:
        return None
    if version != PINNED:
        return f"the pose pre-filter needs mediapipe=={PINNED} (later releases ship no pose model), found {version}"
    return None


def torso_angle(shoulders: tuple[float, float], hips: tuple[float, float]) -> float:
    """Degrees between the hip-to-shoulder line and the vertical (0 upright, 90 lying)."""
    dx, dy = shoulders[0] - hips[0], shoulders[1] - hips[1]
    return math.degrees(math.atan2(abs(dx), abs(dy))) if (dx or dy) else 0.0


def posture(angle: float) -> str:
    if angle < 35:
        return "upright"
    if angle < 60:
        return "bent or reclining"
    return "lying"


class PosePrefilter:
    """mediapipe pose on one camera's frames, turned into short text facts.

    Keeps the last landmarks to tell how long the person has been still.
    Not thread-safe: one instance per camera, used from its capture thread.
    """

    def __init__(self, *, min_confidence: float = 0.5, still_motion: float = 0.02, still_after_s: float = 10.0,
                 model_complexity: int = 1) -> None:
        reason = pose_unavailable_reason()
        if reason is not None:
            raise PoseUnavailableError(reason)
        self._model_complexity = model_complexity
        self.min_confidence = min_confidence
        self._pose: Any | None = self._open()
        self.still_motion = still_motion
        self.still_after_s = still_after_s
        self._last: npt.NDArray[np.float64] | None = None
        self._moved_at: float | None = None

    def _open(self) -> Any:
        mediapipe: Any = importlib.import_module("mediapipe")
        return mediapipe.solutions.pose.Pose(
            static_image_mode=False, model_complexity=self._model_complexity,
            min_detection_confidence=self.min_confidence, min_tracking_confidence=self.min_confidence,
        )

    def facts(self, image: npt.NDArray[Any], ts: float) -> tuple[str, ...]:
        """Facts about the person in a BGR frame taken at `ts` seconds."""
        import cv2
        import numpy as np

        if self._pose is None:  # closed when the camera's last run ended: the pipeline is running it again
            self._pose = self._open()
            self._last, self._moved_at = None, None
        result = self._pose.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        landmarks = getattr(result, "pose_landmarks", None)
        if landmarks is None:
            self._last, self._moved_at = None, None
            return ("no person visible",)
        points = np.array([[p.x, p.y, p.visibility] for p in landmarks.landmark], dtype=np.float64)
        facts = ["1 person visible"]
        angle = self._torso_angle(points)
        if angle is not None:
            facts.append(f"posture: {posture(angle)} (torso {angle:.0f} deg from vertical)")
        still_s = self._still_for(points, ts)
        if still_s is not None and still_s >= self.still_after_s:
            facts.append(f"still for {still_s:.0f} s")
        return tuple(facts)

    def _torso_angle(self, points: npt.NDArray[np.float64]) -> float | None:
        needed = [*_SHOULDERS, *_HIPS]
        if float(points[needed, 2].min()) < self.min_confidence:
            return None
        shoulders = points[list(_SHOULDERS), :2].mean(axis=0)
        hips = points[list(_HIPS), :2].mean(axis=0)
        return torso_angle((float(shoulders[0]), float(shoulders[1])), (float(hips[0]), float(hips[1])))

    def _still_for(self, points: npt.NDArray[np.float64], ts: float) -> float | None:
        tracked = points[list(_TRACKED), :2]
        if self._last is None or self._moved_at is None:
            self._last, self._moved_at = tracked, ts
            return None
        motion = float(abs(tracked - self._last).mean())
        self._last = tracked
        if motion > self.still_motion:
            self._moved_at = ts
        return ts - self._moved_at

    def close(self) -> None:
        """Let the model go; the next frame, if the camera is run again, opens it afresh."""
        if self._pose is not None:
            self._pose.close()
            self._pose = None


def create_pose_prefilter(**options: Any) -> PosePrefilter:
    """A pose pre-filter, or `PoseUnavailableError` with the install hint when mediapipe is missing."""
    return PosePrefilter(**options)
