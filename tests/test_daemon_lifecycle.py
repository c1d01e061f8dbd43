"""The daemon's shutdown, as systemd drives it: SIGTERM while the model is busy, a second SIGINT."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, alert_lines, append, responder, write_config
from tests.support.openai_server import ScriptedOpenAIServer


@pytest.fixture
def slow_server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(responder=responder(delay_s=1.5)) as server:
        yield server


def two_zone_config(tmp_path: Path, server: ScriptedOpenAIServer, **options: float) -> tuple[Path, Path, Path, Path]:
    garage, kitchen, alerts = tmp_path / "garage.jsonl", tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    garage.write_text("")
    kitchen.write_text("")
    config = write_config(tmp_path / "monitor.toml", base_url=server.base_url,
                          logs={"garage": garage, "kitchen": kitchen}, alerts=alerts, **options)  # type: ignore[arg-type]
    return config, garage, kitchen, alerts


def test_sigterm_during_busy_assessment_exits_0_and_every_decided_alert_reaches_the_sink(
        tmp_path: Path, slow_server: ScriptedOpenAIServer) -> None:
    config, garage, kitchen, alerts = two_zone_config(tmp_path, slow_server, shutdown_timeout_s=6.0)
    with Daemon(config, tmp_path) as daemon:
        append(garage, "Sam climbs the ladder and leans out")
        append(kitchen, "Sam leaves the stove on with oil in the pan")
        daemon_calls = time.monotonic() + 10
        while slow_server.calls < 2 and time.monotonic() < daemon_calls:
            time.sleep(0.02)
        assert slow_server.calls == 2  # both windows are with the (slow) model now
        append(garage, "Sam climbs the ladder again")  # queued behind the busy garage window
        time.sleep(0.2)
        signalled = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=6.0 + 5) == 0
        took = time.monotonic() - signalled
        logs = daemon.logs()
    assert took < 6.0 + 2, f"shutdown took {took:.1f} s"
    stopping = next(r for r in logs if r["event"] == "pipeline stopping")
    assert stopping["in_flight"] == 2
    assessed = [r for r in logs if r["event"] == "window assessed"]
    assert len(assessed) == slow_server.calls == 3  # the queued window was assessed too, not dropped
    decided = {(r["window"], r["alert"]) for r in assessed if r["alert"]}
    delivered = {(a["window_id"], a["type"]) for a in alert_lines(alerts)}
    assert decided == delivered and len(decided) == 3
    assert not [r for r in logs if r["event"] == "window dropped"]
    assert [r["event"] for r in logs][-1] == "monitor stopped"


def test_in_flight_windows_past_the_timeout_are_cancelled_with_a_reason(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(responder=responder(delay_s=6.0)) as server:
        config, garage, kitchen, alerts = two_zone_config(tmp_path, server, shutdown_timeout_s=1.0)
        with Daemon(config, tmp_path) as daemon:
            append(garage, "Sam climbs the ladder and leans out")
            append(kitchen, "Sam leaves the stove on")
            deadline = time.monotonic() + 10
            while server.calls < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            signalled = time.monotonic()
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(timeout=8) == 0
            took = time.monotonic() - signalled
            dropped = daemon.find("window dropped", reason="shutdown")
    assert took < 1.0 + 2.5, f"shutdown took {took:.1f} s"
    assert {r["zone"] for r in dropped} == {"garage", "kitchen"}
    assert all("shutdown_timeout_s=1" in r["detail"] and r["dropped"] is True for r in dropped)
    assert alert_lines(alerts) == []


def test_second_sigint_forces_exit(tmp_path: Path) -> None:
    with ScriptedOpenAIServer(responder=responder(delay_s=6.0)) as server:
        config, garage, _kitchen, _alerts = two_zone_config(tmp_path, server, shutdown_timeout_s=20.0)
        with Daemon(config, tmp_path) as daemon:
            append(garage, "Sam climbs the ladder")
            deadline = time.monotonic() + 10
            while server.calls < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            daemon.signal(signal.SIGINT)
            daemon.wait_log("pipeline stopping")
            daemon.signal(signal.SIGINT)
            assert daemon.wait(timeout=5) == 130
            assert daemon.find("second interrupt, exiting now")
