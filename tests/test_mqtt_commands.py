"""Commands are not state (issue 20, section 5), and the sink deletes only what it published (section 2),
against a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from monitor.control import ZoneControls
from monitor.escalation.engine import AckRequest
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.mqtt import MqttSink
from tests.support.mosquitto import Mosquitto, Recorder, alert_event, publish, retained


def settings_for(broker: Mosquitto) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                        reconnect_min_s=0.05, reconnect_max_s=0.5, close_timeout_s=3.0)


async def test_retained_commands_published_before_the_monitor_connects_do_nothing_and_are_cleared(
        tmp_path: Path) -> None:
    """A retained PRESS on a zone's ack topic and a retained OFF on its monitoring/set, replayed by the broker
    when the monitor connects (first start, and again after a broker restart), acknowledge nothing and switch
    nothing; each is deleted and counted. Before the fix the OFF switched the zone off at every reconnect and
    the PRESS acknowledged its alerts."""
    broker = Mosquitto(tmp_path / "broker", persistence=True).start()
    try:
        settings = settings_for(broker)
        p = settings.topic_prefix
        await publish(broker, f"{p}/kitchen/ack", b"PRESS", retain=True)
        await publish(broker, f"{p}/kitchen/monitoring/set", b"OFF", retain=True)
        await publish(broker, f"{p}/kitchen/sensitivity/set", b"0.1", retain=True)
        controls = ZoneControls()
        acks: list[AckRequest] = []
        sink = MqttSink(settings, zones=["kitchen"], state_dir=tmp_path / "state", controls=controls,
                        acknowledge=acks.append)
        await sink.start()
        await sink.wait_connected()
        await _until(lambda: sink.counters["retained_commands_ignored"] == 3)
        assert not await retained(broker, f"{p}/+/ack")
        assert not await retained(broker, f"{p}/+/+/set")

        # A live OFF is a command; a retained one that lingers on the broker is replayed after its restart.
        await publish(broker, f"{p}/kitchen/monitoring/set", b"OFF", retain=True)
        await _until(lambda: not controls.is_monitoring("kitchen"))
        await publish(broker, f"{p}/kitchen/monitoring/set", b"ON")
        await _until(lambda: controls.is_monitoring("kitchen"))
        broker.restart()
        await _until(lambda: sink.counters["connects"] == 2 and sink.connected)
        await _until(lambda: sink.counters["retained_commands_ignored"] == 4)
        assert controls.is_monitoring("kitchen") is True
        assert controls.get_sensitivity("kitchen") == ZoneControls().get_sensitivity("kitchen")
        assert acks == []
        states = await retained(broker, f"{p}/kitchen/+/state")
        assert states[f"{p}/kitchen/monitoring/state"].payload == b"ON"  # the state lives in the monitor's topic
        await sink.close()
    finally:
        broker.stop()


async def test_an_empty_message_on_a_command_topic_is_no_command(broker: Mosquitto, tmp_path: Path) -> None:
    """An empty payload is how MQTT deletes a retained message (the monitor's own clearing comes back as one):
    it acknowledges nothing. Before, an empty payload on the ack topic acknowledged every alert of the zone."""
    settings = settings_for(broker)
    acks: list[AckRequest] = []
    sink = MqttSink(settings, zones=["kitchen"], state_dir=tmp_path / "state", acknowledge=acks.append)
    await sink.start()
    await sink.wait_connected()
    await publish(broker, f"{settings.topic_prefix}/kitchen/ack", b"")
    await publish(broker, f"{settings.topic_prefix}/kitchen/ack", b"PRESS")
    await _until(lambda: len(acks) == 1)
    assert sink.counters["empty_commands_ignored"] == 1
    await sink.close()


async def test_a_foreign_topic_in_the_record_of_published_topics_is_never_deleted(
        broker: Mosquitto, tmp_path: Path) -> None:
    """The record of published topics is a file in the state dir: topics written into it that the monitor
    never publishes (another program's, a wildcard) keep their retained messages; a removed zone's own
    topics are still cleared. Before the fix every topic in the record was deleted."""
    settings = settings_for(broker)
    p, node = settings.topic_prefix, settings.node_id
    state = tmp_path / "state"
    state.mkdir()
    foreign = ["alarm/panel/state", f"{p}/garage/unlock", "homeassistant/lock/front_door/config",
               f"homeassistant/switch/{node}/x/y/config"]
    for topic in foreign:
        await publish(broker, topic, b"keep me", retain=True)
    await publish(broker, f"{p}/garage/state", b'{"state": "clear"}', retain=True)
    await publish(broker, f"homeassistant/switch/{node}/garage_monitoring/config", b"{}", retain=True)
    unpublishable = [f"{p}/\ud800/state", f"{p}/a\u0000b/state"]  # a lone surrogate, a NUL: no topic at all
    record = [*foreign, "#", f"{p}/#", *unpublishable, f"{p}/garage/state",
              f"homeassistant/switch/{node}/garage_monitoring/config"]
    (state / "mqtt-published.json").write_text(json.dumps({"topics": record}))
    sink = MqttSink(settings, zones=["kitchen"], state_dir=state)
    await sink.start()
    await sink.wait_connected()
    await sink.close()
    kept = {**await retained(broker, "alarm/#"), **await retained(broker, "homeassistant/#"),
            **await retained(broker, f"{p}/garage/#")}
    assert {t for t, m in kept.items() if m.payload == b"keep me"} == set(foreign)
    assert f"{p}/garage/state" not in kept
    assert f"homeassistant/switch/{node}/garage_monitoring/config" not in kept
    assert sink.counters["foreign_topics_not_cleared"] == len(foreign) + 4
    assert sink.counters["task_restarts"] == 0


async def test_a_session_that_dies_of_an_unexpected_error_is_restarted_and_shown(
        broker: Mosquitto, tmp_path: Path) -> None:
    """An exception nobody foresaw in the sink's session (here: the stats provider) ends that session, not the
    sink: it reconnects with backoff, names the task in its problem and the stats topic's `problems`, and
    the next alert is delivered. Before the fix the task was dead for good and every later publish failed."""
    settings = settings_for(broker)
    p = settings.topic_prefix
    calls = 0

    def stats() -> dict[str, object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RecursionError("maximum recursion depth exceeded")
        return {}

    sink = MqttSink(settings, zones=["kitchen"], state_dir=tmp_path / "state", stats=stats)
    async with Recorder(broker, f"{p}/alerts", f"{p}/available") as rec:
        await sink.start()
        await _until(lambda: sink.counters["task_restarts"] == 1 and sink.connected)
        problem = sink.problem
        assert problem is not None and "task mqtt-sink died" in problem and "RecursionError" in problem, problem
        await sink.publish(alert_event("kitchen", 1))
        await rec.wait_topic(f"{p}/alerts")
        # While the session was down, subscribers were told: `offline`, then `online` again.
        assert [m.payload for m in rec.on(f"{p}/available")] == [b"online", b"offline", b"online"]
    await sink.close()


async def _until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
