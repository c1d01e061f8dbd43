"""Fault injection, issue 20 (section 2): hostile JSON never kills a task, and tasks that die come back visibly.

Each test runs the real daemon (subprocess) against the scripted model server on 127.0.0.1 and, where MQTT
matters, a real mosquitto. The input is the one the review used: about 3,000 levels of nesting in 3 KB, under
every payload cap, on which `json.loads` raises `RecursionError` (deeper input can crash the interpreter).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, responder, wait_until
from tests.support.faults import (
    Rig,
    Subscriber,
    append_lines,
    entry,
    metric,
    still_watching,
    stops_cleanly,
    tail,
)
from tests.support.mosquitto import Mosquitto, publish
from tests.support.openai_server import ScriptedOpenAIServer

NESTED = '{"alert_id": ' + "[" * 3000 + "]" * 3000 + "}"  # 6 KB, 3,000 levels (4 KB caps: see ACK_NESTED)
ACK_NESTED = '{"a":' + "[" * 3000  # 3 KB: the payload of the review, under the 4 KB caps
ESCALATION = """
[escalation]
enabled = true
confirmed_within_s = 30

[escalation.warning]
escalate_after_s = 1.0
caregivers_from_level = 1
"""


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    """The scripted model: ladder, stove and knife are dangers, anything else is safe."""
    with ScriptedOpenAIServer(responder=responder()) as running:
        yield running


def test_nested_json_on_the_ack_and_feedback_topics_is_one_rejected_message_and_alerts_still_go_out(
        tmp_path: Path, server: ScriptedOpenAIServer, broker: Mosquitto) -> None:
    """3,000 levels of nesting on `<prefix>/<zone>/ack` and `<prefix>/feedback` are two named, counted
    rejections; the sink's session lives on, so the next alert and its escalation reach MQTT and the daemon
    stays ready. Before the fix the `RecursionError` killed the MQTT sink task for good: no later alert or
    escalation was published while `available` stayed `online`."""
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], broker=broker, extra=ESCALATION)
    p = rig.prefix
    with Subscriber(broker, f"{p}/alerts", f"{p}/escalations") as mqtt, Daemon(rig.write(), tmp_path) as daemon:
        daemon.wait_log("mqtt connected")
        asyncio.run(publish(broker, f"{p}/kitchen/ack", ACK_NESTED))
        asyncio.run(publish(broker, f"{p}/feedback", ACK_NESTED))
        rejected = daemon.wait_log("invalid mqtt control message ignored", count=2)
        assert {r["reason"] for r in rejected} == {"nested more than 4 levels deep"}
        assert not daemon.find("mqtt sink session died of an unexpected error; reconnecting")

        assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
        mqtt.wait(f"{p}/alerts", lambda m: any(e["type"] == "new" for e in m), what="the next alert")
        append_lines(log, entry("Sam climbs the ladder and leans out"))  # confirmed: it escalates
        mqtt.wait(f"{p}/escalations", lambda m: len(m) >= 1, what="the escalation")
        status, ready = daemon.json("/readyz")
        assert status == 200, ready
        assert ready["checks"]["delivery"] == {"ok": True, "detail": {"mqtt": "delivering"}}, ready
        assert metric(daemon, "monitor_json_rejected_total", input="mqtt ack message", reason="too_deep") == 1
        assert metric(daemon, "monitor_json_rejected_total", input="mqtt feedback message", reason="too_deep") == 1
        assert metric(daemon, "monitor_problems") == 0
        stops_cleanly(daemon)
        final = daemon.logs()[-1]
        assert final["json_rejected"] == {"mqtt ack message:too_deep": 1, "mqtt feedback message:too_deep": 1}


def test_nested_json_in_state_files_and_an_ack_request_is_moved_aside_or_answered_never_fatal(
        tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """The controls and open-alerts files holding 3,000 levels of nesting are moved aside at start with the
    reason named, and an ack request file with it is answered `invalid` while the daemon runs on. Before the
    fix the state files stopped the start and the request file stopped the running daemon."""
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "controls.json").write_text(NESTED)
    (state / "open-alerts.json").write_text('{"version": 1, "alerts": ' + "[" * 3000 + "]" * 3000 + "}")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], state_dir=state)
    with Daemon(rig.write(), tmp_path) as daemon:
        moved = {r["path"]: r for r in daemon.find("controls file unusable; moved aside, starting fresh")
                 + daemon.find("open alerts file unusable; moved aside, starting fresh")}
        assert set(moved) == {str(state / "controls.json"), str(state / "open-alerts.json")}
        assert all(r["problem"].endswith("nested more than 64 levels deep") for r in moved.values())
        spool = state / "ack-requests"
        wait_until(spool.is_dir, what="the ack spool folder")
        (spool / "deadbeef.json").write_text(ACK_NESTED)
        daemon.wait_log("invalid acknowledgement request ignored")
        reply = wait_until(lambda: (spool / "deadbeef.reply").is_file() and (spool / "deadbeef.reply").read_text(),
                           what="the answer to the request")
        assert json.loads(reply)["status"] == "invalid"
        assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
        stops_cleanly(daemon)
