"""A camera and an activity log in one zone, through the real Pipeline, to a scripted VLM server on 127.0.0.1.

The assessor here does what SingleCall does once keyframes are wired into it:
choose the window's keyframes, build the prompt, send it over the real
OpenAI-compatible client.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from monitor.alerts import AlertManager, AlertSettings
from monitor.assess.keyframes import choose_images
from monitor.assess.prompt import ASSESSMENT_SCHEMA, build_messages
from monitor.assess.settings import KeyframeSettings
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import ModelRequest
from monitor.backends.openai_compat import OpenAICompatBackend
from monitor.backends.settings import ModelSettings
from monitor.pipeline import Pipeline
from monitor.windows import Window, WindowSettings
from sensors.camera import CameraSource
from sensors.camera_config import CameraSettings, GatingSettings
from sensors.types import Emit, LogEntry
from tests.support.media import Scene, appears_at, write_video
from tests.support.openai_server import ScriptedOpenAIServer


class _VisionCall:
    name = "single"

    def __init__(self, backend: OpenAICompatBackend, keyframes: KeyframeSettings) -> None:
        self.backend = backend
        self.keyframes = keyframes

    async def assess(self, window: Window) -> Verdict:
        images = choose_images(window, self.keyframes)
        request = ModelRequest(messages=build_messages(window, images=images), json_schema=ASSESSMENT_SCHEMA)
        reply = await self.backend.complete(request)
        return Verdict(assessment=Assessment.parse_reply(reply.text), model=reply.model, usage=reply.usage,
                       raw=reply.text)


class _KitchenLog:
    """Two activity entries, the second while the camera shows the change."""

    id = "kitchen-log"
    ended = False

    async def run(self, emit: Emit) -> None:
        await asyncio.sleep(0.3)
        await emit(LogEntry(source=self.id, ts=time.time(), text="heats oil in a pan",
                            behaviour="heats oil in a pan"))
        await asyncio.sleep(2.6)
        await emit(LogEntry(source=self.id, ts=time.time(), text="walks towards the stove with wet hands",
                            behaviour="walks towards the stove with wet hands"))


async def test_static_stretch_is_skipped_and_the_change_reaches_the_model_with_the_log(
    tmp_path: Path, openai_server: ScriptedOpenAIServer
) -> None:
    clip = write_video(tmp_path / "kitchen.mp4", Scene(width=640, height=360, seed=31,
                                                       moving=appears_at(10.0, 640, 360)), seconds=13, fps=10)
    camera = CameraSource(CameraSettings(id="kitchen-cam", zone="kitchen", kind="file", path=clip, speed=4,
                                         max_fps=4, gating=GatingSettings(heartbeat_s=None)))
    backend = OpenAICompatBackend(ModelSettings(backend="openai", base_url=openai_server.base_url,
                                                model="scripted-vlm", accepts_images=True, max_retries=0))
    await backend.start()
    try:
        pipeline = Pipeline(
            sources=[(camera, "kitchen"), (_KitchenLog(), "kitchen")],
            assessor=_VisionCall(backend, KeyframeSettings(max_frames=4)),
            sinks=[], windows=WindowSettings(min_interval_s=0.4, max_entries=40), alerts=AlertManager(AlertSettings()),
            exit_when_sources_end=True,
        )
        await asyncio.wait_for(pipeline.run(), 30)
    finally:
        await backend.close()

    health = camera.health()
    assert health.frames_sampled == 52  # 13 s at 4 fps
    assert health.gate["skipped"] >= 40  # the static 10 s
    assert health.gate["changed"] == health.frames_emitted <= 8
    # Far fewer model calls than sampled frames, yet the change and both log entries were seen.
    assert 2 <= openai_server.calls <= 8
    last = _parts(openai_server.requests[-1])
    images = [p for p in last if p["type"] == "image_url"]
    assert 2 <= len(images) <= 4  # the change is covered by several frames
    texts = "\n".join(p["text"] for p in last if p["type"] == "text")
    assert texts.index("heats oil in a pan") < texts.index("walks towards the stove")
    assert all(_has_image(r) for r in openai_server.requests if "frame" in json.dumps(r))


def _parts(request: dict[str, Any]) -> list[dict[str, Any]]:
    content = request["messages"][1]["content"]
    assert isinstance(content, list)
    return content


def _has_image(request: dict[str, Any]) -> bool:
    return any(p["type"] == "image_url" for p in _parts(request))
