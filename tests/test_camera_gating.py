"""Change gating on scene images: static scenes are skipped, changes pass, a heartbeat still looks."""

from __future__ import annotations

import numpy as np

from sensors.camera_config import GatingSettings
from sensors.gating import ChangeGate, change_score, gray_thumbnail
from tests.support.media import Scene, appears_at


def _scene(**kwargs: object) -> Scene:
    return Scene(width=640, height=360, seed=11, noise=4.0, **kwargs)  # type: ignore[arg-type]


def test_sensor_noise_scores_near_zero_and_an_object_scores_high() -> None:
    scene = _scene(moving=appears_at(1.0, 640, 360))
    settings = GatingSettings()
    before = [gray_thumbnail(scene.frame(t), size=settings.size, blur=settings.blur) for t in (0.0, 0.5)]
    after = gray_thumbnail(scene.frame(2.0), size=settings.size, blur=settings.blur)
    assert change_score(before[0], before[1], pixel_delta=settings.pixel_delta) < 0.002
    assert change_score(before[0], after, pixel_delta=settings.pixel_delta) > settings.threshold
    assert change_score(before[0], before[0][:10], pixel_delta=settings.pixel_delta) == 1.0


def test_static_scene_passes_first_frame_then_heartbeats_only() -> None:
    gate = ChangeGate(GatingSettings(heartbeat_s=10.0))
    scene = _scene()
    decisions = [gate.decide(scene.frame(t), ts=t) for t in np.arange(0.0, 30.0, 0.5)]
    passed = [(i * 0.5, d.reason) for i, d in enumerate(decisions) if d.passed]
    assert passed == [(0.0, "changed"), (10.0, "heartbeat"), (20.0, "heartbeat")]
    assert gate.counts == {"changed": 1, "heartbeat": 2, "skipped": 57}


def test_a_change_passes_at_once_and_the_new_static_scene_is_skipped() -> None:
    gate = ChangeGate(GatingSettings(heartbeat_s=None))
    scene = _scene(moving=appears_at(5.0, 640, 360))
    times = np.arange(0.0, 12.0, 0.5)
    passed = [float(t) for t in times if gate.decide(scene.frame(float(t)), ts=float(t)).passed]
    # first frame, then the walk-in (5.0-6.0 s), then nothing once the object stands still
    assert passed[0] == 0.0
    assert 5.0 in passed and 5.5 in passed
    assert all(5.0 <= t <= 6.0 for t in passed[1:])


def test_slow_change_accumulates_against_the_last_passed_frame() -> None:
    gate = ChangeGate(GatingSettings(heartbeat_s=None))
    base = _scene().frame(0.0)
    assert gate.decide(base, ts=0.0).passed
    # a dark stain growing a few pixels per frame: each step is tiny, the sum is not
    results = []
    for step in range(1, 40):
        image = base.copy()
        image[100:100 + 2 * step, 200:260] = 0
        results.append(gate.decide(image, ts=float(step)).passed)
    assert not results[0]
    assert any(results)


def test_disabled_gate_passes_everything() -> None:
    gate = ChangeGate(GatingSettings(enabled=False))
    scene = _scene()
    assert all(gate.decide(scene.frame(t), ts=t).passed for t in (0.0, 1.0, 2.0))
    gate.reset()
    assert gate.decide(scene.frame(3.0), ts=3.0).score == 1.0
