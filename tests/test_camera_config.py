"""Camera and keyframe configuration: validation names the key; the backend capability rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from monitor.assess.settings import KeyframeSettings, openai_image_tokens
from monitor.backends.settings import ModelSettings
from monitor.settings import check_camera_capability, check_camera_ids
from sensors.camera_config import CameraSettings, GatingSettings
from sensors.logs.settings import SourceSettings
from sensors.pose import pose_unavailable_reason


def _error(**values: Any) -> str:
    with pytest.raises(ValidationError) as info:
        CameraSettings(**values)
    return str(info.value)


def test_each_kind_needs_its_target() -> None:
    assert "needs path" in _error(id="c", kind="file")
    assert "needs path" in _error(id="c", kind="folder")
    assert "needs url" in _error(id="c", kind="url")
    assert "needs device" in _error(id="c", kind="device")
    assert CameraSettings(id="c", kind="device", device=0).zone_id == "c"


def test_a_key_of_another_kind_is_named() -> None:
    message = _error(id="c", kind="file", path="a.mp4", url="rtsp://host/x")
    assert "url is not used by camera kind 'file'" in message


def test_url_scheme_and_host_are_checked() -> None:
    assert "url must be" in _error(id="c", kind="url", url="ftp://host/x")
    assert "url must be" in _error(id="c", kind="url", url="rtsp:///nohost")
    assert CameraSettings(id="c", kind="url", url="rtsp://user:pw@cam.local:554/stream").url


def test_field_errors_carry_the_key_path() -> None:
    with pytest.raises(ValidationError) as info:
        CameraSettings.model_validate({"id": "c", "kind": "device", "device": 0, "gating": {"threshold": 2.0}})
    assert info.value.errors()[0]["loc"] == ("gating", "threshold")
    with pytest.raises(ValidationError) as info:
        CameraSettings.model_validate({"id": "c", "kind": "device", "device": 0,
                                       "reconnect": {"initial_s": 5, "max_s": 1}})
    assert "initial_s (5.0) must not exceed max_s (1.0)" in str(info.value)
    with pytest.raises(ValidationError, match="blur must be odd"):
        CameraSettings.model_validate({"id": "c", "kind": "device", "device": 0, "gating": {"blur": 4}})
    with pytest.raises(ValidationError, match="speed and loop"):
        CameraSettings(id="c", kind="url", url="http://h/x.mjpg", loop=True)
    with pytest.raises(ValidationError) as info:
        CameraSettings.model_validate({"id": "c", "kind": "device", "device": 0, "colour": True})
    assert info.value.errors()[0]["type"] == "extra_forbidden"


def test_live_decides_the_drop_policy() -> None:
    assert CameraSettings(id="c", kind="device", device=0).live
    assert CameraSettings(id="c", kind="file", path=Path("a.mp4")).live
    assert not CameraSettings(id="c", kind="file", path=Path("a.mp4"), speed=0).live


def test_openai_tile_formula() -> None:
    assert openai_image_tokens(512, 512) == 85 + 170
    assert openai_image_tokens(768, 432) == 85 + 2 * 170
    assert openai_image_tokens(1024, 1024) == 85 + 4 * 170  # 1024 -> 768x768 -> 2x2 tiles
    assert openai_image_tokens(4096, 2048) == 85 + 6 * 170  # -> 2048x1024 -> 1536x768 -> 3x2


def test_keyframe_budget_must_fit_one_image() -> None:
    with pytest.raises(ValidationError, match="max_image_tokens"):
        KeyframeSettings(longest_side=1024, max_image_tokens=500)
    fixed = KeyframeSettings(estimate="fixed", tokens_per_image=100, max_image_tokens=100)
    assert fixed.estimate_tokens(4000, 3000) == 100


@dataclass
class _Tree:
    model: ModelSettings
    cameras: list[CameraSettings]
    sources: list[SourceSettings] = field(default_factory=list)


def _camera(camera_id: str = "cam", **values: Any) -> CameraSettings:
    return CameraSettings(id=camera_id, kind="device", device=0, zone="kitchen", **values)


def test_cameras_on_a_text_only_backend_are_a_config_error() -> None:
    problems = check_camera_capability(_Tree(ModelSettings(backend="embedded"), [_camera()]))
    assert len(problems) == 1
    assert problems[0].startswith("cameras[0]: camera 'cam' (zone 'kitchen') needs a model that accepts images")
    assert "cameras[0].pose_prefilter" in problems[0]


def test_cameras_on_a_vision_backend_are_fine() -> None:
    vision = ModelSettings(backend="openai", base_url="http://127.0.0.1:1/v1", accepts_images=True)
    assert check_camera_capability(_Tree(vision, [_camera()])) == []
    told_text_only = ModelSettings(backend="openai", base_url="http://127.0.0.1:1/v1", accepts_images=False)
    assert len(check_camera_capability(_Tree(told_text_only, [_camera()]))) == 1


def test_pose_prefilter_lifts_the_rule_when_mediapipe_is_there() -> None:
    problems = check_camera_capability(_Tree(ModelSettings(backend="embedded"), [_camera(pose_prefilter=True)]))
    reason = pose_unavailable_reason()
    if reason is None:
        assert problems == []
    else:
        assert problems == [f"cameras[0].pose_prefilter: camera 'cam': {reason}"]
        assert "mediapipe" in problems[0]


def test_camera_ids_must_not_clash_with_log_sources() -> None:
    tree = _Tree(ModelSettings(), [_camera("kitchen-log"), _camera("cam"), _camera("cam")],
                 sources=[SourceSettings(id="kitchen-log", path=Path("k.log"))])
    assert check_camera_ids(tree) == [
        "cameras[0].id: duplicate source id 'kitchen-log'",
        "cameras[2].id: duplicate source id 'cam'",
    ]


@pytest.mark.parametrize(("regions", "message"), [
    ([[0.5, 0.0, 0.6, 0.2]], "reaches outside the frame"),
    ([[0.1, 0.1, 0.0, 0.2]], "width and height must be above 0"),
    ([[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 0.5, 1.0]], "covers the whole frame"),
    ([[0.1, 0.1, 1.5, 0.2]], "less than or equal to 1"),
])
def test_ignore_regions_must_be_inside_and_leave_something_to_watch(regions: list[list[float]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GatingSettings.model_validate({"ignore": regions})


def test_ignore_regions_that_touch_the_edge_are_accepted() -> None:
    settings = GatingSettings.model_validate({"ignore": [[0.1, 0.7, 0.9, 0.3]]})
    assert settings.ignore == [(0.1, 0.7, 0.9, 0.3)]
