"""Issue 10, sections 2 and 3, on the real daemon (a subprocess), a real mosquitto and a scripted model server:
a blind zone says so on MQTT, /readyz, /metrics and the stats topic; a restart never replays a stale hazard,
ends the alerts left open, and keeps the zone controls."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sensors.logs.position import position_file
from tests.support.daemon import Daemon, alert_lines, append, responder, wait_until, write_config
from tests.support.mosquitto import Mosquitto, Received, Recorder, publish, retained
from tests.support.openai_server import SAFE, Action, ScriptedOpenAIServer, reply


def config_for(tmp_path: Path, server: ScriptedOpenAIServer, broker: Mosquitto, prefix: str, *,
               blind_after_s: float = 120.0, attempt_timeout_s: float = 10.0) -> tuple[Path, Path, Path]:
    """A daemon tailing kitchen.jsonl into zone "kitchen", with MQTT (discovery on) and a JSONL sink."""
    log, alerts = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    log.touch()
    extra = f"""
[health]
blind_after_s = {blind_after_s}

[mqtt]
host = "{broker.host}"
port = {broker.port}
topic_prefix = "{prefix}"
reconnect_min_s = 0.05
reconnect_max_s = 0.5
close_timeout_s = 3.0
stats_interval_s = 0.5

[[zones]]
id = "kitchen"
name = "Kitchen"
area = "Kitchen"
"""
    config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs={"kitchen": log}, alerts=alerts,
                          attempt_timeout_s=attempt_timeout_s, extra=extra)
    return config, log, alerts


def state_is(rec: Recorder, topic: str, state: str) -> Callable[[], bool]:
    return lambda: (m := rec.last(topic)) is not None and bool(m.payload) and m.json()["state"] == state


def metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    _status, body = daemon.http("/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


FAILURES: dict[str, tuple[Action, str]] = {
    "http_500": (Action(status=500), "transient"),
    "http_429": (Action(status=429), "transient"),
    "http_401": (Action(status=401), "fatal"),
    "invalid_reply": (reply({"danger": "perhaps"}), "malformed"),  # the model answers, but not an Assessment
    "hang": (reply(SAFE, delay_s=8.0), ""),  # answers long after the zone counts as blind
}


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_a_zone_whose_model_fails_is_blind_on_mqtt_readyz_metrics_and_stats(
        failure: str, broker: Mosquitto, tmp_path: Path) -> None:
    """The bug of issue 10: with every model call failing, the zone said "clear" and /readyz said 200
    ("idle; probe GET .../models ok"). Now the zone is blind wherever a person looks, and recovers."""
    action, kind = FAILURES[failure]
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    state_topic = f"{prefix}/kitchen/state"
    with ScriptedOpenAIServer(default=action) as server:
        config, log, _alerts = config_for(tmp_path, server, broker, prefix, blind_after_s=1.5)
        async with Recorder(broker, f"{prefix}/#") as rec:
            daemon = Daemon(config, tmp_path)
            try:
                await asyncio.to_thread(daemon.start)
                await rec.wait_for(state_is(rec, state_topic, "unknown"), what="unknown before any assessment")
                append(log, "Sam puts a pan of oil on the stove")
                await rec.wait_for(state_is(rec, state_topic, "blind"), timeout=15, what="the zone blind")
                blind = rec.last(state_topic)
                assert blind is not None
                reason = blind.json()["reason"]
                assert reason.startswith("observations waited 1.5 s (health.blind_after_s)")
                assert f"last error: {kind}:" in reason if kind else "the model may be hanging" in reason

                status, ready = await asyncio.to_thread(daemon.json, "/readyz")
                assert status == 503 and "zones" in ready["failed"]
                assert ready["checks"]["zones"]["detail"]["kitchen"].startswith("blind: observations waited")
                if kind in ("transient", "fatal"):  # a failed call is a backend failure too; no probe is asked
                    assert "backend" in ready["failed"]
                    assert ready["checks"]["backend"]["detail"].startswith("the last model call failed")
                elif kind == "malformed":  # the model answers, so only the zone's state tells
                    assert ready["failed"] == ["zones"]
                assert await asyncio.to_thread(metric, daemon, "monitor_zone_state", zone="kitchen",
                                               state="blind") == 1
                assert await asyncio.to_thread(metric, daemon, "monitor_zone_state", zone="kitchen",
                                               state="clear") == 0
                await rec.wait_for(lambda: any(m.json()["zones"]["kitchen"]["state"] == "blind"
                                               for m in rec.on(f"{prefix}/stats")), what="stats with the blind zone")

                server.default = reply(SAFE)  # the model recovers
                append(log, "Sam turns the stove off")
                await rec.wait_for(state_is(rec, state_topic, "clear"), timeout=15, what="clear after recovery")
                status, ready = await asyncio.to_thread(daemon.json, "/readyz")
                assert status == 200, ready
                daemon.signal(signal.SIGTERM)
                assert await asyncio.to_thread(daemon.wait, 15) == 0
            finally:
                daemon.kill()
        states = [m.json()["state"] for m in rec.on(state_topic) if m.payload]
        assert "clear" not in states[: states.index("blind")]  # never "clear" while it could not see


async def test_a_zone_whose_every_source_is_offline_is_blind(broker: Mosquitto, tmp_path: Path) -> None:
    """A replayed log that has ended leaves its zone with no source online: nothing watches it any more, and the
    zone says so at once (it used to keep saying "clear")."""
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    replay = tmp_path / "hall.jsonl"
    replay.write_text(json.dumps({"ts": 1, "text": "Sam walks down the hall"}) + "\n")
    with ScriptedOpenAIServer(default=reply(SAFE)) as server:
        config = tmp_path / "monitor.toml"
        config.write_text(f"""
