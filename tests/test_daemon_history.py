"""`monitor run` as a subprocess with the history on: it records what it assesses (camera frames only when
asked), applies retention, takes feedback over MQTT, from Home Assistant's buttons and from `monitor feedback`
while it runs, counts it in /metrics and the stats topic, and carries on while `monitor history purge` runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from monitor.history.feedback import FeedbackStore
from monitor.history.times import utc_day
from tests.support.daemon import Daemon, alert_lines, append, responder, wait_until, write_config
from tests.support.media import Scene, moving_square, write_folder
from tests.support.mosquitto import Mosquitto, Recorder, publish, retained
from tests.support.openai_server import ScriptedOpenAIServer
from tests.support.paths import REPO

DAY = 86400.0


def _config(tmp_path: Path, server: ScriptedOpenAIServer, broker: Mosquitto | None, prefix: str,
            history: str) -> tuple[Path, dict[str, Path]]:
    logs = {"kitchen": tmp_path / "kitchen.jsonl", "garage": tmp_path / "garage.jsonl"}
    for log in logs.values():
        log.write_text("")
    frames = write_folder(tmp_path / "garage-frames", Scene(width=160, height=120, moving=moving_square(160, 120)),
                          count=4, step_s=0.5)
    mqtt = "" if broker is None else (f'\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
                                      f'topic_prefix = "{prefix}"\nreconnect_min_s = 0.05\nreconnect_max_s = 0.5\n'
                                      "stats_interval_s = 0.5\n")
    extra = (f'{mqtt}\n[[cameras]]\nid = "garage-cam"\nzone = "garage"\nkind = "folder"\npath = "{frames}"\n'
             f"folder_fps = 4.0\n\n[history]\n{history}\n")
    config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs=logs,
                          alerts=tmp_path / "alerts.jsonl", extra=extra)
    return config, logs


def _records(history: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(history.glob("*.jsonl")) for line in path.read_text().splitlines()]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`monitor ...` run by a person in the daemon's working directory (the state dir is relative to it)."""
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)})


