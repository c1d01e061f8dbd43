"""The MQTT topic contract, message by message, against a real mosquitto on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from monitor.mqtt.settings import MqttSettings
from monitor.sinks.mqtt import MqttSink
from monitor.stats import Stats
from tests.support.mosquitto import Mosquitto, Recorder, alert_event, retained

REPO = Path(__file__).resolve().parents[1]


def fast_settings(broker: Mosquitto, **overrides: object) -> MqttSettings:
    values: dict[str, object] = {
        "host": broker.host, "port": broker.port, "topic_prefix": f"pm_test/{uuid.uuid4().hex[:8]}",
        "reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "close_timeout_s": 3.0, "publish_timeout_s": 3.0,
    }
    values.update(overrides)
    return MqttSettings.model_validate(values)


def iso(epoch_s: float) -> str:
    """ISO 8601 with milliseconds, rounded (not truncated) like the `_epoch` values beside it."""
    ms = round(epoch_s * 1000)
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000).isoformat(
        timespec="milliseconds")


async def test_contract_message_by_message(broker: Mosquitto, tmp_path: Path) -> None:
    settings = fast_settings(broker, stats_interval_s=0.2)
    p = settings.topic_prefix
    stats = Stats(windows_assessed=3, prompt_tokens=500)
    sink = MqttSink(settings, zones=["kitchen"], state_dir=tmp_path / "state",
                    stats=lambda: {**stats.to_json(), "sources": {"kitchen-log": "online"}})
    async with Recorder(broker, f"{p}/#") as rec:
        await sink.start()
        await rec.wait_topic(f"{p}/available", b"online")
        unknown = (await rec.wait_topic(f"{p}/kitchen/state")).json()
        assert (unknown["state"], unknown["reason"]) == ("unknown", "no observations since start")
        assert datetime.fromisoformat(unknown["since"]).tzinfo is not None
        assert unknown["since"] == iso(unknown["since_epoch"])

        new = alert_event("kitchen", 1, severity="critical")
        await sink.publish(new)
        message = await rec.wait_topic(f"{p}/alerts")
        body = message.json()
        assert (message.qos, message.retain) == (1, False)
        assert body["type"] == "new"
        assert body["id"] == new.alert.id and body["message_id"] == new.message_id
        for key in ("zone", "severity", "hazard", "reason", "advice", "evidence", "model", "timings"):
            assert key in body, key
        assert (body["zone"], body["severity"], body["model"]) == ("kitchen", "critical", "scripted-vlm")
        assert body["timings"] == {"model_latency_s": 0.25}
        # Times are ISO 8601; the epoch seconds stay under <key>_epoch.
        assert (body["at"], body["at_epoch"]) == (iso(new.at), new.at)
        assert (body["created_at"], body["created_at_epoch"]) == (iso(new.alert.created_at), new.alert.created_at)
        assert body["updated_at"] == iso(new.alert.updated_at)

        event = (await rec.wait_topic(f"{p}/kitchen/event")).json()
        assert event["event_type"] == "critical" and event["alert_id"] == new.alert.id
        assert (event["at"], event["at_epoch"]) == (iso(new.at), new.at)
        await rec.wait_for(lambda: (m := rec.last(f"{p}/kitchen/state")) is not None
                           and m.json()["state"] == "hazard", what="hazard state")
        state = rec.last(f"{p}/kitchen/state")
        assert state is not None
        assert state.json() == {"state": "hazard", "reason": f"critical hazard: {new.alert.hazard}",
                                "hazard": new.alert.hazard, "severity": "critical", "alert_id": new.alert.id,
                                "since": iso(new.alert.created_at), "since_epoch": round(new.alert.created_at, 3),
                                "active_alerts": 1}
        await rec.wait_for(lambda: (m := rec.last(f"{p}/kitchen/last_warning")) is not None
                           and m.json()["active"], what="the warning in last_warning")
        last_warning = rec.last(f"{p}/kitchen/last_warning")
        assert last_warning is not None
        assert last_warning.json()["text"] == f"{new.alert.hazard}: Turn off the burner now."

        update = alert_event("kitchen", 1, kind="update", severity="critical", updates=1)
        end = alert_event("kitchen", 1, kind="end", severity="critical", updates=2)
        await sink.publish(update)
        await sink.publish(end)
        await rec.wait_for(lambda: len(rec.on(f"{p}/alerts")) == 3, what="update and end")
        alerts = [m.json() for m in rec.on(f"{p}/alerts")]
        assert [a["type"] for a in alerts] == ["new", "update", "end"]
        assert {a["id"] for a in alerts} == {new.alert.id}
        assert len({a["message_id"] for a in alerts}) == 3
        assert len(rec.on(f"{p}/kitchen/event")) == 1  # the HA event fires on new warnings only
        # The zone was never assessed (a sink on its own sees no windows): unknown again, not "clear".
        await rec.wait_for(lambda: (m := rec.last(f"{p}/kitchen/state")) is not None
                           and m.json()["state"] == "unknown", what="unknown once the alert ended")
        # The last-warning sensor clears when its alert ends.
        await rec.wait_for(lambda: (m := rec.last(f"{p}/kitchen/last_warning")) is not None
                           and m.json()["active"] is False and m.json()["text"] == "", what="last warning cleared")

        stats_message = (await rec.wait_topic(f"{p}/stats")).json()
        assert stats_message["windows_assessed"] == 3
        assert stats_message["tokens"] == {"prompt": 500, "completion": 0}
        assert stats_message["sources"] == {"kitchen-log": "online"}
        assert stats_message["mqtt"]["connected"] is True
        assert stats_message["at"] == iso(stats_message["at_epoch"])
        assert stats_message["zones"]["kitchen"]["state"] in ("unknown", "hazard")
        await rec.wait_for(lambda: len(rec.on(f"{p}/stats")) >= 2, what="a second periodic stats message")

        kept = await retained(broker, f"{p}/#")
        assert kept[f"{p}/available"].payload == b"online"
        assert kept[f"{p}/kitchen/state"].json()["state"] == "unknown"
        assert kept[f"{p}/kitchen/last_warning"].json()["text"] == ""
        assert kept[f"{p}/kitchen/monitoring/state"].payload == b"ON"
        assert kept[f"{p}/kitchen/sensitivity/state"].payload == b"0.5"
        assert kept[f"{p}/stats"].json()["mqtt"]["connected"] is True  # retained for HA's diagnostic sensors
        assert f"{p}/alerts" not in kept and f"{p}/kitchen/event" not in kept

        await sink.close()
        await rec.wait_topic(f"{p}/available", b"offline")
    kept = await retained(broker, f"{p}/available")
    assert kept[f"{p}/available"].payload == b"offline"


async def test_a_rebuilt_sink_keeps_reporting_open_alerts(broker: Mosquitto, tmp_path: Path) -> None:
    settings = fast_settings(broker)
    p = settings.topic_prefix
    open_alert = alert_event("kitchen", 3, severity="warning").alert
    sink = MqttSink(settings, zones=["kitchen", "garage"], state_dir=tmp_path / "state")
    sink.restore_open_alerts([open_alert])
    async with Recorder(broker, f"{p}/+/state") as rec:
        await sink.start()
        kitchen = await rec.wait_topic(f"{p}/kitchen/state")
        garage = await rec.wait_topic(f"{p}/garage/state")
        assert kitchen.json()["alert_id"] == open_alert.id and kitchen.json()["state"] == "hazard"
        assert garage.json()["state"] == "unknown"
        await sink.publish(alert_event("kitchen", 3, kind="end", updates=1))
        await rec.wait_for(lambda: (m := rec.last(f"{p}/kitchen/state")) is not None
                           and "alert_id" not in m.json(), what="the kitchen's alert closed")
        await sink.close()


_SINK_SCRIPT = """
import asyncio, sys
from pathlib import Path
from monitor.sinks.mqtt import MqttSink
from monitor.mqtt.settings import MqttSettings
from tests.support.mosquitto import alert_event

