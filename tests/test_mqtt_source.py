"""The MQTT activity-log source, alone and feeding the pipeline up to an MQTT alert."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.alerts import AlertManager, AlertSettings
from monitor.assess.single import SingleCall
from monitor.backends.scripted import ScriptedBackend
from monitor.backends.settings import ModelSettings
from monitor.control import ZoneControls
from monitor.mqtt.settings import MqttSettings
from monitor.pipeline import Pipeline
from monitor.sinks import running as sinks_running
from monitor.sinks.mqtt import MqttSink
from monitor.stats import Stats
from monitor.windows import WindowSettings
from sensors.mqtt_source import MqttActivitySource
from sensors.types import LogEntry, Observation
from tests.support.mosquitto import Mosquitto, Recorder, publish

DANGER = {"danger": True, "severity": "critical", "hazard": "grease fire", "reason": "A towel lies on the hot stove.",
          "advice": "Move the towel away from the burner.", "evidence": ["towel on the stove"], "confidence": 0.9}
SAFE = {"danger": False, "severity": "info", "hazard": "", "reason": "Nothing risky.", "advice": "",
        "evidence": [], "confidence": 0.8}


def settings_for(broker: Mosquitto) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                        reconnect_min_s=0.05, reconnect_max_s=0.3, close_timeout_s=3.0)


async def test_source_emits_entries_and_counts_bad_payloads(broker: Mosquitto) -> None:
    settings = settings_for(broker)
    topic = f"{settings.topic_prefix}/activity/kitchen"
    await publish(broker, topic, '{"text": "an old retained event"}', retain=True)
    source = MqttActivitySource("kitchen-mqtt", settings, topic=topic, clock=lambda: 1000.0)
    entries: list[Observation] = []
    arrived = asyncio.Event()

    async def emit(observation: Observation) -> None:
        entries.append(observation)
        arrived.set()

    with capture_logs() as logs:
        task = asyncio.create_task(source.run(emit))
        async with asyncio.timeout(10):
            await source.wait_subscribed()
        for payload in [
            '{"ts": 1700000000, "text": "puts the kettle on", "location": "kitchen"}',
            "not json at all",
            '["a", "list"]',
            '{"text": 42}',
            "",
            '{"text": "first of two"}\n{"ts": "2024-01-01T08:00:00", "text": "second of two", "actor": "Ann"}',
        ]:
            await publish(broker, topic, payload)
        async with asyncio.timeout(10):
            while len(entries) < 3:
                arrived.clear()
                await arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert source.ended
    assert all(isinstance(e, LogEntry) for e in entries)
    texts = [e.text for e in entries if isinstance(e, LogEntry)]
    assert texts == ["puts the kettle on", "first of two", "second of two"]
    kettle, first, second = (e for e in entries if isinstance(e, LogEntry))
    assert (kettle.source, kettle.ts, kettle.location) == ("kitchen-mqtt", 1700000000.0, "kitchen")
    assert first.ts == 1000.0  # no ts: the time it arrived
    assert second.actor == "Ann" and second.ts == 1704096000.0
    assert source.bad_messages == 4 and source.entries_emitted == 3 and source.skipped_retained == 1
    bad = [e for e in logs if e["event"] == "bad mqtt activity message"]
    assert len(bad) == 4 and all(e["log_level"] == "warning" and e["topic"] == topic for e in bad)


async def test_mqtt_activity_feeds_a_window_that_leads_to_an_mqtt_alert(broker: Mosquitto, tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"default": SAFE, "rules": [{"match": "towel", "reply": DANGER}]}))
    backend = ScriptedBackend(ModelSettings(backend="scripted", model="scripted-vlm", script=script))
    await backend.start()
    settings = settings_for(broker)
    p = settings.topic_prefix
    topic = f"{p}/activity/kitchen"
    controls = ZoneControls()
    source = MqttActivitySource("kitchen-mqtt", settings, topic=topic)
    sink = MqttSink(settings, zones=["kitchen"], state_dir=tmp_path / "state", controls=controls)
    stats = Stats()
    pipeline = Pipeline(
        sources=[(source, "kitchen")], assessor=SingleCall(backend), sinks=[sink],
        windows=WindowSettings(min_interval_s=0.0), alerts=AlertManager(AlertSettings(), controls=controls),
        observers=[stats], shutdown_timeout_s=2.0,
    )
    async with Recorder(broker, f"{p}/alerts", f"{p}/kitchen/state") as rec:
        running = asyncio.create_task(run_with_sinks(pipeline))
        async with asyncio.timeout(10):
            await source.wait_subscribed()
            await sink.wait_connected()
        await publish(broker, topic, json.dumps({"text": "Ann fills the kettle", "location": "kitchen"}))
        await publish(broker, topic, json.dumps({"text": "Ann drops a towel on the hot stove and leaves"}))
        alert = (await rec.wait_topic(f"{p}/alerts", timeout=15)).json()
        await rec.wait_for(lambda: any(m.json().get("state") == "hazard" for m in rec.on(f"{p}/kitchen/state")),
                           what="kitchen hazard state")
        pipeline.stop()
        async with asyncio.timeout(15):
            await running
    assert alert["type"] == "new" and alert["zone"] == "kitchen"
    assert (alert["severity"], alert["hazard"]) == ("critical", "grease fire")
    assert alert["sources"] == ["kitchen-mqtt"]
    assert backend.calls >= 1
    assert stats.windows_assessed >= 1


async def run_with_sinks(pipeline: Pipeline) -> None:
    async with sinks_running(pipeline.sinks):
        await pipeline.run()
