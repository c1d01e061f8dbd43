"""The optional pose pre-filter: clean refusal without mediapipe; real facts with it.

The main environment cannot hold mediapipe==0.10.21 (it needs numpy<2, OpenCV 5
needs numpy>=2), so the tests that run the model are marked `pose` and run in
their own environment with the pose extra (`make test` runs them in .venv-pose).
"""

from __future__ import annotations

import numpy as np
import pytest

from sensors.camera import CameraSource
from sensors.camera_config import CameraSettings
from sensors.pose import (
    PoseUnavailableError,
    create_pose_prefilter,
    pose_unavailable_reason,
    posture,
    torso_angle,
)

REASON = pose_unavailable_reason()


def test_torso_angle_and_posture() -> None:
    assert torso_angle((0.5, 0.2), (0.5, 0.6)) == pytest.approx(0.0)
    assert torso_angle((0.2, 0.5), (0.6, 0.5)) == pytest.approx(90.0)
    assert torso_angle((0.6, 0.2), (0.5, 0.6)) == pytest.approx(14.04, abs=0.01)
    assert [posture(a) for a in (10, 27, 45, 65, 84)] == ["upright", "upright", "bent or reclining", "lying", "lying"]


@pytest.mark.skipif(REASON is None, reason="mediapipe is installed here: this test is for the main environment")
def test_without_mediapipe_the_prefilter_refuses_with_the_fix() -> None:
    assert REASON is not None and "mediapipe==0.10.21" in REASON
    with pytest.raises(PoseUnavailableError, match="numpy<2"):
        create_pose_prefilter()
    with pytest.raises(PoseUnavailableError):
        CameraSource(CameraSettings(id="cam", kind="device", device=0, pose_prefilter=True))
    # without the flag nothing imports mediapipe
    CameraSource(CameraSettings(id="cam", kind="device", device=0))


@pytest.mark.pose
def test_an_empty_room_has_no_person() -> None:
    prefilter = create_pose_prefilter()
    try:
        assert prefilter.facts(np.full((360, 640, 3), 120, dtype=np.uint8), 0.0) == ("no person visible",)
    finally:
        prefilter.close()


@pytest.mark.pose
def test_a_real_photo_upright_then_lying_then_still() -> None:
    import cv2
    from skimage import data  # the pose environment has scikit-image for its bundled photo of a person

    person = cv2.cvtColor(cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2RGB), cv2.COLOR_RGB2BGR)
    prefilter = create_pose_prefilter(still_after_s=2.0)
    try:
        upright = prefilter.facts(person, 0.0)
        assert upright[0] == "1 person visible" and upright[1].startswith("posture: upright")
    finally:
        prefilter.close()
    lying_person = cv2.rotate(person, cv2.ROTATE_90_COUNTERCLOCKWISE)
    prefilter = create_pose_prefilter(still_after_s=2.0)
    try:
        facts = [prefilter.facts(lying_person, float(t)) for t in range(4)]
    finally:
        prefilter.close()
    assert facts[0][1].startswith("posture: lying")
    assert facts[3][-1] == "still for 3 s"


@pytest.mark.pose
def test_a_prefilter_closed_when_a_camera_run_ended_works_when_the_camera_runs_again() -> None:
    prefilter = create_pose_prefilter()  # a run ends (its emit failed): the camera closes it; the pipeline reruns it
    try:
        prefilter.close()
        prefilter.close()  # twice is harmless
        assert prefilter.facts(np.full((360, 640, 3), 120, dtype=np.uint8), 0.0) == ("no person visible",)
    finally:
        prefilter.close()
