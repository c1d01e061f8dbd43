"""A smoke alarm heard, end to end: the real daemon with a microphone, the model server failing (HTTP 500)
throughout, a real mosquitto. The alert reaches every sink, the zone state names the alarm, and Home
Assistant's smoke sensor is announced for the zone the microphone hears."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.support import sounds
from tests.support.daemon import Daemon, alert_lines, write_config
from tests.support.mosquitto import Mosquitto, Recorder
from tests.support.openai_server import Action, ScriptedOpenAIServer


def smoke_alarm_wav(path: Path) -> Path:
    rng = np.random.default_rng(21)
    alarm, mask = sounds.alarm("T3", rng=rng, cycles=4, spread=0.1, echo_rt60_s=0.3)
    mixed = sounds.mix_at_snr(alarm, mask, sounds.household(len(alarm) / sounds.RATE + 1, rng), 5.0)
    return sounds.write_wav(path, mixed)


@pytest.mark.slow
async def test_a_smoke_alarm_heard_alerts_every_sink_with_the_model_down(broker: Mosquitto, tmp_path: Path) -> None:
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    wav = smoke_alarm_wav(tmp_path / "hall.wav")
    log, alerts = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    log.touch()
    extra = f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
topic_prefix = "{prefix}"
reconnect_min_s = 0.05
reconnect_max_s = 0.5
close_timeout_s = 3.0

[[microphones]]
id = "hall-mic"
zone = "hall"
kind = "file"
path = "{wav}"
speed = 1.0
"""
    with ScriptedOpenAIServer(default=Action(status=500)) as server:
        config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs={"kitchen": log},
                              alerts=alerts, extra=extra)
        async with Recorder(broker, "#") as rec:
            daemon = Daemon(config, tmp_path)
            try:
                await asyncio.to_thread(daemon.start)
                alert = (await rec.wait_topic(f"{prefix}/alerts", timeout=30)).json()
                await rec.wait_for(lambda: (m := rec.last(f"{prefix}/hall/state")) is not None
                                   and m.json().get("alarms") == ["smoke"], timeout=10, what="alarms in state")
            finally:
                daemon.signal(signal.SIGTERM)
                await asyncio.to_thread(daemon.wait, 15)
                daemon.kill()
        smoke_sensors = [m for m in rec.messages if m.topic.endswith("/hall_smoke/config") and m.payload]
        kitchen_sensors = [m for m in rec.messages if m.topic.endswith("/kitchen_smoke/config")]
    assert (alert["type"], alert["severity"], alert["hazard"], alert["zone"]) == (
        "new", "critical", "smoke alarm sounding", "hall")
    assert alert["strategy"] == "alarm_pattern" and alert["sources"] == ["hall-mic"]
    assert smoke_sensors and smoke_sensors[-1].json()["device_class"] == "smoke" and kitchen_sensors == []
    jsonl = [e for e in alert_lines(alerts) if e["type"] == "new"]
    assert [e["id"] for e in jsonl] == [alert["id"]]
    assert server.requests, "the model was asked (and failed): the alert did not wait for it"
    assert daemon.find("alarm pattern heard: alert without a model", zone="hall")
