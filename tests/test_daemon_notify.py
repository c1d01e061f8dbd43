"""The systemd notify protocol on a real unix datagram socket: READY, WATCHDOG, RELOADING, STOPPING."""

from __future__ import annotations

import asyncio
import itertools
import signal
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.daemon.notify import Notifier
from monitor.daemon.service import Service
from monitor.settings import Settings
from tests.support.daemon import Daemon, NotifySocket, append, responder, write_config
from tests.support.openai_server import ScriptedOpenAIServer


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def test_daemon_sends_ready_watchdog_reloading_and_stopping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    log, alerts = tmp_path / "garage.jsonl", tmp_path / "alerts.jsonl"
    log.write_text("")
    with ScriptedOpenAIServer(responder=responder()) as server:
        config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs={"garage": log},
                              alerts=alerts)
        env = {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "300000"}
        with Daemon(config, tmp_path, env=env) as daemon:
            ready_at, ready = notify_socket.wait_for("READY", "1")[0]
            assert ready["STATUS"].startswith("running: 1 sources")
            append(log, "Sam climbs the ladder")
            pings = notify_socket.wait_for("WATCHDOG", "1", count=8)
            daemon.signal(signal.SIGHUP)
            reloading = notify_socket.wait_for("RELOADING", "1")[0][1]
            notify_socket.wait_for("READY", "1", count=2)
            daemon.signal(signal.SIGTERM)
            stopping = notify_socket.wait_for("STOPPING", "1")[0][1]
            assert daemon.wait(timeout=15) == 0
    after_ready = [t for t, _ in pings if t >= ready_at]
    gaps = [b - a for a, b in itertools.pairwise(after_ready)]
    assert len(gaps) >= 3 and 0.05 < statistics.median(gaps) < 0.5  # every WATCHDOG_USEC / 2 = 0.15 s
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert "stopping" in stopping["STATUS"]
    received = [m for _, m in notify_socket.messages]
    assert received.index(ready) < received.index(reloading) < received.index(stopping)


def test_notifier_sends_to_a_socket_path_and_is_a_no_op_without_one() -> None:
    with tempfile.TemporaryDirectory(prefix="pm-") as directory:  # short: unix socket paths are limited
        path = Path(directory) / "notify"
        sock = NotifySocket(path)
        try:
            env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"}
            notifier = Notifier.from_environment(env)
            assert env == {}  # hidden from children, like sd_notify(unset_environment=1)
            assert notifier.watchdog_interval_s == 1.0
            assert notifier.ready("line one\nline two")
            assert sock.wait_for("READY", "1")[0][1]["STATUS"] == "line one line two"
            notifier.close()
        finally:
            sock.close()
    silent = Notifier.from_environment({})
    assert not silent.enabled and silent.watchdog_interval_s is None and not silent.ready("x")
    other = Notifier.from_environment({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval_s is None  # the watchdog is meant for another process


async def test_watchdog_pings_stop_when_the_scheduler_stalls(
        tmp_path: Path, notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_HEALTH__STALL_AFTER_S", "0.5")
    monkeypatch.setenv("MONITOR_HEALTH__PORT", "0")
    script = tmp_path / "script.json"
    script.write_text('{"default": {"danger": false}}')
    settings = Settings.model_validate({"model": {"backend": "scripted", "script": str(script)},
                                        "sinks": {"stdout": {"enabled": False}}})
    service = Service(settings, notifier=Notifier(notify_socket.address, watchdog_usec=200_000))
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(_until(lambda: service.state == "running"), 10)
        assert service.liveness()[0]
        assert service.pipeline is not None
        hanging, unstick = asyncio.Event(), asyncio.Event()

        async def hang() -> None:  # a stage that stops making progress
            hanging.set()
            await unstick.wait()

        monkeypatch.setattr(service.pipeline, "_offer_due_windows", hang)
        await asyncio.wait_for(hanging.wait(), 5)
        await asyncio.wait_for(_until(lambda: not service.liveness()[0]), 5)
        notify_socket.receive()
        count = len(notify_socket.with_field("WATCHDOG"))
        await asyncio.sleep(0.6)  # three intervals without a ping
        notify_socket.receive()
        assert len(notify_socket.with_field("WATCHDOG")) == count
        alive, body = service.liveness()
        assert not alive and "scheduler has not run" in body["problems"][0]
        unstick.set()
        monkeypatch.undo()
        await asyncio.wait_for(_until(lambda: service.liveness()[0]), 5)
    finally:
        service.request_stop()
        assert await asyncio.wait_for(running, 10) == 0


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.02)
