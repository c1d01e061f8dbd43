"""Readiness covers delivery (issue 20, section 6): a sink that cannot deliver or queue is named on `/readyz`
and in the stats topic's `problems` (the hub's problem entity in Home Assistant), and recovers by itself.

The real daemon (subprocess), the scripted model server and a real mosquitto; the full disk is a 1 MB tmpfs
(root only: the test skips, saying why, where mounting is not allowed), as in tests/test_faults_disk.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, responder, wait_until
from tests.support.faults import Rig, Subscriber, fill, small_disk, still_watching, stops_cleanly, tail
from tests.support.mosquitto import Mosquitto
from tests.support.openai_server import ScriptedOpenAIServer


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(responder=responder()) as running:
        yield running


def test_a_sink_that_cannot_queue_or_write_makes_readyz_503_naming_it_and_recovers_when_it_delivers(
        tmp_path: Path, server: ScriptedOpenAIServer, broker: Mosquitto) -> None:
    """With the state disk full, the MQTT outbox cannot queue and the JSONL sink cannot write: from the first
    alert they fail, `/readyz` is 503 with `delivery` naming both sinks and the error, and the stats topic's
    `problems` (which the hub's problem entity shows) lists them. When space returns and the sinks take an
    alert again, readiness comes back by itself. Before the fix `/readyz` said 200 while 80 of 90 alerts never
    reached MQTT."""
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    with small_disk(tmp_path / "disk", "1m") as disk:
        rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], broker=broker, stdout=True,
                  state_dir=disk / "state", jsonl=disk / "alerts.jsonl", extra="stats_interval_s = 0.5\n")
        config = rig.write()
        filler = fill(disk)
        with Subscriber(broker, f"{rig.prefix}/stats") as mqtt, Daemon(config, tmp_path) as daemon:
            assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
            daemon.wait_log("alert not delivered to a sink", sink="mqtt")
            status, ready = daemon.json("/readyz")
            assert status == 503 and "delivery" in ready["failed"], ready
            detail = ready["checks"]["delivery"]["detail"]
            assert detail["mqtt"].startswith("failing to take alerts for") and "outbox" in detail["mqtt"], detail
            assert "No space left on device" in detail["jsonl"], detail
            stats = mqtt.wait(f"{rig.prefix}/stats", lambda p: bool(_problems(p)), what="problems in the stats")
            assert {line.split(":")[0] for line in _problems(stats)} == {"sink mqtt", "sink jsonl"}

            filler.unlink()
            wait_until(lambda: _ready_after_an_alert(daemon, log), timeout=30,
                       what="ready again once the sinks take an alert")
            mqtt.wait(f"{rig.prefix}/stats", lambda p: not _problems(p), what="no problems in the stats")
            stops_cleanly(daemon)


def _problems(payloads: list[dict[str, Any]]) -> list[str]:
    return list(payloads[-1].get("problems", [])) if payloads else []


def _ready_after_an_alert(daemon: Daemon, log: Path) -> bool:
    still_watching(daemon, log, zone="kitchen", text="Sam leaves the stove on with oil in the pan")
    status, ready = daemon.json("/readyz")
    return status == 200 and ready["checks"]["delivery"]["ok"] is True
