"""Keyframes cover the change in a window, fit the token budget, and reach a scripted OpenAI server with the logs."""

from __future__ import annotations

import base64
import json
from typing import Any

import cv2
import numpy as np

from monitor.assess.keyframes import choose_images, choose_images_off_loop, data_url, image_tokens, select_keyframes
from monitor.assess.prompt import ASSESSMENT_SCHEMA, build_messages
from monitor.assess.settings import KeyframeSettings
from monitor.backends import ModelRequest
from monitor.backends.openai_compat import OpenAICompatBackend
from monitor.backends.settings import ModelSettings
from monitor.windows import Window
from sensors.camera import encode_jpeg
from sensors.types import Frame, LogEntry, Observation
from tests.support.media import Scene, appears_at, moving_square
from tests.support.openai_server import DANGER, ScriptedOpenAIServer, reply

T0 = 1_790_000_000.0


def _frame(scene: Scene, t: float, *, source: str = "cam", quality: int = 85) -> Frame:
    image = scene.frame(t)
    return Frame(source=source, ts=T0 + t, jpeg=encode_jpeg(image, quality), width=image.shape[1],
                 height=image.shape[0])


def _window(observations: list[Observation]) -> Window:
    ordered = tuple(sorted(observations, key=lambda o: o.ts))
    return Window(id="kitchen-1", zone="kitchen", observations=ordered, new_count=len(ordered), created_at=T0)


def _offsets(frames: list[Frame]) -> list[float]:
    return [round(f.ts - T0, 1) for f in frames]


def test_static_scene_costs_one_image_the_newest() -> None:
    scene = Scene(width=640, height=360, seed=21)
    frames = [_frame(scene, t) for t in range(8)]
    assert _offsets(select_keyframes(frames, KeyframeSettings())) == [7.0]


def test_a_change_in_the_window_is_covered_not_just_the_last_frames() -> None:
    scene = Scene(width=640, height=360, seed=22, moving=appears_at(4.0, 640, 360))
    frames = [_frame(scene, t * 0.5) for t in range(20)]  # 0..9.5 s; the object walks in at 4-5 s and stays
    chosen = select_keyframes(frames, KeyframeSettings(max_frames=4))
    offsets = _offsets(chosen)
    assert offsets[0] == 9.5  # now
    assert sum(1 for t in offsets if 4.0 <= t < 5.0) >= 2  # the walk-in, where the change is
    assert not set(offsets) & {7.5, 8.0, 8.5, 9.0}  # not the last K: they repeat the newest
    # and no near-duplicates: every pair of chosen frames differs
    assert len(offsets) < 4


def test_a_moving_scene_fills_k_frames_spread_over_time() -> None:
    scene = Scene(width=640, height=360, seed=23, moving=moving_square(640, 360, period_s=8.0))
    frames = [_frame(scene, t * 0.5) for t in range(16)]
    offsets = sorted(_offsets(select_keyframes(frames, KeyframeSettings(max_frames=4))))
    assert len(offsets) == 4 and offsets[-1] == 7.5
    assert offsets[0] <= 2.0  # reaches back to the start of the window


def test_every_camera_of_the_zone_is_shown_now() -> None:
    hall, door = Scene(width=320, height=240, seed=24), Scene(width=320, height=240, seed=25)
    frames = sorted([_frame(hall, t, source="hall") for t in range(5)] +
                    [_frame(door, t + 0.2, source="door") for t in range(5)], key=lambda f: f.ts)
    chosen = select_keyframes(frames, KeyframeSettings(max_frames=4))
    assert {(f.source, round(f.ts - T0, 1)) for f in chosen} == {("hall", 4.0), ("door", 4.2)}


def test_token_budget_drops_the_least_important_frames() -> None:
    scene = Scene(width=640, height=360, seed=26, moving=moving_square(640, 360))
    frames = [_frame(scene, t * 0.5) for t in range(10)]
    settings = KeyframeSettings(max_frames=4, longest_side=512, max_image_tokens=2 * 255 + 100)
    assert image_tokens(frames[0], settings) == 85 + 170  # 640x360 -> 512x288: one tile
    window = _window(list(frames))
    images = choose_images(window, settings)
    assert len(images) == 2
    assert images[-1][0] is frames[-1]  # the newest is always kept
    fixed = KeyframeSettings(max_frames=4, estimate="fixed", tokens_per_image=1000, max_image_tokens=3000)
    assert len(choose_images(window, fixed)) == 3