def _metric(daemon: Daemon, label: str) -> float | None:
    _status, body = daemon.http("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(f'monitor_feedback_total{{label="{label}"}}'):
            return float(line.split()[-1])
    return None


async def test_the_daemon_records_takes_feedback_by_every_path_and_survives_a_purge(
        broker: Mosquitto, tmp_path: Path) -> None:
    """The whole loop in one monitor: history with frames, retention at start, MQTT / HA / CLI feedback stored
    and counted, a purge of one zone while it runs, and records appended after it."""
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state"
    history = state / "history"
    # What retention must remove at the first record: a day 40 days old, frames 10 days old.
    now = time.time()
    old_day, old_frames = utc_day(now - 40 * DAY), utc_day(now - 10 * DAY)
    history.mkdir(parents=True)
    (history / f"{old_day}.jsonl").write_text('{"type": "window", "at": 0, "zone": "kitchen"}\n')
    (history / "frames" / old_frames / "garage").mkdir(parents=True)
    (history / "frames" / old_frames / "garage" / "old.jpg").write_bytes(b"\xff\xd8old")
    with ScriptedOpenAIServer(responder=responder()) as server:
        config, logs = _config(tmp_path, server, broker, prefix, "record_frames = true")
        daemon = Daemon(config, tmp_path, env={"MONITOR_MODEL__ACCEPTS_IMAGES": "true"})
        async with Recorder(broker, f"{prefix}/stats") as stats:
            with daemon:
                append(logs["garage"], "Sam leans far out from the top of the ladder")
                wait_until(lambda: len(alert_lines(tmp_path / "alerts.jsonl")) >= 1, what="ladder alert")
                append(logs["kitchen"], "Sam chops with the big knife")
                wait_until(lambda: len(alert_lines(tmp_path / "alerts.jsonl")) >= 2, what="knife alert")
                ladder, knife = (next(a["id"] for a in alert_lines(tmp_path / "alerts.jsonl") if word in a["hazard"])
                                 for word in ("ladder", "knife"))

                await publish(broker, f"{prefix}/feedback", json.dumps({"alert_id": ladder, "label": "helpful"}))
                button = await retained(broker, "homeassistant/button/+/kitchen_feedback_false_alarm/config")
                pressed = next(iter(button.values())).json()
                await publish(broker, pressed["command_topic"], pressed["payload_press"])
                await publish(broker, f"{prefix}/feedback", '{"alert_id": "nope", "label": "helpful"}')
                daemon.wait_log("feedback stored", count=2)
                daemon.wait_log("invalid mqtt control message ignored", reason="unknown alert 'nope'")
                cli = _cli("feedback", ladder, "unclear", "--note", "it was the neighbour", "--config", str(config),
                           cwd=tmp_path)
                assert cli.returncode == 0, cli.stderr
                wait_until(lambda: _metric(daemon, "unclear") == 1.0, timeout=15, what="the CLI's feedback counted")
                assert (_metric(daemon, "helpful"), _metric(daemon, "false_alarm"), _metric(daemon, "missed")) == (
                    1.0, 1.0, 0.0)
                await stats.wait_for(lambda: any(m.json().get("feedback", {}).get("unclear") == 1
                                                 for m in stats.on(f"{prefix}/stats")), timeout=15,
                                     what="feedback counts in the stats topic")

                garage_before = sum(1 for r in _records(history) if r["zone"] == "garage")
                purge = _cli("history", "purge", "--zone", "kitchen", "--keep-feedback", "--yes",
                             "--config", str(config), cwd=tmp_path)
                assert purge.returncode == 0, purge.stderr
                append(logs["kitchen"], "Sam makes tea")
                wait_until(lambda: any(r["zone"] == "kitchen" and "tea" in json.dumps(r["observations"])
                                       for r in _records(history)), what="a kitchen record after the purge")
                daemon.signal()
                assert daemon.wait(20) == 0

    records = _records(history)
    kitchen = [r for r in records if r["zone"] == "kitchen"]
    assert [o["text"] for r in kitchen for o in r["observations"]] == ["Sam makes tea"]  # the purge took the rest
    garage = [r for r in records if r["zone"] == "garage"]
    assert len(garage) >= garage_before >= 1
    assert not (history / f"{old_day}.jsonl").exists() and not (history / "frames" / old_frames).exists()
    sent = {c["image"] for r in garage for c in r["camera"] if c["image"]}
    kept = {p.stem for p in (history / "frames").rglob("*.jpg")}
    assert sent and sent == kept
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (history / "frames").rglob("*.jpg"))
    assert stat.S_IMODE(history.stat().st_mode) == 0o700
    with FeedbackStore(state / "feedback.sqlite3") as store:
        entries = store.entries()
    assert [(e.label, e.alert_id, e.via) for e in entries] == [
        ("helpful", ladder, "mqtt"), ("false_alarm", knife, "home_assistant"), ("unclear", ladder, "cli")]
    assert entries[0].windows and all(w.startswith("garage-") for w in entries[0].windows)
    assert entries[2].note == "it was the neighbour"


def test_frames_stay_out_and_feedback_off(tmp_path: Path) -> None:
    """By default no frame is kept; with history.feedback off there is no store; the audit log is the history's
    format."""
    with ScriptedOpenAIServer(responder=responder()) as server:
        config, logs = _config(tmp_path, server, None, "", "feedback = false")
        daemon = Daemon(config, tmp_path, env={"MONITOR_MODEL__ACCEPTS_IMAGES": "true",
                                               "MONITOR_SERVICE__AUDIT_LOG": str(tmp_path / "audit.jsonl")})
        with daemon:
            append(logs["garage"], "Sam leans far out from the top of the ladder")
            wait_until(lambda: any(c["image"] for r in _records(tmp_path / "state" / "history")
                                   for c in r["camera"]), what="a garage record with an image sent")
            daemon.signal()
            assert daemon.wait(20) == 0
    state = tmp_path / "state"
    assert not (state / "history" / "frames").exists() and not (state / "feedback.sqlite3").exists()
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit and {r["version"] for r in audit} == {1}
    assert sorted(r["window"] for r in audit) == sorted(r["window"] for r in _records(state / "history"))
