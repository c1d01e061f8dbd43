"""SIGHUP: a valid configuration is applied without losing open alerts; an invalid one is rejected."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, alert_lines, append, responder, wait_until, write_config
from tests.support.openai_server import ScriptedOpenAIServer


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(responder=responder()) as server:
        yield server


def wait_alert(alerts: Path, count: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = wait_until(lambda: (a := alert_lines(alerts)) and len(a) >= count and a,
                                             what=f"{count} alert lines")
    return lines


def test_valid_reload_adds_a_source_and_raises_min_confidence_and_open_alerts_survive(
        tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    garage, kitchen, alerts = tmp_path / "garage.jsonl", tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    garage.write_text("")
    kitchen.write_text("")
    config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs={"garage": garage},
                          alerts=alerts, min_confidence=0.5)
    with Daemon(config, tmp_path) as daemon:
        append(garage, "Sam climbs the ladder and leans out")
        ladder = wait_alert(alerts, 1)[0]
        append(garage, "Sam cuts bread with a knife towards his hand")  # confidence 0.6 >= 0.5: warns
        assert wait_alert(alerts, 2)[1]["hazard"] == "knife cut"

        write_config(config, base_url=server.base_url, logs={"garage": garage, "kitchen": kitchen},
                     alerts=alerts, min_confidence=0.7, attempt_timeout_s=9.0, stdout=True)
        daemon.signal(signal.SIGHUP)
        reloaded = daemon.wait_log("configuration reloaded")[0]
        assert {"sources", "alerts", "model"} <= set(reloaded["changed"])
        assert daemon.find("model backend replaced")  # [model] changed: a new client, same open alerts
        assert daemon.find("sink started", sink="stdout")
        assert daemon.find("source added", source="kitchen")
        assert not daemon.find("source restarted")  # the garage tail kept running

        append(garage, "Sam cuts more bread with the knife")  # 0.6 < 0.7 now: assessed, no alert
        daemon.wait_log("window assessed", count=3)
        append(garage, "Sam is back on the ladder, leaning out")
        update = wait_alert(alerts, 3)[2]
        append(kitchen, "Sam leaves the stove on with oil in the pan")
        stove = wait_alert(alerts, 4)[3]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        knife_after = daemon.find("window assessed", hazard="knife cut")[-1]
        stdout = daemon.stdout_path.read_text()
    assert knife_after["verdict"] == "danger" and knife_after["alert"] is None
    assert update["type"] == "update" and update["id"] == ladder["id"] and update["updates"] == 1
    assert stove["type"] == "new" and stove["zone"] == "kitchen"
    assert "unattended hot stove" in stdout and "fall from ladder" in stdout  # the sink added by the reload
    assert "knife cut" not in stdout  # it was decided before the reload


def test_invalid_reload_is_rejected_with_one_line_per_problem_and_the_old_config_keeps_running(
        tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    garage, alerts = tmp_path / "garage.jsonl", tmp_path / "alerts.jsonl"
    garage.write_text("")
    config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs={"garage": garage},
                          alerts=alerts)
    with Daemon(config, tmp_path) as daemon:
        append(garage, "Sam climbs the ladder and leans out")
        first = wait_alert(alerts, 1)[0]
        good = config.read_text()
        config.write_text(good.replace("min_interval_s = 0.0", "min_interval = 3")
                          .replace("concurrency = 2", "concurrency = 0"))
        daemon.signal(signal.SIGHUP)
        kept = daemon.wait_log("keeping the running configuration")[0]
        problems = [r["problem"] for r in daemon.find("configuration reload rejected")]
        assert kept["problems"] == len(problems) == 2
        assert f"{config}: windows.min_interval: unknown key (did you mean 'min_interval_s'?)" in problems
        assert any(p.startswith(f"{config}: model.concurrency: ") for p in problems)

        append(garage, "Sam is on the ladder again")  # the old configuration still runs
        update = wait_alert(alerts, 2)[1]
        status, ready = daemon.json("/readyz")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
    assert update["type"] == "update" and update["id"] == first["id"]
    assert status == 200 and ready["ready"] is True
