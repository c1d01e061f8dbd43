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


async def test_the_backend_is_probed_only_until_the_first_real_call() -> None:
    """A monitor that has not called the model yet probes GET /models (with the key, shown without
    credentials) and caches a failed probe briefly; from the first real call on, the probe is never asked."""
    clock, probe = Clock(), Probe(ok=False)
    check = readiness(clock, probe)
    status = backend()

    def snap() -> Snapshot:
        return Snapshot(state="running", sources={}, sinks={}, backend=status)

    ok, body = await check.check(snap())
    assert not ok and body["failed"] == ["backend"]
    assert probe.calls == [("http://user:pw@127.0.0.1:9/v1", "sk-secret")]
    assert "probe GET http://127.0.0.1:9/v1/models failed: connection refused" in body["checks"]["backend"]["detail"]
    assert "user:pw" not in str(body) and "sk-secret" not in str(body)
    assert not (await check.check(snap()))[0] and len(probe.calls) == 1  # failure cached briefly
    clock.now += 6
    probe.ok = True
    ok, body = await check.check(snap())
    assert ok and "idle; probe GET http://127.0.0.1:9/v1/models ok" in body["checks"]["backend"]["detail"]

    status.last_success_at = clock.now
    clock.now += 3600  # an hour of quiet after a real success: still ready, and no probe
    calls = len(probe.calls)
    ok, body = await check.check(snap())
    assert ok and len(probe.calls) == calls
    assert body["checks"]["backend"]["detail"].startswith("the last model call succeeded 3600.0 s ago")


async def test_a_failing_real_call_is_not_ready_whatever_the_probe_says() -> None:
    """The bug of issue 10: during 500s, 429s and 401s the models list still answers, and readiness said
    "idle; probe GET .../models ok". Real call outcomes decide; the probe is not even asked."""
    clock, probe = Clock(), Probe(ok=True)
    check = readiness(clock, probe)
    status = backend(last_success_at=clock.now - 100)
    status.last_error_at, status.last_error = clock.now - 1, "transient: HTTP 500 from the model server"

    ok, body = await check.check(Snapshot(state="running", sources={}, sinks={}, backend=status))
    assert not ok and body["failed"] == ["backend"] and probe.calls == []
    assert body["checks"]["backend"]["detail"] == (
        "the last model call failed 1.0 s ago: transient: HTTP 500 from the model server")
    clock.now += 600  # long after: still failing until a call succeeds
    assert not (await check.check(Snapshot(state="running", sources={}, sinks={}, backend=status)))[0]
    status.last_success_at = clock.now
    assert (await check.check(Snapshot(state="running", sources={}, sinks={}, backend=status)))[0]


async def test_a_hanging_call_is_not_ready() -> None:
    """A call that waits longer than the attempt timeout has not failed yet, but the model does not answer."""
    clock, probe = Clock(), Probe()
    check = readiness(clock, probe)
    status = backend(last_success_at=clock.now)
    status.hung_after_s, status.oldest_call_s = 10.0, 4.0
    snap = Snapshot(state="running", sources={}, sinks={}, backend=status)
    assert (await check.check(snap))[0]
    status.oldest_call_s = 12.5
    ok, body = await check.check(snap)
    assert not ok and body["checks"]["backend"]["detail"] == (
        "a model call has waited 12.5 s (longer than model.attempt_timeout_s=10)")


async def test_not_ready_while_a_zone_is_blind() -> None:
    """`/readyz` is 503 while any zone is blind; unknown and off zones are not failures."""
    clock, probe = Clock(), Probe()
    check = readiness(clock, probe)
    answered = backend(last_success_at=clock.now)
    zones = {"kitchen": ("clear", "the last assessment found no hazard"),
             "garage": ("off", "monitoring is switched off"), "hall": ("unknown", "no observations since start")}
    assert (await check.check(Snapshot(state="running", sources={}, sinks={}, backend=answered, zones=zones)))[0]
    zones["kitchen"] = ("blind", "every source of the zone is offline: cam")
    ok, body = await check.check(Snapshot(state="running", sources={}, sinks={}, backend=answered, zones=zones))
    assert not ok and body["failed"] == ["zones"]
    assert body["checks"]["zones"]["detail"]["kitchen"] == "blind: every source of the zone is offline: cam"


async def test_not_ready_while_starting_or_stopping_and_without_a_backend() -> None:
    check = readiness(Clock(), Probe())
    ok, body = await check.check(Snapshot(state="starting", sources={}, sinks={}, backend=None))
    assert not ok and body["failed"] == ["service", "backend"]
    answered = backend(last_success_at=1000.0)
    ok, body = await check.check(Snapshot(state="stopping", sources={}, sinks={}, backend=answered))
    assert not ok and body["failed"] == ["service"]


async def test_a_sink_that_failed_its_last_alert_or_a_task_that_died_is_not_ready_and_named() -> None:
    """Readiness covers delivery: a sink that failed the last alert it was given (a full disk, a broken
    outbox) makes `/readyz` 503 naming the sink and the error until it takes an alert again; a supervised task
    that died recently does too. Before, a sink that lost 80 of 90 alerts was `ready`."""
    from monitor.daemon.health import DeliveryWatch
    from tests.support.mosquitto import alert_event

    clock, probe = Clock(), Probe()
    check, watch = readiness(clock, probe), DeliveryWatch(clock=clock)
    fresh = backend(last_success_at=clock.now)

    def snap(tasks: dict[str, str | None] | None = None) -> Snapshot:
        return Snapshot(state="running", sources={}, sinks={"mqtt": True, "jsonl": None}, backend=fresh,
                        delivery={name: watch.problem(name) for name in ("mqtt", "jsonl")}, tasks=tasks or {})

    first, second = alert_event("kitchen", 1), alert_event("kitchen", 2)
    watch.sink_failed("jsonl", first, OSError(28, "No space left on device"))
    watch.alert_published(first)
    clock.now += 5
    ok, body = await check.check(snap())
    assert not ok and body["failed"] == ["delivery"]
    assert body["checks"]["delivery"]["detail"] == {
        "mqtt": "delivering", "jsonl": "failing to take alerts for 5 s: OSError: [Errno 28] No space left on device"}
    watch.alert_published(second)  # taken by every sink
    ok, body = await check.check(snap())
    assert ok and body["checks"]["delivery"]["detail"] == {"mqtt": "delivering", "jsonl": "delivering"}
    ok, body = await check.check(snap({"alert-expiry": "task alert-expiry died 1 s ago and was restarted"}))
    assert not ok and body["failed"] == ["tasks"]
    assert body["checks"]["tasks"]["detail"] == {"alert-expiry": "task alert-expiry died 1 s ago and was restarted"}