def test_data_urls_are_downscaled_only_when_larger() -> None:
    scene = Scene(width=640, height=360, seed=27)
    frame = _frame(scene, 0.0)
    same = data_url(frame, KeyframeSettings(longest_side=768))
    assert same == "data:image/jpeg;base64," + base64.b64encode(frame.jpeg).decode()
    small = data_url(frame, KeyframeSettings(longest_side=320))
    image = cv2.imdecode(np.frombuffer(base64.b64decode(small.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (180, 320, 3)


def test_undecodable_frames_do_not_break_selection() -> None:
    scene = Scene(width=320, height=240, seed=28)
    good = _frame(scene, 0.0)
    broken = Frame(source="cam", ts=T0 + 1, jpeg=b"garbage", width=320, height=240)
    assert len(select_keyframes([good, broken], KeyframeSettings())) == 2
    assert select_keyframes([], KeyframeSettings()) == []


def _entry(t: float, behaviour: str) -> LogEntry:
    return LogEntry(source="kitchen-log", ts=T0 + t, text=behaviour, behaviour=behaviour, location="kitchen")


async def test_prompt_to_a_scripted_vlm_server_holds_the_frames_and_logs_in_time_order(
    openai_server: ScriptedOpenAIServer,
) -> None:
    scene = Scene(width=640, height=360, seed=29, moving=appears_at(3.0, 640, 360))
    frames = [_frame(scene, t, source="kitchen-cam") for t in (0.0, 1.0, 2.0, 3.0, 3.5, 4.0, 5.0)]
    entries = [_entry(0.5, "puts a pan of oil on the stove"), _entry(2.5, "turns the burner to high"),
               _entry(4.5, "walks away to answer the phone")]
    window = _window([*frames, *entries])
    images = choose_images(window, KeyframeSettings(max_frames=3))
    assert 2 <= len(images) <= 3 and images[-1][0] is frames[-1]

    openai_server.push(reply(DANGER))
    backend = OpenAICompatBackend(ModelSettings(backend="openai", base_url=openai_server.base_url,
                                                model="scripted-vlm", accepts_images=True, max_retries=0))
    await backend.start()
    try:
        request = ModelRequest(messages=build_messages(window, images=images), json_schema=ASSESSMENT_SCHEMA)
        assert request.has_images
        answer = await backend.complete(request)
    finally:
        await backend.close()
    assert json.loads(answer.text)["danger"] is True

    sent: list[dict[str, Any]] = openai_server.requests[0]["messages"][1]["content"]
    urls = [part["image_url"]["url"] for part in sent if part["type"] == "image_url"]
    assert urls == [url for _, url in images]
    # Walk the parts in order: every frame label and log line, with its time, must come in time order.
    timeline: list[tuple[float, str]] = []
    for part in sent:
        if part["type"] != "text":
            continue
        for line in part["text"].splitlines():
            if line.startswith("{"):
                item = json.loads(line)
                timeline.append((_parse_time(item["time"]), item.get("frame") or item.get("behaviour", "")))
    assert [t for t, _ in timeline] == sorted(t for t, _ in timeline)
    behaviours = [what for _, what in timeline if what != "image follows"]
    assert behaviours == [e.behaviour for e in entries]
    assert sum(1 for _, what in timeline if what == "image follows") == len(images)
    # each image part directly follows its label
    for index, part in enumerate(sent):
        if part["type"] == "image_url":
            assert json.loads(sent[index - 1]["text"])["frame"] == "image follows"


def _parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").timestamp()


def test_window_without_frames_sends_no_images() -> None:
    window = _window([_entry(0.0, "stirs the soup")])
    assert choose_images(window, KeyframeSettings()) == []


async def test_off_loop_variant_gives_the_same_choice() -> None:
    scene = Scene(width=1280, height=720, seed=30, moving=moving_square(1280, 720))
    window = _window([_frame(scene, t * 0.5) for t in range(6)])
    settings = KeyframeSettings(max_frames=3, longest_side=640)
    off_loop = await choose_images_off_loop(window, settings)
    assert [f for f, _ in off_loop] == [f for f, _ in choose_images(window, settings)]
    assert len(off_loop) == 3 and all(url.startswith("data:image/jpeg;base64,") for _, url in off_loop)
    assert await choose_images_off_loop(_window([_entry(0.0, "reads")]), settings) == []


def test_only_the_chosen_keyframes_are_ever_encoded() -> None:
    """Frames arrive as pixels; choosing keyframes encodes the chosen ones, once, and never the rest."""
    scene = Scene(width=640, height=360, seed=31, moving=moving_square(640, 360))  # a camera's size: sent as is
    frames = [Frame(source="cam", ts=T0 + t * 0.5, image=scene.frame(t * 0.5), width=640, height=360)
              for t in range(8)]
    assert not any(frame.encoded for frame in frames)
    chosen = [frame for frame, _ in choose_images(_window(list(frames)), KeyframeSettings(max_frames=3))]
    assert len(chosen) == 3
    assert [frame.encoded for frame in frames] == [frame in chosen for frame in frames]
    first = chosen[0].jpeg
    assert chosen[0].jpeg is first  # kept: a frame sent by two windows is encoded once
    decoded = cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (360, 640, 3)


def test_a_restamped_frame_shares_its_pixels_and_encoding() -> None:
    image = Scene(width=320, height=240, seed=32).frame(0.0)
    frame = Frame(source="cam", ts=T0, image=image, width=320, height=240)
    jpeg = frame.jpeg
    moved = frame.restamped(T0 + 5.0)
    assert moved.ts == T0 + 5.0 and frame.ts == T0
    assert moved.encoded and moved.jpeg is jpeg and moved.image is image
    assert moved.source == frame.source and (moved.width, moved.height) == (320, 240)
