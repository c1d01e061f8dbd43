"""Fault injection, part 2 (issue 10, section 1): a full disk and a corrupt outbox, with the real daemon.

The full disk is a 1 MB tmpfs the test mounts (root only; the tests skip, saying why, where mounting is not
allowed); alerts go to stdout, a JSONL file and a real mosquitto through the outbox. Each test checks that
the failures are counted and visible, that the daemon keeps assessing and delivering what it can, that it
heals by itself when space returns, and that it still exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.sinks.outbox import Outbox
from tests.support.daemon import Daemon, responder, wait_until
from tests.support.faults import (
    Rig,
    Subscriber,
    fill,
    jsonl_whole,
    small_disk,
    still_watching,
    stops_cleanly,
    tail,
)
from tests.support.mosquitto import Mosquitto
from tests.support.openai_server import ScriptedOpenAIServer

PAGE = 4096  # tmpfs allocates whole pages: a line that crosses into a new one is written only in part


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    """The scripted model: ladder, stove and knife are dangers, anything else is safe."""
    with ScriptedOpenAIServer(responder=responder()) as running:
        yield running


def test_a_full_disk_never_stops_assessing_never_tears_a_line_and_heals_when_space_returns(
        tmp_path: Path, server: ScriptedOpenAIServer, broker: Mosquitto) -> None:
    """A torn last line left in the JSONL file is cut at start. With the disk full, alerts still reach
    stdout (and MQTT where the outbox has room), each failed JSONL write is counted and leaves no partial
    line, and windows are still assessed; when space returns, the alerts kept in memory are written in order
    and MQTT delivers again. Before the fix the first failed write tore a line and stopped the daemon."""
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    with small_disk(tmp_path / "disk", "1m") as disk, Subscriber(broker, "#") as mqtt:
        alerts = disk / "alerts.jsonl"
        torn = b'{"type": "torn by a crash", "al'
        alerts.write_bytes(b'{"type": "earlier"}\n' + torn)
        rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], broker=broker, jsonl=alerts,
                  stdout=True, state_dir=disk / "state", audit=disk / "audit.jsonl")
        topic = f"{rig.prefix}/alerts"
        with Daemon(rig.write(), tmp_path) as daemon:
            repaired = daemon.find("jsonl sink cut a torn last line left by an interrupted write")
            assert repaired[0]["bytes_removed"] == len(torn)
            assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
            mqtt.wait(topic, lambda p: len(p) == 1)
            _leave_room_in_last_page(alerts, 100)
            filler = fill(disk)
            for text in ("Sam leaves the stove on with oil in the pan", "Sam cuts towards his hand with a knife"):
                assert still_watching(daemon, log, zone="kitchen", text=text)["alert"] == "new"
            failures = daemon.wait_log("alert not delivered to a sink", count=2, sink="jsonl")
            assert "No space left on device" in failures[0]["error"]
            daemon.wait_log("history record not written")  # the audit log shares the disk: skipped, counted
            wait_until(lambda: b"knife cut" in daemon.stdout_path.read_bytes(), what="stdout has the knife alert")
            written = [e["hazard"] for e in jsonl_whole(alerts) if "message_id" in e]  # whole lines only
            assert written == ["fall from ladder"]
            filler.unlink()
            assert still_watching(daemon, log, zone="kitchen")["alert"] == "update"
            daemon.wait_log("jsonl sink writing again", written=3)
            mqtt.wait(topic, lambda p: p[-1]["type"] == "update", what="the update after space returned")
            stops_cleanly(daemon)
        lines = jsonl_whole(alerts)
        jsonl_whole(disk / "audit.jsonl")  # never a torn audit record either
        shown = daemon.stdout_path.read_text()
    assert all(hazard in shown for hazard in ("fall from ladder", "unattended hot stove", "knife cut"))
    assert [(e["type"], e["hazard"]) for e in lines if "message_id" in e] == [
        ("new", "fall from ladder"), ("new", "unattended hot stove"), ("new", "knife cut"),
        ("update", "fall from ladder")]
    assert lines[0] == {"type": "earlier"}


def _leave_room_in_last_page(path: Path, room: int) -> None:
    """Pad `path` with a whole JSON line so its last page has `room` bytes left: the next line will tear."""
    size = path.stat().st_size
    pad = (PAGE - size % PAGE - room) % PAGE
    if pad < 16:
        pad += PAGE
    line = json.dumps({"pad": "x" * (pad - 12)})
    assert len(line) + 1 == pad
    with path.open("a") as handle:
        handle.write(line + "\n")


def test_the_monitor_starts_on_a_full_disk_and_its_outbox_opens_when_space_returns(
        tmp_path: Path, server: ScriptedOpenAIServer, broker: Mosquitto) -> None:
    """With the state dir on a full disk, the daemon starts (the outbox unavailable, said once), assesses and
    alerts on stdout; when space returns the outbox opens by itself and MQTT delivers. Before the fix the
    daemon exited at start with "database or disk is full" for as long as the disk stayed full."""
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    with small_disk(tmp_path / "disk", "1m") as disk, Subscriber(broker, "#") as mqtt:
        filler = fill(disk)
        rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], broker=broker, stdout=True,
                  state_dir=disk / "state")
        topic = f"{rig.prefix}/alerts"
        with Daemon(rig.write(), tmp_path) as daemon:
            unavailable = daemon.wait_log("mqtt outbox unavailable; alerts are not stored durably until it opens")
            assert "disk is full" in unavailable[0]["error"]
            assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
            daemon.wait_log("alert not delivered to a sink", sink="mqtt")
            wait_until(lambda: b"fall from ladder" in daemon.stdout_path.read_bytes(), what="stdout has the alert")
            # Stored nowhere, yet sent: kept in memory while the broker is up (before: never sent at all).
            mqtt.wait(topic, lambda p: any(e["hazard"] == "fall from ladder" for e in p),
                      what="the alert the outbox could not store, on MQTT")
            filler.unlink()
            time.sleep(5.5)  # the outbox tries again every REOPEN_INTERVAL_S
            still_watching(daemon, log, zone="kitchen", text="Sam leaves the stove on with oil in the pan")
            delivered = mqtt.wait(topic, lambda p: any(e["hazard"] == "unattended hot stove" for e in p))
            assert daemon.find("mqtt outbox available again")
            assert len(daemon.find("mqtt outbox unavailable; alerts are not stored durably until it opens")) == 1
            stops_cleanly(daemon)
    assert delivered[-1]["type"] == "new"


def _truncated_outbox(path: Path) -> None:
    outbox = Outbox(path)
    outbox.open()
    for n in range(300):
        outbox.put("t", b"x" * 400, qos=1, retain=False, message_id=f"m{n}", created_at=0.0)
    outbox.close()
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _bad_header_outbox(path: Path) -> None:
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    data = bytearray(path.read_bytes())
    data[:16] = b"NOT SQLITE AT AL"
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "garbage": lambda path: path.write_bytes(os.urandom(8192)),
    "truncated": _truncated_outbox,
    "bad header": _bad_header_outbox,
    "folder": lambda path: (path.mkdir(), (path / "note").write_text("a folder where the outbox should be")),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_outbox_is_moved_aside_and_a_fresh_one_delivers(
        tmp_path: Path, server: ScriptedOpenAIServer, broker: Mosquitto, corruption: str) -> None:
    """A garbage, truncated or bad-header outbox file, or a folder in its place, is moved aside with a
    timestamped name (both paths logged), a fresh outbox is created, and alerts reach MQTT. Before the fix
    the daemon exited at start ("file is not a database", "unable to open database file")."""
    log, state = tmp_path / "kitchen.jsonl", tmp_path / "state"
    log.write_text("")
    state.mkdir()
    outbox = state / "mqtt-outbox.sqlite3"
    CORRUPTIONS[corruption](outbox)
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], broker=broker, state_dir=state)
    with Subscriber(broker, "#") as mqtt, Daemon(rig.write(), tmp_path) as daemon:
        moved = daemon.find("mqtt outbox is not a healthy outbox; moved aside, starting a fresh one")
        assert len(moved) == 1 and moved[0]["outbox"] == str(outbox)
        aside = Path(moved[0]["moved_to"])
        assert aside.parent == state and aside.name.startswith("mqtt-outbox.sqlite3.corrupt-") and aside.exists()
        assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
        mqtt.wait(f"{rig.prefix}/alerts", lambda p: len(p) == 1)
        stops_cleanly(daemon)
    assert outbox.is_file()
