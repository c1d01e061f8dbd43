"""Change gating on scene images: static scenes are skipped, changes pass, a heartbeat still looks."""

from __future__ import annotations

import numpy as np

from sensors.camera_config import GatingSettings
from sensors.gating import ChangeGate, change_score, gray_thumbnail
from tests.support.media import Scene, appears_at, daylight, lamp


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


def test_daylight_that_ramps_is_not_a_change() -> None:
    """Daylight scales the whole scene slowly: with matched brightness nothing but the first frame passes."""
    for seed in (3, 6, 11):
        gate = ChangeGate(GatingSettings(heartbeat_s=None))
        scene = Scene(width=640, height=360, seed=seed, noise=4.0, light=daylight(0.6, 1.3, over_s=30.0))
        passed = [t for t in np.arange(0.0, 40.0, 0.5) if gate.decide(scene.frame(float(t)), ts=float(t)).passed]
        assert passed == [0.0], seed


def test_a_lamp_costs_at_most_the_frame_it_was_switched_on() -> None:
    """A lamp can white out part of the scene (the camera clips): that frame may pass, the ones after do not."""
    for gain in (0.7, 1.3, 1.6):
        gate = ChangeGate(GatingSettings(heartbeat_s=None))
        scene = _scene(light=lamp(10.0, gain))
        passed = [t for t in np.arange(0.0, 30.0, 0.5) if gate.decide(scene.frame(float(t)), ts=float(t)).passed]
        assert passed in ([0.0], [0.0, 10.0]), gain


def test_without_brightness_matching_daylight_keeps_passing() -> None:
    """The opposite check: the same ramp passes the gate again and again when frames are compared as they are."""
    gate = ChangeGate(GatingSettings(heartbeat_s=None, normalize_brightness=False))
    scene = _scene(light=daylight(0.6, 1.3, over_s=30.0))
    passed = [t for t in np.arange(0.0, 40.0, 0.5) if gate.decide(scene.frame(float(t)), ts=float(t)).passed]
    assert len(passed) > 5


def test_someone_walking_in_after_a_lamp_still_passes() -> None:
    gate = ChangeGate(GatingSettings(heartbeat_s=None))
    scene = _scene(light=lamp(4.0, 1.5), moving=appears_at(8.0, 640, 360))
    passed = [t for t in np.arange(0.0, 12.0, 0.5) if gate.decide(scene.frame(float(t)), ts=float(t)).passed]
    assert passed[0] == 0.0 and 8.0 in passed
    assert all(t == 4.0 or 8.0 <= t <= 9.0 for t in passed[1:])


def test_an_ignored_tv_does_not_count_but_the_rest_of_the_room_does() -> None:
    tv = (0.7, 0.05, 0.25, 0.3)
    watched = ChangeGate(GatingSettings(heartbeat_s=None))
    ignoring = ChangeGate(GatingSettings(heartbeat_s=None, ignore=[tv]))
    scene = _scene(tv=tv, moving=appears_at(20.0, 640, 360))
    times = [float(t) for t in np.arange(0.0, 24.0, 0.5)]
    passed_watched = [t for t in times if watched.decide(scene.frame(t), ts=t).passed]
    passed_ignoring = [t for t in times if ignoring.decide(scene.frame(t), ts=t).passed]
    assert len([t for t in passed_watched if t < 20.0]) > 20  # the TV alone keeps a plain gate busy
    assert [t for t in passed_ignoring if t < 20.0] == [0.0]
    assert 20.0 in passed_ignoring  # a person in the room still counts


def test_ignored_regions_are_blanked_in_the_thumbnail() -> None:
    gate = ChangeGate(GatingSettings(ignore=[(0.0, 0.0, 0.5, 1.0)]))
    thumb = gate.thumbnail(_scene().frame(0.0))
    assert not thumb[:, : thumb.shape[1] // 2 - 1].any()
    assert thumb[:, thumb.shape[1] // 2 + 1:].any()
