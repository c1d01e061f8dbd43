"""Readiness decisions: grace periods for sources and sinks, model freshness and the idle probe."""

from __future__ import annotations

from monitor.daemon.health import BackendStatus, Readiness, Snapshot
from monitor.daemon.settings import HealthSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Probe:
    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, url: str, key: str | None, timeout: float) -> tuple[bool, str]:
        self.calls.append((url, key))
        return self.ok, "HTTP 200" if self.ok else "connection refused"


def backend(**fields: float | None) -> BackendStatus:
    values: dict[str, float | None] = {"last_success_at": None, "last_error_at": None, **fields}
    return BackendStatus(name="openai", base_url="http://user:pw@127.0.0.1:9/v1", api_key="sk-secret",
                         last_success_at=values["last_success_at"], last_error_at=values["last_error_at"])


def readiness(clock: Clock, probe: Probe) -> Readiness:
    settings = HealthSettings(ready_grace_s=10, backend_fresh_s=30)
    return Readiness(settings, probe=probe, clock=clock, wall=clock)


async def test_an_offline_source_or_sink_is_ready_only_within_its_grace_period() -> None:
    clock, probe = Clock(), Probe()
    check = readiness(clock, probe)
    fresh = backend(last_success_at=clock.now)

    def snap(camera: bool, mqtt: bool | None) -> Snapshot:
        return Snapshot(state="running", sources={"camera": camera, "log": True},
                        sinks={"mqtt": mqtt, "jsonl": None}, backend=fresh)

    ok, body = await check.check(snap(False, False))
    assert ok and "within grace" in body["checks"]["sources"]["detail"]["camera"]
    clock.now += 11
    fresh.last_success_at = clock.now
    ok, body = await check.check(snap(False, True))
    assert not ok and body["failed"] == ["sources"]
    assert body["checks"]["sources"]["detail"]["camera"].startswith("offline for 11.0 s")
    assert body["checks"]["sinks"]["detail"] == {"mqtt": "online", "jsonl": "no connection to report"}
    ok, _ = await check.check(snap(True, True))
    assert ok
    ok, _ = await check.check(snap(True, False))  # a new outage gets a new grace period
    assert ok


async def test_the_backend_is_ready_when_fresh_probed_when_idle_and_unready_when_failing() -> None:
    clock, probe = Clock(), Probe()
    check = readiness(clock, probe)
    status = backend(last_success_at=clock.now - 5)

    def snap() -> Snapshot:
        return Snapshot(state="running", sources={}, sinks={}, backend=status)

    assert (await check.check(snap()))[0] and probe.calls == []  # answered 5 s ago
    clock.now += 60  # idle past backend_fresh_s: probe GET /models, with the key, once
    ok, body = await check.check(snap())
    assert ok and probe.calls == [("http://user:pw@127.0.0.1:9/v1", "sk-secret")]
    assert "user:pw" not in str(body) and "sk-secret" not in str(body)
    status.last_error_at = clock.now + 1  # a call failed after the last success
    clock.now += 20
    probe.ok = False
    ok, body = await check.check(snap())
    assert not ok and body["failed"] == ["backend"]
    assert "probe GET http://127.0.0.1:9/v1/models failed: connection refused" in body["checks"]["backend"]["detail"]
    calls = len(probe.calls)
    assert not (await check.check(snap()))[0] and len(probe.calls) == calls  # failure cached briefly
    clock.now += 6
    probe.ok = True
    assert (await check.check(snap()))[0]


async def test_not_ready_while_starting_or_stopping_and_without_a_backend() -> None:
    check = readiness(Clock(), Probe())
    ok, body = await check.check(Snapshot(state="starting", sources={}, sinks={}, backend=None))
    assert not ok and body["failed"] == ["service", "backend"]
    answered = backend(last_success_at=1000.0)
    ok, body = await check.check(Snapshot(state="stopping", sources={}, sinks={}, backend=answered))
    assert not ok and body["failed"] == ["service"]