[model]
backend = "openai"
base_url = "{server.base_url}"
model = "scripted-vlm"
max_retries = 0

[[sources]]
id = "hall-replay"
kind = "replay"
path = "{replay}"
format = "jsonl"
interval_s = 1.0
zone = "hall"

[windows]
min_interval_s = 0.0

[sinks.stdout]
enabled = false

[mqtt]
host = "{broker.host}"
port = {broker.port}
topic_prefix = "{prefix}"
reconnect_min_s = 0.05
close_timeout_s = 3.0
""")
        async with Recorder(broker, f"{prefix}/hall/state") as rec:
            daemon = Daemon(config, tmp_path)
            try:
                await asyncio.to_thread(daemon.start)
                await rec.wait_for(state_is(rec, f"{prefix}/hall/state", "blind"), timeout=15, what="blind")
                blind = rec.last(f"{prefix}/hall/state")
                assert blind is not None
                assert blind.json()["reason"] == "every source of the zone is offline: hall-replay"
                status, ready = await asyncio.to_thread(daemon.json, "/readyz")
                assert status == 503 and ready["failed"] == ["zones"]
                # Its last observation was assessed as safe, yet nothing watches the hall now: blind, not clear.
                await asyncio.to_thread(daemon.wait_log, "window assessed", zone="hall")
                await asyncio.sleep(1.5)  # a few tracker refreshes
                assert rec.last(f"{prefix}/hall/state").json()["state"] == "blind"  # type: ignore[union-attr]
                daemon.signal(signal.SIGTERM)
                assert await asyncio.to_thread(daemon.wait, 15) == 0
            finally:
                daemon.kill()
        assert "clear" not in [m.json()["state"] for m in rec.messages if m.payload]


def _position_covers(state: Path, log: Path) -> bool:
    try:
        return bool(json.loads(position_file(state, "kitchen").read_text())["offset"] == log.stat().st_size)
    except (OSError, ValueError, KeyError):
        return False


def _after(messages: list[Received], start: int, topic: str) -> list[tuple[int, Received]]:
    return [(i, m) for i, m in enumerate(messages) if i >= start and m.topic == topic]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "clean-stop"])
async def test_a_restart_with_an_alert_open_sends_states_before_online_holds_the_alert_then_ends_it(
        stop: signal.Signals, broker: Mosquitto, tmp_path: Path) -> None:
    """Seen in a real Home Assistant: after a restart `online` came while the retained state still said
    `hazard`, and `clear` 60 ms later, so "hazard on" automations fired again; the open alert never ended.
    Now the alert is taken up again, held (never shown as a current hazard), and, not seen again within
    dedup_ttl_s after the restart, ends with the cause `restart` and the level it reached."""
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    state_topic, available = f"{prefix}/kitchen/state", f"{prefix}/available"
    with ScriptedOpenAIServer(responder=responder()) as server:
        config, log, alerts = config_for(tmp_path, server, broker, prefix)
        async with Recorder(broker, f"{prefix}/#") as rec:
            first = Daemon(config, tmp_path)
            try:
                await asyncio.to_thread(first.start)
                append(log, "Sam climbs the ladder and leans far out")
                await rec.wait_for(state_is(rec, state_topic, "hazard"), what="hazard")
                opened = (await rec.wait_topic(f"{prefix}/alerts")).json()  # the state may come first
                assert opened["type"] == "new" and opened["zone_name"] == "Kitchen"
                # The tail keeps its read position (docs/reliability.md, restarts and log positions): a crash
                # before it is on disk would read the ladder line again, which is not what this test is about.
                await asyncio.to_thread(wait_until, lambda: _position_covers(tmp_path / "state", log),
                                        what="the log position on disk")
                first.signal(stop)
                await asyncio.to_thread(first.wait, 15)
            finally:
                first.kill()
            await rec.wait_topic(available, b"offline")
            journal = json.loads((tmp_path / "state" / "open-alerts.json").read_text())
            assert [a["id"] for a in journal["alerts"]] == [opened["id"]]

            mark = len(rec.messages)
            second = Daemon(config, tmp_path, env={"MONITOR_ALERTS__DEDUP_TTL_S": "4"})
            try:
                await asyncio.to_thread(second.start)
                await rec.wait_for(lambda: _after(rec.messages, mark, available), what="online")
                await rec.wait_for(lambda: any(m.json()["type"] == "end" for _, m in
                                               _after(rec.messages, mark, f"{prefix}/alerts")), what="the end",
                                   timeout=20)
                second.signal(signal.SIGTERM)
                assert await asyncio.to_thread(second.wait, 15) == 0
            finally:
                second.kill()

    online_at = next(i for i, m in _after(rec.messages, mark, available) if m.payload == b"online")
    states = _after(rec.messages, mark, state_topic)
    before_online = [m.json() for i, m in states if i < online_at]
    assert before_online and before_online[-1]["state"] == "unknown", "no fresh state before online"
    assert before_online[-1]["reason"] == "no observations since start"
    assert all(m.json()["state"] != "hazard" for _, m in states), "a stale hazard was replayed"

    [end] = [m.json() for _, m in _after(rec.messages, mark, f"{prefix}/alerts") if m.json()["type"] == "end"]
    assert end["id"] == opened["id"] and end["hazard"] == opened["hazard"]
    assert end["reason"] == "monitor restarted" and end["end_cause"] == "restart"
    assert end["end_reason"].startswith("monitor restarted")
    assert end["message_id"] == f"{opened['id']}:end:1"
    ended = [a for a in alert_lines(alerts) if a["type"] == "end"]
    assert [(a["id"], a["end_cause"]) for a in ended] == [(opened["id"], "restart")]  # the JSONL sink too
    warning = next(m.json() for _, m in _after(rec.messages, mark, f"{prefix}/kitchen/last_warning"))
    assert warning["text"] == "" and warning["active"] is False  # no current warning after the restart
    assert json.loads((tmp_path / "state" / "open-alerts.json").read_text())["alerts"] == []


async def test_zone_controls_survive_a_restart(broker: Mosquitto, tmp_path: Path) -> None:
    """Today Home Assistant's slider silently jumped back to 0.5 and a switched-off zone came back on."""
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    with ScriptedOpenAIServer(responder=responder()) as server:
        config, _log, _alerts = config_for(tmp_path, server, broker, prefix)
        async with Recorder(broker, f"{prefix}/kitchen/#") as rec:
            first = Daemon(config, tmp_path)
            try:
                await asyncio.to_thread(first.start)
                await rec.wait_topic(f"{prefix}/kitchen/monitoring/state", b"ON")
                await publish(broker, f"{prefix}/kitchen/sensitivity/set", "0.8")
                await publish(broker, f"{prefix}/kitchen/monitoring/set", "OFF")
                await rec.wait_topic(f"{prefix}/kitchen/sensitivity/state", b"0.8")
                await rec.wait_topic(f"{prefix}/kitchen/monitoring/state", b"OFF")
                await rec.wait_for(state_is(rec, f"{prefix}/kitchen/state", "off"), what="zone off, not clear")
                first.signal(signal.SIGTERM)
                assert await asyncio.to_thread(first.wait, 15) == 0
            finally:
                first.kill()

        second = Daemon(config, tmp_path)
        try:
            await asyncio.to_thread(second.start)
            assert second.find("zone controls restored")[0]["zones"] == {
                "kitchen": {"monitoring": False, "sensitivity": 0.8}}
            kept: dict[str, Any] = await retained(broker, f"{prefix}/kitchen/#")
            assert kept[f"{prefix}/kitchen/sensitivity/state"].payload == b"0.8"
            assert kept[f"{prefix}/kitchen/monitoring/state"].payload == b"OFF"
            assert kept[f"{prefix}/kitchen/state"].json()["state"] == "off"
            status, ready = await asyncio.to_thread(second.json, "/readyz")
            assert status == 200 and ready["checks"]["zones"]["detail"] == {
                "kitchen": "off: monitoring is switched off"}
            second.signal(signal.SIGTERM)
            assert await asyncio.to_thread(second.wait, 15) == 0
        finally:
            second.kill()
