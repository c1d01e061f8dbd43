"""Feedback on alerts: the MQTT message, the SQLite store in the state dir, the command line, and the MQTT and
Home Assistant paths against a real mosquitto."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.alerts import AlertEvent
from monitor.history.desk import FeedbackDesk
from monitor.history.discovery import MISSED_BUTTON_MINUTES, button_payload
from monitor.history.feedback import (
    Feedback,
    FeedbackError,
    FeedbackStore,
    missed,
    parse_feedback_message,
)
from monitor.history.recorder import HistoryRecorder
from monitor.mqtt.settings import MqttSettings
from monitor.settings import Settings, load_settings
from monitor.sinks.mqtt import MqttSink
from monitor.stats import Stats
from tests.support.mosquitto import Mosquitto, Recorder, alert_event, publish, retained
from tests.support.paths import REPO

NOW = 1_790_000_000.0


def _settings(state: Path, **history: Any) -> Settings:
    return load_settings(None, service={"state_dir": str(state)}, zones=[{"id": "kitchen"}, {"id": "garage"}],
                         history=history, sinks={"stdout": {"enabled": False}})


def _stored(store: FeedbackStore, count: int, timeout: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = store.entries()
        if len(entries) >= count:
            return entries
        time.sleep(0.02)
    raise AssertionError(f"{count} feedback entries not stored within {timeout} s: {store.entries()}")


# --------------------------------------------------------------------------- the message


@pytest.mark.parametrize(("payload", "reason"), [
    (b"not json", "not valid JSON"),
    (b'{"note": ' + b"[" * 3000, "nested more than 4 levels deep"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"label": "great", "alert_id": "a1"}', "label"),
    (b'{"label": "false_alarm"}', "needs alert_id"),
    (b'{"label": "helpful", "alert_id": "latest"}', '"latest" needs the zone'),
    (b'{"label": "helpful", "alert_id": "a1", "extra": 1}', "extra"),
    (b'{"label": "helpful", "alert_id": "a1", "minutes": 5}', "'from', 'to' and 'minutes' are for 'missed'"),
    (b'{"label": "missed", "alert_id": "a1", "zone": "kitchen", "minutes": 5}', "not an alert"),
    (b'{"label": "missed", "minutes": 5}', "needs the zone"),
    (b'{"label": "missed", "zone": "kitchen"}', "needs 'from' and 'to'"),
    (b'{"label": "missed", "zone": "kitchen", "from": 1, "to": 2, "minutes": 3}', "not both"),
    (b'{"label": "missed", "zone": "kitchen", "from": 20, "to": 10}', "'from' must be before 'to'"),
    (b'{"label": "missed", "zone": "kitchen", "from": 0, "to": 1789000000}', "at most 7 days"),
    (b'{"label": "missed", "zone": "kitchen", "from": 1790000000, "to": 1790009000}', "ends in the future"),
    (b'{"label": "missed", "zone": "kitchen", "from": "yesterday", "to": 1789999000}', "from: 'yesterday'"),
    (b'{"label": "helpful", "alert_id": "a1", "note": "' + b"x" * 501 + b'"}', "note"),
    (b'{"label": "helpful", "alert_id": "../../etc"}', "alert_id"),
    (b'{"label": "helpful", "alert_id": "a1", "via": "cli"}', "via"),
    (b"{" + b" " * 5000 + b"}", "more than 4096"),
])
def test_invalid_messages_say_why(payload: bytes, reason: str) -> None:
    """Each malformed or incomplete feedback message is refused with a reason a person can act on."""
    with pytest.raises(FeedbackError) as caught:
        parse_feedback_message(payload, now=NOW)
    assert reason in str(caught.value)


def test_valid_messages() -> None:
    """Alert labels keep the alert id (or "latest" with the zone); missed takes a range or the last minutes."""
    assert parse_feedback_message(b'{"label": "false_alarm", "alert_id": "3f9c", "note": " on purpose "}',
                                  now=NOW) == Feedback("false_alarm", alert_id="3f9c", note="on purpose", via="mqtt",
                                                       given_at=NOW)
    latest = parse_feedback_message(button_payload("kitchen", "helpful").encode(), now=NOW)
    assert (latest.alert_id, latest.zone, latest.via) == ("latest", "kitchen", "home_assistant")
    button = parse_feedback_message(button_payload("garage", "missed").encode(), now=NOW)
    assert (button.zone, button.start, button.end) == ("garage", NOW - MISSED_BUTTON_MINUTES * 60, NOW)
    ranged = parse_feedback_message(
        b'{"label": "missed", "zone": "garage", "from": "2026-09-21T12:00:00Z", "to": 1789999000, "note": "x"}',
        now=NOW)
    assert (ranged.label, ranged.zone, ranged.start, ranged.end, ranged.note) == (
        "missed", "garage", 1789992000.0, 1789999000.0, "x")


# --------------------------------------------------------------------------- the store


def test_store_links_feedback_to_the_alert_and_its_windows(tmp_path: Path) -> None:
    """Feedback on an alert is stored with the windows that raised and confirmed it; the file is 0600."""
    path = tmp_path / "state" / "feedback.sqlite3"
    with FeedbackStore(path) as store:
        store.index_alert(alert_event("kitchen", 1, alert_id="a1"))
        store.index_alert(alert_event("kitchen", 2, kind="update", alert_id="a1", updates=1))
        store.index_alert(alert_event("kitchen", 3, kind="end", alert_id="a1", updates=2))
        entry = store.add(Feedback("false_alarm", alert_id="a1", note="on purpose", given_at=NOW))
        assert entry.windows == ("kitchen-1", "kitchen-2") and entry.zone == "kitchen"
        assert entry.hazard == "hot oil fire 1"
        with pytest.raises(FeedbackError, match="alert 'nope' is not in"):
            store.add(Feedback("helpful", alert_id="nope"))
        store.add(missed("garage", NOW - 600, NOW - 60, note="ladder", now=NOW))
        assert store.counts() == {"helpful": 0, "false_alarm": 1, "unclear": 0, "missed": 1}
        assert store.alert("a1") is not None and store.alert("a1").ended_at is not None  # type: ignore[union-attr]
        assert [row.label for row in store.alerts()] == ["false_alarm"]
        assert store.latest_alerts()["kitchen"].id == "a1"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_opening_the_store_again_keeps_the_locks_of_the_open_one(tmp_path: Path) -> None:
    """Regression: opening the store a second time in a process that holds it (the daemon's desk, a helper) must
    not close a descriptor of the database file, which drops the first connection's POSIX locks. Without them,
    another process (`monitor feedback`) closing its connection believes it is the last one and deletes the WAL
    under the daemon's feet: later writes were lost and the file read back as "file is not a database"."""
    path = tmp_path / "feedback.sqlite3"
    with FeedbackStore(path) as daemon:
        daemon.index_alert(alert_event("kitchen", 1, alert_id="a1"))
        with FeedbackStore(path) as helper:
            assert helper.alert("a1") is not None
        other = subprocess.run([sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
                                "db.execute('SELECT COUNT(*) FROM alerts').fetchall(); db.close()", str(path)],
                               capture_output=True, text=True, timeout=30, check=False)
        assert other.returncode == 0, other.stderr
        assert path.with_name(path.name + "-wal").exists()  # the daemon still holds it: nobody deleted it
        daemon.add(Feedback("helpful", alert_id="a1"))
    with FeedbackStore(path) as reopened:
        assert [e.label for e in reopened.entries()] == ["helpful"]


# --------------------------------------------------------------------------- the command line


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_feedback_while_the_daemon_holds_the_store(tmp_path: Path) -> None:
    """`monitor feedback` writes to the state dir's store while another connection (the daemon) writes too."""
    state = tmp_path / "state"
    with FeedbackStore(state / "feedback.sqlite3") as daemon:
        daemon.index_alert(alert_event("kitchen", 1, alert_id="a1"))
        result = _cli("feedback", "a1", "false_alarm", "--note", "we simmer on low", "--state-dir", str(state))
        assert result.returncode == 0, result.stderr
        assert "stored: false_alarm on alert a1 (kitchen" in result.stdout
        daemon.index_alert(alert_event("garage", 2, alert_id="a2"))  # the daemon goes on writing
        result = _cli("feedback", "--zone", "garage", "--missed", "--from", "20min", "--to", "5min",
                      "--state-dir", str(state))
        assert result.returncode == 0, result.stderr
        entries = daemon.entries()
    assert [(e.label, e.alert_id, e.via, e.note) for e in entries] == [
        ("false_alarm", "a1", "cli", "we simmer on low"), ("missed", None, "cli", "")]
    assert 890 < entries[1].end - entries[1].start < 910
    listing = _cli("feedback", "--list", "--state-dir", str(state))
    assert "a1" in listing.stdout and "[false_alarm]" in listing.stdout and "a2" in listing.stdout
    assert "2 alerts and 1 missed hazards reported since" in listing.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["unknown", "helpful"], "alert 'unknown' is not in"),
    (["a1"], "give ALERT_ID and a label"),
    (["--missed", "--zone", "kitchen"], "--missed needs --zone and --from"),
    (["--missed", "--zone", "kitchen", "--from", "soon"], "'soon' is not a time"),
])
def test_cli_feedback_errors_name_the_problem(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad feedback from the command line exits 1 with a line that says what to do."""
    state = tmp_path / "state"
    with FeedbackStore(state / "feedback.sqlite3") as store:
        store.index_alert(alert_event("kitchen", 1, alert_id="a1"))
    result = _cli("feedback", *args, "--state-dir", str(state))
    assert result.returncode == 1 and message in result.stderr, result.stderr


def test_cli_without_a_store_says_where_it_looked(tmp_path: Path) -> None:
    """Feedback for a state dir the monitor never ran in names the missing file."""
    result = _cli("feedback", "a1", "helpful", "--state-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "no feedback store at" in result.stderr


# --------------------------------------------------------------------------- MQTT and Home Assistant


def _mqtt(broker: Mosquitto) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                        reconnect_min_s=0.05, reconnect_max_s=0.5, close_timeout_s=3.0)


async def test_feedback_over_mqtt_and_home_assistant_buttons(broker: Mosquitto, tmp_path: Path) -> None:
    """Feedback JSON on <prefix>/feedback is stored; the discovered buttons judge the zone's latest alert when
    pressed (their payload on their command topic); invalid messages are logged, counted and change nothing."""
    state = tmp_path / "state"
    recorder = HistoryRecorder(_settings(state))
    assert recorder.desk is not None
    mqtt = _mqtt(broker)
    p, node = mqtt.topic_prefix, mqtt.node_id
    sink = MqttSink(mqtt, zones=["kitchen", "garage"], state_dir=state)
    sink.feedback = recorder.desk
    for n, (zone, alert_id) in enumerate([("kitchen", "k1"), ("garage", "g1"), ("kitchen", "k2")]):
        recorder.alert_published(alert_event(zone, n, alert_id=alert_id))
    try:
        await sink.start()
        async with Recorder(broker, f"{p}/available") as rec:
            await rec.wait_topic(f"{p}/available", b"online")
        configs = await retained(broker, f"homeassistant/button/{node}/+/config")
        assert len(configs) == 8  # four buttons for each of two zones
        false_alarm = configs[f"homeassistant/button/{node}/kitchen_feedback_false_alarm/config"].json()
        assert false_alarm["command_topic"] == f"{p}/feedback"
        assert false_alarm["device"]["identifiers"] == [f"{node}_kitchen"]
        assert false_alarm["availability_topic"] == f"{p}/available" and false_alarm["unique_id"]
        assert json.loads(false_alarm["payload_press"]) == {"zone": "kitchen", "alert_id": "latest",
                                                            "label": "false_alarm", "via": "home_assistant"}

        # Home Assistant presses the button: it publishes payload_press on command_topic.
        await publish(broker, false_alarm["command_topic"], false_alarm["payload_press"])
        await publish(broker, f"{p}/feedback", json.dumps({"alert_id": "g1", "label": "helpful", "note": "yes!"}))
        with capture_logs() as logs:
            for bad in ('{"alert_id": "zz", "label": "helpful"}', "nonsense",
                        '{"zone": "attic", "label": "missed", "minutes": 5}'):
                await publish(broker, f"{p}/feedback", bad)
            await publish(broker, f"{p}/feedback", '{"zone": "garage", "label": "missed", "minutes": 5}')
            entries = await asyncio.to_thread(_stored, recorder.desk.store, 3)
        rejected = [e for e in logs if e["event"] == "invalid mqtt control message ignored"]
        assert [e["reason"] for e in rejected] == ["unknown alert 'zz'", "not valid JSON (Expecting value: line 1 "
                                                   "column 1 (char 0))", "unknown zone 'attic'"]
        assert sink.counters["invalid_commands"] == 3
    finally:
        await sink.close()
        recorder.close()
    assert [(e.label, e.alert_id, e.zone, e.via) for e in entries] == [
        ("false_alarm", "k2", "kitchen", "home_assistant"), ("helpful", "g1", "garage", "mqtt"),
        ("missed", None, "garage", "mqtt")]
    assert entries[0].windows == ("kitchen-2",)
    with FeedbackStore(state / "feedback.sqlite3") as store:
        assert store.counts() == {"helpful": 1, "false_alarm": 1, "unclear": 0, "missed": 1}


async def test_without_feedback_the_sink_neither_subscribes_nor_announces_buttons(
        broker: Mosquitto, tmp_path: Path) -> None:
    """A sink with no feedback handler (history.feedback = false) has no buttons and ignores the topic."""
    mqtt = _mqtt(broker)
    sink = MqttSink(mqtt, zones=["kitchen"], state_dir=tmp_path / "state")
    await sink.start()
    try:
        async with Recorder(broker, f"{mqtt.topic_prefix}/available") as rec:
            await rec.wait_topic(f"{mqtt.topic_prefix}/available", b"online")
        assert await retained(broker, f"homeassistant/button/{mqtt.node_id}/+/config") == {}
        await publish(broker, f"{mqtt.topic_prefix}/feedback", "nonsense")
        await asyncio.sleep(0.2)
        assert sink.counters["invalid_commands"] == 0
    finally:
        await sink.close()


def test_desk_counts_come_from_the_store_and_reach_stats_and_metrics(tmp_path: Path) -> None:
    """Stored feedback (by any path, the CLI included) is counted by label in the stats and on /metrics."""
    from monitor.daemon.metrics import Metrics

    state = tmp_path / "state"
    with FeedbackStore(state / "feedback.sqlite3") as store:
        store.index_alert(alert_event("kitchen", 1, alert_id="a1"))
        store.add(Feedback("unclear", alert_id="a1"))
        store.add(Feedback("helpful", alert_id="a1"))
    recorder = HistoryRecorder(_settings(state))
    try:
        stats = Stats(feedback=recorder.feedback_counts())
        assert stats.to_json()["feedback"] == {"helpful": 1, "false_alarm": 0, "unclear": 1, "missed": 0}
        text = Metrics(stats=lambda: stats).render().decode()
        assert 'monitor_feedback_total{label="helpful"} 1.0' in text
        assert 'monitor_feedback_total{label="false_alarm"} 0.0' in text
    finally:
        recorder.close()
    off = HistoryRecorder(_settings(tmp_path / "off", feedback=False))
    assert off.desk is None and off.feedback_counts() == {} and off.notes is None
    off.close()


def test_desk_refuses_latest_of_a_zone_without_alerts(tmp_path: Path) -> None:
    """"latest" needs an alert in that zone; unknown zones are refused too."""
    with FeedbackStore(tmp_path / "f.sqlite3") as store:
        desk = FeedbackDesk(store, submit=lambda job: job(), zones=["kitchen"], clock=lambda: NOW)
        desk.load()
        assert desk.handle_feedback_message(button_payload("kitchen", "helpful").encode()).reason == \
            "zone 'kitchen' has no alert yet"
        assert desk.handle_feedback_message(button_payload("hall", "helpful").encode()).reason == \
            "unknown zone 'hall'"


def test_a_missed_report_for_a_zone_the_monitor_does_not_watch_is_refused(tmp_path: Path) -> None:
    """MQTT refused a missed report for an unknown zone; the CLI stored it. Both refuse now, naming the zones."""
    state = tmp_path / "state"
    with FeedbackStore(state / "feedback.sqlite3") as store:
        store.index_alert(alert_event("kitchen", 1, alert_id="a1"))
        result = _cli("feedback", "--zone", "attic", "--missed", "--from", "20min", "--state-dir", str(state))
        assert result.returncode == 1
        assert "'attic' is not a zone the monitor watches" in result.stderr and "kitchen" in result.stderr
        assert store.entries() == []
    config = tmp_path / "monitor.toml"
    config.write_text(f'''
[service]
state_dir = "{state}"
[model]
backend = "scripted"
script = "{tmp_path / 'script.json'}"
[[sources]]
id = "g"
kind = "stdin"
zone = "garage"
''')
    result = _cli("feedback", "--zone", "attic", "--missed", "--from", "20min", "--config", str(config))
    assert result.returncode == 1 and "the configuration's zones: garage" in result.stderr
    result = _cli("feedback", "--zone", "garage", "--missed", "--from", "20min", "--config", str(config))
    assert result.returncode == 0, result.stderr


def test_the_list_shows_every_label_missed_reports_and_the_severity_an_alert_was_raised_at(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with FeedbackStore(state / "feedback.sqlite3") as store:
        raised = alert_event("kitchen", 1, alert_id="a1", severity="warning")
        store.index_alert(raised)
        escalated = AlertEvent("escalate", dataclasses.replace(raised.alert, severity="critical"), at=time.time())
        store.index_alert(escalated)
        store.add(Feedback("unclear", alert_id="a1", via="cli"))
        store.add(Feedback("helpful", alert_id="a1", via="cli"))
        now = time.time()
        store.add(missed("kitchen", now - 600, now - 300, note="the kettle boiled dry", via="cli", now=now))
    listing = _cli("feedback", "--list", "--state-dir", str(state))
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if "a1" in line)
    assert "  warning  " in line and "critical" not in line and "[unclear, helpful]" in line
    assert "missed hazard reported" in listing.stdout and "the kettle boiled dry" in listing.stdout
    assert "1 alerts and 1 missed hazards reported since" in listing.stdout
