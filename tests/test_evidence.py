"""Evidence: each warning carries the observations judged and the keyframes as sent, kept in the state dir."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path

from monitor.alerts import AlertEvent, AlertManager, AlertSettings
from monitor.assess.settings import KeyframeSettings
from monitor.assess.single import SingleCall
from monitor.backends import BackendWrapper, ModelReply, ModelRequest
from monitor.backends.scripted import ScriptedBackend
from monitor.backends.settings import ModelSettings
from monitor.evidence import (
    EvidenceFrame,
    EvidenceKeeper,
    EvidenceSettings,
    EvidenceStore,
    WithEvidence,
    jpeg_of,
    request_images,
)
from monitor.mqtt.settings import MqttSettings
from monitor.observer import Settled
from monitor.sinks.ha_discovery import ZoneLabel
from monitor.sinks.mqtt import MqttSink
from monitor.windows import Window
from sensors.types import Frame, LogEntry
from tests.support.media import natural_image
from tests.support.mosquitto import Mosquitto, Recorder, alert_event, retained

DANGER = {"danger": True, "severity": "critical", "hazard": "fall from ladder", "reason": "Leaning out.",
          "advice": "Climb down.", "evidence": ["leans out"], "confidence": 0.9}


class Sent(BackendWrapper):
    """Keeps the requests as the model got them."""

    def __init__(self, inner: ScriptedBackend) -> None:
        super().__init__(inner)
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        return await self.inner.complete(request)


class NoFollowUp:
    def __init__(self) -> None:
        self.wake = asyncio.Event()

    def annotate(self, event: AlertEvent) -> AlertEvent:
        return event

    async def step(self) -> list[AlertEvent]:
        return []


def frame(seed: int, ts: float) -> Frame:
    import cv2
    import numpy as np

    # Larger than longest_side: what is sent is a re-encoded, smaller JPEG, not the camera's.
    ok, data = cv2.imencode(".jpg", natural_image(np.random.default_rng(seed), 600, 1000))
    assert ok
    return Frame(source="cam", ts=ts, width=1000, height=600, jpeg=bytes(data))


def window(zone: str, n: int) -> Window:
    now = time.time()
    observations = (LogEntry(source="log", ts=now, text='Sam climbs the "ladder" <b>and</b> leans out'),
                    frame(1, now), frame(2, now + 1))
    return Window(id=f"{zone}-w{n}", zone=zone, observations=observations, new_count=3, created_at=now)


async def decide(tmp_path: Path, zone: str, *, private: bool = False) -> tuple[AlertEvent, Sent, EvidenceKeeper]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": DANGER}))
    scripted = ScriptedBackend(ModelSettings(backend="scripted", script=script))
    await scripted.start()
    sent = Sent(scripted)
    settings = EvidenceSettings()
    keeper = EvidenceKeeper(settings, store=EvidenceStore(tmp_path / "evidence", settings),
                            private_zones=[zone] if private else [])
    assessor = SingleCall(keeper.capture(sent), keyframes=KeyframeSettings(longest_side=320))
    alerts = AlertManager(AlertSettings())
    follow = WithEvidence(NoFollowUp(), keeper, alerts)
    win = window(zone, 1)
    event = alerts.decide(win, await assessor.assess(win))
    assert event is not None
    event = follow.annotate(event)
    keeper.close()
    return event, sent, keeper


async def test_the_event_carries_the_frames_exactly_as_sent_and_they_are_kept_with_the_alert(tmp_path: Path) -> None:
    event, sent, _ = await decide(tmp_path, "workshop")
    as_sent = [jpeg_of(url) for url in request_images(sent.requests[0])]
    assert len(as_sent) == 2 and all(as_sent)
    assert [f.jpeg for f in event.frames] == as_sent
    payload = event.to_json()
    assert payload["evidence_frames"] == [f.id for f in event.frames]
    assert payload["evidence_frame"] == event.frames[-1].id
    assert payload["observations"][0].endswith('log: "Sam climbs the \\"ladder\\" <b>and</b> leans out"')
    assert payload["observations"][1].endswith("cam: frame")
    folder = tmp_path / "evidence" / event.alert.id
    for f in event.frames:
        assert (folder / f"{f.id}.jpg").read_bytes() == f.jpeg
    assert json.loads((folder / "alert.json").read_text())["evidence_frame"] == event.frames[-1].id


async def test_a_private_zone_keeps_and_carries_no_frame(tmp_path: Path) -> None:
    event, sent, _ = await decide(tmp_path, "bathroom", private=True)
    assert request_images(sent.requests[0])  # the model still sees them; nobody keeps them
    assert event.frames == () and event.to_json()["evidence_frame"] is None
    assert not (tmp_path / "evidence").exists()


def test_retention_removes_old_alerts_then_the_oldest_beyond_the_size(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence", EvidenceSettings(max_age_days=1, max_mb=0.0015))
    now = time.time()
    for n, age_days in enumerate((3, 0.5, 0.1)):
        store.keep({"id": f"a{n}"}, [EvidenceFrame.of(bytes([n]) * 1000)])
        os.utime(tmp_path / "evidence" / f"a{n}", (now - age_days * 86400, now - age_days * 86400))
    assert store.enforce(now) == 2  # a0 too old; a1 the oldest of those left over 1.5 kB
    assert sorted(p.name for p in (tmp_path / "evidence").iterdir()) == ["a2"]
    assert store.read("a2", EvidenceFrame.of(bytes([2]) * 1000).id, 10_000) == bytes([2]) * 1000
    assert store.read("../a2", "x", 10_000) is None


async def test_mqtt_keeps_the_latest_frame_retained_per_camera_zone_and_clears_it_when_the_zone_turns_private(
        broker: Mosquitto, tmp_path: Path) -> None:
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                            reconnect_min_s=0.05, reconnect_max_s=0.5, close_timeout_s=3.0)
    p, state = settings.topic_prefix, tmp_path / "state"
    sink = MqttSink(settings, zones=[ZoneLabel("workshop", evidence=True), ZoneLabel("hall")], state_dir=state)
    await sink.start()
    try:
        for n, zone in ((1, "workshop"), (2, "workshop"), (3, "hall")):
            shot = EvidenceFrame.of(bytes([n]) * 5000)
            event = alert_event(zone, n)
            event = replace(event, alert=replace(event.alert, frames=(shot.id,)), frames=(shot,))
            async with Recorder(broker, f"{p}/{zone}/last_warning") as rec:
                await sink.publish(event)
                await rec.wait_topic(f"{p}/{zone}/last_warning")
    finally:
        await sink.close()
    kept = await retained(broker, f"{p}/+/evidence")
    assert {topic: m.payload for topic, m in kept.items()} == {f"{p}/workshop/evidence": bytes([2]) * 5000}

    private = MqttSink(settings, zones=[ZoneLabel("workshop"), ZoneLabel("hall")], state_dir=state)
    await private.start()
    try:
        for _ in range(100):
            if not await retained(broker, f"{p}/+/evidence", quiet_s=0.1):
                break
        assert await retained(broker, f"{p}/+/evidence") == {}
    finally:
        await private.close()


async def test_a_window_without_an_alert_lets_go_of_its_images_when_it_settles(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": {"danger": False, "severity": "info", "confidence": 0.5}}))
    scripted = ScriptedBackend(ModelSettings(backend="scripted", script=script))
    await scripted.start()
    keeper = EvidenceKeeper(EvidenceSettings(), store=None)
    assessor = SingleCall(keeper.capture(scripted), keyframes=KeyframeSettings(longest_side=320))
    win = window("hall", 1)
    verdict = await assessor.assess(win)
    assert list(keeper.images) == [win.id]  # held while the window is in flight
    keeper.window_settled(Settled(win, verdict, None, None, 0.1))
    assert not keeper.images
    keeper.close()
