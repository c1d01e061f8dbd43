"""The monitor itself against a real Home Assistant core: the real daemon (a subprocess) with MQTT and discovery,
a real mosquitto, a scripted model server that can be made to fail.

What a Home Assistant user sees (issue 10, sections 2, 3 and 5): discovery accepted without a warning or notice
in HA's log; a hub device with diagnostic entities and the zone devices hung off it, named after the zone, in its
area; hazard on and off; the last warning clearing when its alert ends; while the zone is blind the problem
sensor on and the hazard sensor unavailable (never "off", which reads "Safe"); and after the monitor is killed
with an alert open and started again, no stale "hazard on". Needs `make ha-venv` (skips otherwise).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sensors.logs.position import position_file
from tests.support.daemon import Daemon, append, responder, wait_until, write_config
from tests.support.homeassistant import (
    NOTICE_LEVELS,
    HomeAssistant,
    _WebSocket,
)
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.openai_server import Action, ScriptedOpenAIServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker(ha_broker: Mosquitto) -> Mosquitto:
    """The module's Home Assistant broker (tests/conftest.py)."""
    return ha_broker


@dataclass(frozen=True)
class Change:
    at: float
    entity_id: str
    state: str | None


class StateWatcher:
    """Every `state_changed` event of HA, as it happens (a websocket subscription), so a state that lasted only
    milliseconds (a stale "on" between a restart's `online` and its first fresh state) is not missed."""

    def __init__(self, ha: HomeAssistant) -> None:
        self.changes: list[Change] = []
        self._stop = threading.Event()
        self._conn = _WebSocket(ha.host, ha.port, "/api/websocket", 2.0)
        assert self._conn.receive_json()["type"] == "auth_required"
        self._conn.send_json({"type": "auth", "access_token": ha.token})
        assert self._conn.receive_json()["type"] == "auth_ok"
        self._conn.send_json({"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
        assert self._conn.receive_json()["success"]
        self._thread = threading.Thread(target=self._run, name="ha-state-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._conn.receive_json()
            except TimeoutError:
                continue
            except (OSError, ConnectionError):
                return
            if message.get("type") == "event":
                data = message["event"]["data"]
                self.changes.append(Change(time.monotonic(), data["entity_id"],
                                           (data.get("new_state") or {}).get("state")))

    def states(self, entity_id: str, since: float = 0.0) -> list[str | None]:
        return [c.state for c in list(self.changes) if c.entity_id == entity_id and c.at >= since]

    def close(self) -> None:
        self._stop.set()
        self._conn.close()
        self._thread.join(timeout=5)


class Model:
    """The scripted model: answers by the observation (ladder = danger), or fails with HTTP 500 when told."""

    def __init__(self) -> None:
        self.failing = False
        self._answer = responder()
        self.server = ScriptedOpenAIServer(responder=self.respond)

    def respond(self, body: dict[str, Any]) -> Action:
        return Action(status=500) if self.failing else self._answer(body)


def daemon_config(tmp_path: Path, model: Model, broker: Mosquitto, tag: str) -> tuple[Path, Path]:
    log = tmp_path / "kitchen.jsonl"
    log.touch()
    extra = f"""
[health]
blind_after_s = 2

[mqtt]
host = "{broker.host}"
port = {broker.port}
topic_prefix = "pm_ha/{tag}"
reconnect_min_s = 0.05
reconnect_max_s = 0.5
close_timeout_s = 3.0
stats_interval_s = 1.0

[mqtt.discovery]
device_name = "Monitor {tag}"
configuration_url = "https://monitor-{tag}.example.lan/"

[[zones]]
id = "kitchen"
name = "Kitchen {tag}"
area = "Kitchen"
"""
    config = write_config(tmp_path / "monitor.toml", base_url=model.server.base_url, logs={"kitchen": log},
                          alerts=tmp_path / "alerts.jsonl", extra=extra)
    # An alert not confirmed for 4 s ends (write_config has the [alerts] section).
    config.write_text(config.read_text().replace("[alerts]\n", "[alerts]\ndedup_ttl_s = 4\n", 1))
    return config, log


def entity_ids(ha: HomeAssistant, node: str) -> dict[str, str]:
    """unique_id suffix (after the node id) -> entity_id, for the monitor's entities."""
    return {e["unique_id"].removeprefix(f"{node}_"): e["entity_id"] for e in ha.entity_registry()
            if e.get("platform") == "mqtt" and str(e.get("unique_id", "")).startswith(f"{node}_")}


def _position_covers(state: Path, source_id: str, log: Path) -> bool:
    try:
        return bool(json.loads(position_file(state, source_id).read_text())["offset"] == log.stat().st_size)
    except (OSError, ValueError, KeyError):
        return False


async def test_home_assistant_sees_hazards_blindness_and_no_stale_hazard_after_a_restart(
        ha: HomeAssistant, broker: Mosquitto, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    node = f"pm_ha_{tag}"  # the node id derived from the topic prefix pm_ha/<tag>
    health_port = free_port()
    model = Model()
    mark = ha.mark()
    watcher = StateWatcher(ha)
    with model.server, contextlib.ExitStack() as stack:
        stack.callback(watcher.close)
        config, log = daemon_config(tmp_path, model, broker, tag)
        env = {"MONITOR_HEALTH__PORT": str(health_port)}
        daemon = Daemon(config, tmp_path, env=env)
        stack.callback(daemon.kill)
        daemon.start()

        for suffix in ("kitchen_hazard", "kitchen_problem", "kitchen_last_warning", "kitchen_monitoring",
                       "kitchen_sensitivity", "kitchen_warning", "kitchen_status", "hub_source_problem",
                       "hub_last_assessment", "hub_model_errors", "hub_windows_assessed", "hub_outbox_backlog",
                       "hub_offline", "hub_optional_failures"):
            await _wait_entity(ha, f"{node}_{suffix}")
        ids = entity_ids(ha, node)
        hazard, problem, warning = ids["kitchen_hazard"], ids["kitchen_problem"], ids["kitchen_last_warning"]
        status, offline = ids["kitchen_status"], ids["hub_offline"]

        # -- devices: a hub with diagnostics, the zone hung off it, named after the zone, in its area
        devices = {tuple(i) for d in ha.device_registry() for i in d["identifiers"]}
        assert ("mqtt", node) in devices and ("mqtt", f"{node}_kitchen") in devices
        hub = next(d for d in ha.device_registry() if ["mqtt", node] in d["identifiers"])
        zone = next(d for d in ha.device_registry() if ["mqtt", f"{node}_kitchen"] in d["identifiers"])
        assert hub["name"] == f"Monitor {tag}" and zone["name"] == f"Kitchen {tag}"
        assert zone["via_device_id"] == hub["id"]
        assert zone["area_id"] == "kitchen"
        assert hub["configuration_url"] == f"https://monitor-{tag}.example.lan/"  # configured, not the loopback
        registry = {e["entity_id"]: e for e in ha.entity_registry()}
        for key in ("hub_source_problem", "hub_last_assessment", "hub_model_errors", "hub_windows_assessed",
                    "hub_outbox_backlog", "hub_optional_failures"):
            assert registry[ids[key]]["entity_category"] == "diagnostic", key
            assert registry[ids[key]]["device_id"] == hub["id"], key
        assert registry[ids["kitchen_monitoring"]]["entity_category"] is None  # not hidden from dashboards
        assert registry[ids["kitchen_sensitivity"]]["entity_category"] == "config"
        assert registry[ids["hub_last_assessment"]]["disabled_by"] == "integration"  # not in the logbook
        assert registry[offline]["entity_category"] is None
        switch, number = ha.state(ids["kitchen_monitoring"]), ha.state(ids["kitchen_sensitivity"])
        assert switch is not None and switch["attributes"]["icon"] == "mdi:shield-home"
        assert number is not None and number["attributes"]["icon"] == "mdi:tune-variant"

        # -- unknown at start: no "Safe", and not a monitoring problem (quiet is not a problem); the reason shown
        await ha.async_wait_state(status, "Unknown: no observations since start")
        assert (await ha.async_wait_state(problem))["state"] == "off"
        assert (await ha.async_wait_state(hazard))["state"] == "unavailable"
        await ha.async_wait_state(offline, "off")

        # -- assessed and safe, then a hazard, then its end
        append(log, "Sam waters the plants")
        await ha.async_wait_state(hazard, "off")
        await ha.async_wait_state(problem, "off")
        assessed = await ha.async_wait_state(ids["hub_windows_assessed"], lambda s: s["state"] not in ("unknown", "0"))
        assert assessed["attributes"]["last_assessment_at"].startswith("20")
        optional = await ha.async_wait_state(ids["hub_optional_failures"], "0")  # the extras, all well
        assert optional["attributes"]["feedback_context"] == 0 and optional["attributes"]["speaker"] == 0
        append(log, "Sam climbs the ladder and leans far out")
        on = await ha.async_wait_state(hazard, "on")
        assert on["attributes"]["hazard"] == "fall from ladder"
        await ha.async_wait_state(warning, "fall from ladder: Climb down and move the ladder.")
        await ha.async_wait_state(hazard, "off", timeout=20)  # not confirmed for dedup_ttl_s: the alert ends
        await ha.async_wait_state(warning, "No open warning")  # and the last warning clears, never to ""

        # -- the model fails: blind, the problem sensor on, the hazard sensor unavailable (not "off")
        model.failing = True
        blind_from = time.monotonic()
        append(log, "Sam puts a pan of oil on the stove")
        blind = await ha.async_wait_state(problem, "on", timeout=20)
        assert blind["attributes"]["zone_state"] == "blind" and "last error: transient" in blind["attributes"]["reason"]
        shown = await ha.async_wait_state(status, lambda s: s["state"].startswith("Blind: "))
        assert "last error: transient" in shown["state"]  # the reason on the card, without opening attributes
        await ha.async_wait_state(hazard, "unavailable")
        await ha.async_wait_state(ids["hub_model_errors"], lambda s: s["state"] not in ("unknown", "0"))
        model.failing = False
        append(log, "Sam climbs the ladder again and leans far out")
        await ha.async_wait_state(hazard, "on")
        await ha.async_wait_state(problem, "off")
        assert "off" not in watcher.states(hazard, since=blind_from)  # never "Safe" while it could not see

        # -- killed with the alert open, started again: no stale "hazard on"
        # (once the tail's read position is on disk: a crash before it would read the ladder line again)
        wait_until(lambda: _position_covers(tmp_path / "state", "kitchen", log), what="the log position on disk")
        killed = time.monotonic()
        daemon.signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        await ha.async_wait_state(hazard, "unavailable")
        await ha.async_wait_state(offline, "on")  # a dead monitor is a problem, not "unavailable"
        restarted = Daemon(config, tmp_path, env=env)
        stack.callback(restarted.kill)
        restarted.start()
        await ha.async_wait_state(offline, "off")
        await ha.async_wait_state(status, "Unknown: no observations since start")  # and not a problem
        assert (await ha.async_wait_state(problem))["state"] == "off"
        append(log, "Sam sweeps the floor")
        await ha.async_wait_state(hazard, "off")
        after_kill = watcher.states(hazard, since=killed)
        assert "on" not in after_kill, f"a stale hazard was replayed: {after_kill}"
        assert after_kill[0] == "unavailable" and after_kill[-1] == "off", after_kill
        restarted.signal(signal.SIGTERM)
        assert restarted.wait(timeout=15) == 0

        # -- what HA shows: no raw epoch attribute anywhere, and the last warning never an empty state
        mine = set(ids.values())
        for state in ha.states():
            if state["entity_id"] in mine:
                assert not [k for k in state["attributes"] if k.endswith("_epoch")], state
        assert "" not in watcher.states(warning)

    # HA's own start-up notice may land just after the fixture saw MQTT connected; it is not about the monitor.
    problems = [r for r in ha.problems(since=mark, levels=NOTICE_LEVELS) if "birth message sent" not in r.message]
    assert problems == [], [str(p) for p in problems]


async def _wait_entity(ha: HomeAssistant, unique_id: str) -> dict[str, Any]:
    import asyncio

    return await asyncio.to_thread(ha.wait_entity, unique_id, 30.0)
