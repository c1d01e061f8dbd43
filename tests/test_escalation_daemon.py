"""Reaching the person end to end: the real daemon (subprocess), the scripted model, a real mosquitto, and the
speaker sink rendering its warnings to WAV files with espeak-ng."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, append, responder, wait_until, write_config
from tests.support.mosquitto import Mosquitto, Recorder, publish, retained
from tests.support.openai_server import ScriptedOpenAIServer

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed: make system-deps")


@pytest.fixture
def model() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(responder=responder()) as server:
        yield server


def reach_config(tmp_path: Path, model: ScriptedOpenAIServer, broker: Mosquitto, prefix: str) -> Path:
    for name in ("garage", "kitchen"):
        (tmp_path / f"{name}.jsonl").write_text("")
    return write_config(tmp_path / "monitor.toml", base_url=model.base_url, alerts=tmp_path / "alerts.jsonl",
                        logs={"garage": tmp_path / "garage.jsonl", "kitchen": tmp_path / "kitchen.jsonl"}, extra=f"""
[sinks.speaker]
enabled = true
command = ["espeak-ng", "-v", "{{voice}}", "-s", "{{rate}}", "-w", "{{wav}}", "{{text}}"]
wav_dir = "speech"

[escalation]
enabled = true
confirmed_within_s = 5
max_per_alert = 10
max_per_hour = 100

[escalation.warning]
escalate_after_s = 1.5
caregivers_from_level = 2

[[zones]]
id = "garage"
quiet_hours = ["00:00-24:00"]  # silences info only: this zone's warnings must still escalate