async def main() -> None:
    settings = MqttSettings.model_validate_json(sys.argv[1])
    sink = MqttSink(settings, zones=["kitchen"], state_dir=Path(sys.argv[2]))
    await sink.start()
    for n in range(int(sys.argv[3])):
        await sink.publish(alert_event("kitchen", n))
    print("QUEUED", flush=True)
    if sys.argv[4] == "connect":
        await sink.wait_connected()
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def spawn_sink(settings: MqttSettings, state_dir: Path, *, alerts: int, connect: bool) -> subprocess.Popen[str]:
    """The monitor's sink in its own process, so the test can SIGKILL it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _SINK_SCRIPT, settings.model_dump_json(), str(state_dir), str(alerts),
         "connect" if connect else "queue"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return process


def reap(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


async def wait_line(process: subprocess.Popen[str], marker: str, timeout: float = 30.0) -> None:
    assert process.stdout is not None
    stdout = process.stdout
    seen: list[str] = []

    def read() -> None:
        for line in stdout:
            seen.append(line)
            if line.strip() == marker:
                return
        raise AssertionError(f"sink process ended before {marker}: {''.join(seen)[-3000:]}")

    async with asyncio.timeout(timeout):
        await asyncio.to_thread(read)


async def test_last_will_marks_offline_when_the_monitor_is_killed(broker: Mosquitto, tmp_path: Path) -> None:
    settings = fast_settings(broker)
    p = settings.topic_prefix
    async with Recorder(broker, f"{p}/available") as rec:
        process = spawn_sink(settings, tmp_path / "state", alerts=0, connect=True)
        try:
            await wait_line(process, "READY")
            await rec.wait_topic(f"{p}/available", b"online")
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait, 10)
        finally:
            reap(process)
        assert process.returncode == -signal.SIGKILL
        await rec.wait_topic(f"{p}/available", b"offline")
    assert (await retained(broker, f"{p}/available"))[f"{p}/available"].payload == b"offline"


async def test_messages_of_a_killed_monitor_go_out_first_and_in_order(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")  # not started: the first monitor cannot deliver
    settings = fast_settings(broker)
    p = settings.topic_prefix
    state = tmp_path / "state"
    process = spawn_sink(settings, state, alerts=5, connect=False)
    try:
        await wait_line(process, "QUEUED")  # publish() returned: the five alerts are committed to the outbox
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
    finally:
        reap(process)

    with broker:
        async with Recorder(broker, f"{p}/alerts") as rec:
            sink = MqttSink(settings, zones=["kitchen"], state_dir=state)
            await sink.start()
            await sink.publish(alert_event("kitchen", 99))
            await rec.wait_for(lambda: len(rec.messages) >= 6, what="five old alerts and one new")
            await sink.close()
        ids = [m.json()["id"] for m in rec.messages]
        assert ids == [f"alert{n:05d}" for n in (0, 1, 2, 3, 4, 99)]
