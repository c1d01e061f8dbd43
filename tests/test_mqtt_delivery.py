"""Delivery that loses nothing: broker outages, a monitor restart, and the outbox's bound."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from monitor.mqtt.settings import MqttSettings
from monitor.sinks.mqtt import MqttSink
from monitor.sinks.outbox import Outbox, OutboxError
from tests.support.mosquitto import Mosquitto, Recorder, alert_event

ALERTS = 1000


def settings_for(broker: Mosquitto, **overrides: object) -> MqttSettings:
    values: dict[str, object] = {
        "host": broker.host, "port": broker.port, "topic_prefix": f"pm_test/{uuid.uuid4().hex[:8]}",
        "reconnect_min_s": 0.05, "reconnect_max_s": 0.3, "close_timeout_s": 20.0, "publish_timeout_s": 3.0,
        "discovery": {"enabled": False},
    }
    values.update(overrides)
    return MqttSettings.model_validate(values)


async def test_a_thousand_alerts_survive_three_broker_restarts_and_a_monitor_restart(tmp_path: Path) -> None:
    # Persistence keeps the subscriber's session (and its queued QoS 1 messages) across broker restarts.
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    settings = settings_for(broker)
    alerts_topic = f"{settings.topic_prefix}/alerts"
    state = tmp_path / "state"
    sent: list[str] = []
    outages = {150: 250, 420: 650, 800: 880}  # broker down from the first index to the second
    monitor_restart_at = 550  # during the second outage, with a backlog in the outbox
    started = time.monotonic()
    with broker:
        async with Recorder(broker, alerts_topic, persistent=True) as rec:
            sink = MqttSink(settings, zones=["kitchen"], state_dir=state)
            await sink.start()
            for n in range(ALERTS):
                if n in outages:
                    await asyncio.to_thread(broker.stop)
                if n in outages.values():
                    await asyncio.to_thread(broker.start)
                if n == monitor_restart_at:
                    # The monitor restarts without flushing: what is waiting stays in the outbox on disk.
                    await sink.close(flush=False)
                    pending_at_restart = len(sink.outbox)
                    sink = MqttSink(settings, zones=["kitchen"], state_dir=state)
                    await sink.start()
                event = alert_event("kitchen", n)
                sent.append(event.message_id)
                await sink.publish(event)
                await asyncio.sleep(0.002)  # alerts arrive over time, not all at once
            await sink.close()
            assert len(sink.outbox) == 0

            def received() -> set[str]:
                return {m.json()["message_id"] for m in rec.messages}

            await rec.wait_for(lambda: received() >= set(sent), timeout=30, what="every alert")
            ids = [m.json()["message_id"] for m in rec.messages]
    unique = set(ids)
    missing = set(sent) - unique
    first_arrivals = list(dict.fromkeys(ids))
    print(f"\n{ALERTS} alerts sent through 3 broker restarts and 1 monitor restart "
          f"({pending_at_restart} waiting in the outbox at the restart): {len(unique)} distinct message ids "
          f"received, {len(ids)} messages in all ({len(ids) - len(unique)} duplicates), {len(missing)} missing, "
          f"{time.monotonic() - started:.1f} s")
    assert not missing
    assert len(unique) == ALERTS
    assert first_arrivals == sent  # in order


def test_outbox_keeps_order_across_reopen_and_removes_only_what_was_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path, max_messages=10)
    outbox.open()
    for n in range(5):
        outbox.put("t", f"m{n}".encode(), qos=1, retain=False, message_id=f"id{n}", created_at=float(n))
    first = outbox.peek(2)
    assert [m.message_id for m in first] == ["id0", "id1"]
    assert outbox.remove_through(first[-1].seq) == 2
    outbox.close()

    reopened = Outbox(path, max_messages=10)
    reopened.open()
    assert len(reopened) == 3
    assert [(m.message_id, m.payload) for m in reopened.peek(10)] == [("id2", b"m2"), ("id3", b"m3"), ("id4", b"m4")]
    assert path.with_name(path.name + "-wal").exists()  # WAL mode
    reopened.close()


def test_full_outbox_drops_the_oldest_with_a_warning_and_a_count(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", max_messages=3)
    outbox.open()
    with capture_logs() as logs:
        for n in range(5):
            outbox.put("t", b"x", qos=1, retain=False, message_id=f"id{n}", created_at=0.0)
    assert [m.message_id for m in outbox.peek(10)] == ["id2", "id3", "id4"]
    assert outbox.dropped == 2 and len(outbox) == 3
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["message_id"] for e in warnings] == ["id0", "id1"]
    assert all("oldest message dropped" in e["event"] for e in warnings)
    outbox.close()


async def test_publish_returns_fast_while_the_broker_is_down(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")  # never started
    sink = MqttSink(settings_for(broker, close_timeout_s=0.2), zones=["kitchen"], state_dir=tmp_path / "state")
    await sink.start()
    started = time.perf_counter()
    for n in range(50):
        await sink.publish(alert_event("kitchen", n))
    elapsed = time.perf_counter() - started
    assert len(sink.outbox) == 100  # each new alert: the alerts message and the HA event
    assert elapsed < 2.0, f"50 alerts (100 durable messages) took {elapsed:.2f} s"
    await sink.close()
    assert sink.outbox.path.exists()


async def test_alerts_the_outbox_cannot_store_still_reach_the_broker_in_order_and_go_durable_when_it_can(
        tmp_path: Path) -> None:
    """A full disk under the outbox: before, the alert was counted as not delivered and never sent, though the
    broker was up (Home Assistant saw only the zone's state). Now it is kept in memory and sent; once the outbox
    stores again, what is still kept goes in first, so the order holds. A stop before it is sent says so."""
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    settings = settings_for(broker, close_timeout_s=2.0)
    alerts_topic = f"{settings.topic_prefix}/alerts"
    with broker:
        # Persistent: the broker keeps what arrives while the recorder reconnects after the broker's restart.
        async with Recorder(broker, alerts_topic, persistent=True) as rec:
            sink = MqttSink(settings, zones=["kitchen"], state_dir=tmp_path / "state")
            await sink.start()
            await sink.wait_connected()
            store = sink.outbox.put

            def full_disk(*args: object, **kwargs: object) -> int:
                raise OutboxError(f"outbox {sink.outbox.path}: cannot store message: database or disk is full")

            sink.outbox.put = full_disk  # type: ignore[method-assign]
            sent = [alert_event("kitchen", n) for n in range(6)]
            for event in sent[:3]:
                try:
                    await sink.publish(event)
                except OutboxError as exc:
                    assert "kept in memory and sent while the broker is connected" in str(exc)
                else:
                    raise AssertionError("a message the outbox could not store was reported as stored")
            await rec.wait_for(lambda: len(rec.messages) >= 3, timeout=10, what="the kept alerts")
            deadline = time.monotonic() + 10  # the HA event messages, which the recorder does not hear, too
            while sink.stats_payload()["mqtt"]["memory_pending"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert sink.stats_payload()["mqtt"]["memory_pending"] == 0 and sink.counters["outbox_put_failures"] == 3

            await asyncio.to_thread(broker.stop)  # kept while the broker is away too, then the disk has room
            with contextlib.suppress(OutboxError):
                await sink.publish(sent[3])
            assert len(sink.overflow) == 2  # the alerts message and the HA event of the fourth
            sink.outbox.put = store  # type: ignore[method-assign]
            for event in sent[4:]:
                await sink.publish(event)  # the kept ones go into the outbox first, then these
            assert len(sink.overflow) == 0 and len(sink.outbox) == 6
            await asyncio.to_thread(broker.start)
            ids = [e.message_id for e in sent]
            await rec.wait_for(lambda: {m.json()["message_id"] for m in rec.messages} >= set(ids), timeout=20,
                               what="every alert")
            await sink.close()
    assert list(dict.fromkeys(m.json()["message_id"] for m in rec.messages)) == ids


async def test_a_stop_says_which_kept_messages_it_loses(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")  # never started: nothing is sent
    sink = MqttSink(settings_for(broker, close_timeout_s=0.2), zones=["kitchen"], state_dir=tmp_path / "state")
    await sink.start()

    def full_disk(*args: object, **kwargs: object) -> int:
        raise OutboxError("database or disk is full")

    sink.outbox.put = full_disk  # type: ignore[method-assign]
    event = alert_event("kitchen", 1)
    with capture_logs() as logs:
        with contextlib.suppress(OutboxError):
            await sink.publish(event)
        assert sink.backlog == 2
        await sink.close()
    lost = [e for e in logs if e["event"].startswith("mqtt messages the outbox could not store were not delivered")]
    assert lost and lost[0]["lost"] == 2 and event.message_id in lost[0]["message_ids"]


class _ListClient:
    """Stands in for the connected aiomqtt client: records what is published, in order (QoS 1 acks at once)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        await asyncio.sleep(0.001)
        self.sent.append(payload.decode())


async def test_a_spill_racing_a_delivery_never_sends_newer_messages_first(tmp_path: Path) -> None:
    """Found in review: the delivery read the outbox (empty), then memory; a publish spilling the oldest kept
    messages into the outbox in between made memory's newer ones go first. The choice is now atomic."""
    sink = MqttSink(settings_for(Mosquitto(tmp_path / "broker")), zones=["k"], state_dir=tmp_path / "state")
    await asyncio.to_thread(sink.outbox.open)
    for n in range(1, 41):
        sink.overflow.keep("t", f"M{n}".encode(), qos=1, retain=False, message_id=f"M{n}", created_at=0.0)
    peek = sink.overflow.peek
    racing: list[threading.Thread] = []
    loop = asyncio.get_running_loop()

    def publish() -> None:  # what `_enqueue` does, from its worker thread
        sink._store("t", b"N", "N", 0.0)
        loop.call_soon_threadsafe(sink._outbox_wake.set)

    put = sink.outbox.put

    def slow_put(*args: Any, **kwargs: Any) -> int:  # a full-sync commit each, as on a real disk
        time.sleep(0.01)
        return put(*args, **kwargs)

    def peek_while_a_publish_spills(limit: int) -> list[Any]:
        if not racing:  # a publish arrives, on another thread, just as the delivery turns to memory...
            racing.append(threading.Thread(target=publish))
            racing[0].start()
            deadline = time.monotonic() + 0.5
            while len(sink.outbox) < 10 and time.monotonic() < deadline:  # ...and spills the oldest meanwhile
                time.sleep(0.005)
        return peek(limit)

    sink.outbox.put = slow_put  # type: ignore[method-assign]

    sink.overflow.peek = peek_while_a_publish_spills  # type: ignore[method-assign]
    client = _ListClient()
    task = asyncio.create_task(sink._deliver(client))  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 10
        while len(set(client.sent)) < 41 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for thread in racing:
            await asyncio.to_thread(thread.join)
        await asyncio.to_thread(sink.outbox.close)
    assert list(dict.fromkeys(client.sent)) == [f"M{n}" for n in range(1, 41)] + ["N"]