[mqtt]
host = "{broker.host}"
port = {broker.port}
topic_prefix = "{prefix}"
reconnect_min_s = 0.05
close_timeout_s = 3
""")


async def keep_seeing(log: Path, text: str) -> None:
    """The hazard persists: the same observation every 0.4 s (each one is assessed and confirms the alert)."""
    while True:
        await asyncio.to_thread(append, log, text)
        await asyncio.sleep(0.4)


def events(rec: Recorder, prefix: str) -> list[dict[str, Any]]:
    return [m.json() for m in rec.on(f"{prefix}/alerts")]


def wavs(folder: Path, alert_id: str) -> list[Path]:
    return sorted(folder.glob(f"*-{alert_id}.wav"))


async def test_a_persisting_hazard_escalates_to_caregivers_until_acknowledged_and_is_said_aloud(
        tmp_path: Path, model: ScriptedOpenAIServer, broker: Mosquitto) -> None:
    """The whole issue through `monitor run`: level 1 and 2 escalations (caregivers on `<prefix>/escalations`),
    an MQTT ack that stops them while updates go on, a CLI ack, HA discovery of the button and the event entity,
    the counters in /metrics, and real speech in WAV files that stops for the acknowledged alert."""
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    config = reach_config(tmp_path, model, broker, prefix)
    speech = tmp_path / "speech"
    async with Recorder(broker, f"{prefix}/escalations", f"{prefix}/alerts") as rec:
        daemon = Daemon(config, tmp_path)
        await asyncio.to_thread(daemon.start)
        feeder = asyncio.create_task(keep_seeing(tmp_path / "garage.jsonl", "Sam climbs the ladder and leans out"))
        try:
            # 1. The ladder warning persists: level 1 (the person), then level 2 (caregivers).
            await rec.wait_for(lambda: bool(rec.on(f"{prefix}/escalations")), timeout=30, what="caregivers")
            caregivers = rec.on(f"{prefix}/escalations")[0].json()
            garage_id = caregivers["alert_id"]
            assert (caregivers["zone"], caregivers["escalation_level"]) == ("garage", 2)
            assert caregivers["severity"] == "critical"  # warning raised one step by the first escalation
            levels = [e["escalation_level"] for e in events(rec, prefix) if e["type"] == "escalate"]
            assert levels[:2] == [1, 2]

            # 2. A caregiver acknowledges over MQTT: escalation stops, updates go on.
            await publish(broker, f"{prefix}/garage/ack", '{"by": "carer"}')
            await rec.wait_for(lambda: any(e["type"] == "ack" for e in events(rec, prefix)), what="ack event")
            acked_at = next(i for i, e in enumerate(events(rec, prefix)) if e["type"] == "ack")
            ack = events(rec, prefix)[acked_at]
            assert (ack["id"], ack["acknowledged_by"]) == (garage_id, "carer") and ack["acknowledged_at"]
            await asyncio.sleep(2.0)  # the speaker finishes what it was saying when the ack came
            said_before = len(wavs(speech, garage_id))
            await asyncio.sleep(4.0)  # without the ack: two more escalations in this time
            after = events(rec, prefix)[acked_at + 1:]
            assert not [e for e in after if e["type"] == "escalate"]
            updates = [e for e in after if e["type"] == "update"]
            assert updates and all(e["acknowledged_by"] == "carer" for e in updates)
            assert len(wavs(speech, garage_id)) == said_before >= 3  # the new alert and two escalations

            # 3. Someone at the box acknowledges the kitchen from the command line.
            await asyncio.to_thread(append, tmp_path / "kitchen.jsonl", "Sam leaves the stove on with oil in the pan")
            await rec.wait_for(lambda: any(e["zone"] == "kitchen" for e in events(rec, prefix)), what="kitchen")
            cli = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "monitor", "ack", "--zone", "kitchen", "--config", str(config)],
                cwd=tmp_path, capture_output=True, text=True, timeout=30)
            assert cli.returncode == 0, cli.stderr
            assert cli.stdout.startswith("Acknowledged 1 alert in zone kitchen: ")
            await rec.wait_for(lambda: any(e["type"] == "ack" and e["zone"] == "kitchen" for e in events(rec, prefix)),
                               what="kitchen ack event")

            # 4. The counters, as Prometheus sees them.
            status, body = await asyncio.to_thread(daemon.http, "/metrics")
            metrics = body.decode()
            assert status == 200
            assert 'monitor_escalations_total{audience="caregivers"}' in metrics
            assert 'monitor_acknowledgements_total{via="mqtt"} 1.0' in metrics
            assert 'monitor_acknowledgements_total{via="cli"} 1.0' in metrics
            assert 'monitor_alerts_total{severity="critical",type="escalate"}' in metrics
            spoken = next(line for line in metrics.splitlines()
                          if line.startswith('monitor_speech_messages_total{outcome="spoken"}'))
            assert float(spoken.split()[-1]) >= 3
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            daemon.signal(signal.SIGTERM)
            code = await asyncio.to_thread(daemon.wait, 30)
            daemon.kill()
    assert code == 0

    # 5. Home Assistant discovery has the acknowledge buttons and the caregivers' event entity.
    node = prefix.replace("/", "_")
    configs = await retained(broker, f"homeassistant/+/{node}/+/config")
    assert configs[f"homeassistant/button/{node}/garage_acknowledge/config"].json()["command_topic"] == \
        f"{prefix}/garage/ack"
    assert configs[f"homeassistant/event/{node}/escalations/config"].json()["state_topic"] == f"{prefix}/escalations"

    # 6. What was said is real audio, and the JSONL file has the same story as MQTT.
    for path in speech.glob("*.wav"):
        with wave.open(str(path)) as audio:
            assert audio.getframerate() == 22050 and 0.5 < audio.getnframes() / 22050 < 20
    lines = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert {"new", "update", "escalate", "ack", "end"} >= {e["type"] for e in lines} >= {"new", "escalate", "ack"}
    assert all("escalation_level" in e and "acknowledged_at" in e for e in lines)


def test_a_missing_speech_engine_stops_the_start_with_one_line_naming_the_setting(
        tmp_path: Path, model: ScriptedOpenAIServer) -> None:
    """`monitor run` exits 1 with the sink's message (not a traceback); optional = true runs without speech."""
    (tmp_path / "garage.jsonl").write_text("")
    speaker = '\n[sinks.speaker]\nenabled = true\ncommand = ["no-such-tts-engine", "{text}"]\n'
    config = write_config(tmp_path / "monitor.toml", base_url=model.base_url, alerts=tmp_path / "alerts.jsonl",
                          logs={"garage": tmp_path / "garage.jsonl"}, extra=speaker)
    daemon = Daemon(config, tmp_path)
    run = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config)], cwd=tmp_path,
                         env=daemon.env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1].startswith(
        "error: sinks.speaker.command: 'no-such-tts-engine' not found or not executable")
    assert "Traceback" not in run.stderr

    config.write_text(config.read_text() + "optional = true\n")
    with Daemon(config, tmp_path) as running:
        (problem,) = running.find("speaker unavailable; warnings will not be said aloud")
        assert "no-such-tts-engine" in problem["problem"]
        append(tmp_path / "garage.jsonl", "Sam climbs the ladder and leans out")
        running.wait_log("window assessed", alert="new")
        unavailable = 'monitor_speech_messages_total{outcome="unavailable"} 1.0'
        wait_until(lambda: unavailable in running.http("/metrics")[1].decode(), what="speech counted unavailable")
