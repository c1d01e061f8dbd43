"""The retained escalation state and the events' sequence numbers (issue 21, section 1).

What a caregiver must know is state: a subscriber that was away (Home Assistant restarting with a clean
session) reads each zone's open escalations, and the hub's, from retained topics when it returns; every event
carries an `event_id` and a `seq` that increases across restarts, so a consumer can drop what it has handled.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from monitor.alerts import AlertEvent
from monitor.escalation.contract import escalation_state
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.mqtt import MqttSink
from monitor.sinks.sequence import BLOCK, FILE_NAME, EventSequence
from tests.support.mosquitto import Mosquitto, Recorder, alert_event, publish, retained

ZONES = ("kitchen", "garage")


def escalated(event: AlertEvent, level: int, *, caregivers: bool, at: float) -> AlertEvent:
    return replace(event, type="escalate", at=at, alert=replace(
        event.alert, escalation_level=level, escalated_at=at, caregivers_notified=caregivers, severity="critical"))


def test_the_state_names_the_escalation_waiting_for_a_caregiver_first() -> None:
    """Empty: every key there, at its empty value. Escalated: the one waiting for a caregiver leads, and `seq`
    is the highest number among those waiting; acknowledged ones stay listed but wait for no one."""
    empty = escalation_state([], seq=lambda _id: None)
    assert (empty["active"], empty["caregiver_needed"], empty["level"], empty["seq"], empty["escalations"]) == (
        False, False, 0, None, [])
    assert empty["alert_id"] is None and empty["since"] is None

    kitchen = escalated(alert_event("kitchen", 1), 2, caregivers=True, at=1_800_000_060.0).alert
    garage = escalated(alert_event("garage", 2), 1, caregivers=False, at=1_800_000_070.0).alert
    plain = alert_event("garage", 3).alert  # open, never escalated: not an escalation
    numbers = {kitchen.id: 41, garage.id: 42}
    state = escalation_state([garage, plain, kitchen], seq=numbers.get, names={"kitchen": "Kitchen"})
    assert (state["active"], state["caregiver_needed"], state["count"]) == (True, True, 2)
    assert (state["alert_id"], state["level"], state["zone_name"], state["seq"]) == (kitchen.id, 2, "Kitchen", 41)
    assert state["since"] == "2027-01-15T08:01:00.000+00:00" and state["since_epoch"] == 1_800_000_060.0
    assert [e["alert_id"] for e in state["escalations"]] == [kitchen.id, garage.id]

    acked = replace(kitchen, acknowledged_at=1_800_000_100.0, acknowledged_by="carer")
    state = escalation_state([acked, garage], seq=numbers.get)
    assert (state["active"], state["caregiver_needed"], state["seq"]) == (True, False, None)
    assert state["escalations"][0]["acknowledged"] is True


def test_sequence_numbers_never_go_backwards(tmp_path: Path) -> None:
    """After a clean restart, after a crash that used numbers never written down, and after the file is lost
    or garbage: every number is above every number handed out before."""
    now = [1_800_000_000.0]
    first = EventSequence(tmp_path, clock=lambda: now[0])
    taken = [first.take()[0] for _ in range(BLOCK + 5)]  # crosses a block: the file was rewritten
    assert taken == sorted(set(taken)) and taken[0] == 1_800_000_000_000
    second = EventSequence(tmp_path, clock=lambda: now[0])  # same clock: only the file keeps it above
    assert second.take()[0] > taken[-1]

    (tmp_path / FILE_NAME).write_text("{not json")
    now[0] += 1.0  # a second later, fewer than a thousand numbers per second were used
    third = EventSequence(tmp_path, clock=lambda: now[0])
    assert third.take()[0] > taken[-1]
    assert list(tmp_path.glob(f"{FILE_NAME}.corrupt-*"))


async def test_a_subscriber_that_was_away_reads_the_open_escalations_from_retained_state(
        broker: Mosquitto, tmp_path: Path) -> None:
    """Real mosquitto: the zone's and the hub's escalation states are retained and follow escalation, ack and
    end; every event has an `event_id` and a `seq`, the same on each topic; after a restart numbers go on."""
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                            reconnect_min_s=0.05, close_timeout_s=3.0)
    p = settings.topic_prefix
    state_dir = tmp_path / "state"
    sink = MqttSink(settings, zones=list(ZONES), state_dir=state_dir, acknowledge=lambda _r: None)
    new = alert_event("kitchen", 1, severity="warning")
    caregivers = escalated(new, 2, caregivers=True, at=new.at + 60)
    async with Recorder(broker, f"{p}/alerts", f"{p}/escalations", f"{p}/kitchen/event") as rec:
        await sink.start()
        await sink.publish(new)
        await sink.publish(caregivers)
        await rec.wait_for(lambda: len(rec.on(f"{p}/escalations")) == 1 and len(rec.on(f"{p}/alerts")) == 2,
                           what="the escalation")
        alerts = [m.json() for m in rec.on(f"{p}/alerts")]
        assert [a["event_id"] for a in alerts] == [new.message_id, caregivers.message_id]
        assert alerts[0]["seq"] < alerts[1]["seq"]
        assert rec.on(f"{p}/kitchen/event")[0].json()["seq"] == alerts[0]["seq"]
        sent = rec.on(f"{p}/escalations")[0].json()
        assert (sent["event_id"], sent["seq"]) == (caregivers.message_id, alerts[1]["seq"])

    # A subscriber arriving now (Home Assistant back from a restart) gets the state from the broker.
    await _wait_retained(broker, f"{p}/escalation_state", lambda s: s["active"])
    await _wait_retained(broker, f"{p}/kitchen/escalation_state", lambda s: s["active"])
    kept = await retained(broker, f"{p}/#")
    zone, hub = kept[f"{p}/kitchen/escalation_state"].json(), kept[f"{p}/escalation_state"].json()
    assert (zone["caregiver_needed"], zone["level"], zone["alert_id"], zone["seq"]) == (
        True, 2, new.alert.id, sent["seq"])
    assert hub == zone
    assert kept[f"{p}/garage/escalation_state"].json()["active"] is False

    ack = replace(caregivers, type="ack", at=new.at + 90,
                  alert=replace(caregivers.alert, acknowledged_at=new.at + 90, acknowledged_by="carer"))
    await sink.publish(ack)
    await _wait_retained(broker, f"{p}/escalation_state", lambda s: s["acknowledged"] and not s["caregiver_needed"])
    await sink.publish(AlertEvent("end", ack.alert, at=new.at + 120, end_reason="not confirmed"))
    await _wait_retained(broker, f"{p}/kitchen/escalation_state", lambda s: not s["active"] and s["escalations"] == [])
    await sink.close()

    again = MqttSink(settings, zones=list(ZONES), state_dir=state_dir)
    async with Recorder(broker, f"{p}/alerts") as rec:
        await again.start()
        await again.publish(alert_event("garage", 2))
        message = await rec.wait_topic(f"{p}/alerts")
    await again.close()
    assert message.json()["seq"] > sent["seq"]
    assert json.loads((state_dir / FILE_NAME).read_text())["escalations"] == {}  # ended alerts are forgotten


async def _wait_retained(broker: Mosquitto, topic: str,
                         predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Until a fresh subscriber's retained message on `topic` satisfies `predicate` (5 s at most); that message."""
    deadline = time.monotonic() + 5.0
    while True:
        kept = await retained(broker, topic, quiet_s=0.05)
        if topic in kept and predicate(payload := kept[topic].json()):
            return payload
        assert time.monotonic() < deadline, f"{topic}: never matched; last {kept.get(topic)}"
        await asyncio.sleep(0.05)


async def test_an_escalation_still_open_after_a_rebuild_keeps_its_number(broker: Mosquitto, tmp_path: Path) -> None:
    """A sink rebuilt with the alerts still open (a config reload, or alerts carried over a restart) publishes the
    same `seq` for the escalation it already announced: a consumer that handled it does not act again."""
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                            reconnect_min_s=0.05, close_timeout_s=3.0)
    p, state_dir = settings.topic_prefix, tmp_path / "state"
    new = alert_event("garage", 7, severity="warning")
    caregivers = escalated(new, 2, caregivers=True, at=new.at + 60)
    first = MqttSink(settings, zones=list(ZONES), state_dir=state_dir)
    await first.start()
    await first.publish(new)
    await first.publish(caregivers)
    await _wait_retained(broker, f"{p}/escalation_state", lambda s: s["caregiver_needed"])
    announced = (await retained(broker, f"{p}/escalation_state"))[f"{p}/escalation_state"].json()["seq"]
    await first.close()
    await publish(broker, f"{p}/garage/escalation_state", b"", retain=True)  # only the rebuilt sink can set it

    second = MqttSink(settings, zones=list(ZONES), state_dir=state_dir)
    second.restore_open_alerts([caregivers.alert])
    await second.start()
    await _wait_retained(broker, f"{p}/garage/escalation_state", lambda s: s["seq"] == announced and s["level"] == 2)
    await second.close()


async def test_an_escalation_held_over_a_restart_stays_announced_until_it_is_seen_again_or_ends(
        broker: Mosquitto, tmp_path: Path) -> None:
    """After a restart the monitor holds the caregiver's escalation open but unconfirmed (issue 21 section 4): it is
    no current hazard, yet nobody acknowledged it, so Caregiver needed stays on, with its number, and goes off
    when the alert ends. Before, the retained state said "no escalation" from the restart on."""
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                            reconnect_min_s=0.05, close_timeout_s=3.0)
    p = settings.topic_prefix
    state_dir = tmp_path / "state"
    first = MqttSink(settings, zones=list(ZONES), state_dir=state_dir, acknowledge=lambda _r: None)
    new = alert_event("kitchen", 1, severity="warning")
    caregivers = escalated(new, 2, caregivers=True, at=new.at + 60)
    await first.start()
    await first.publish(new)
    await first.publish(caregivers)
    before = await _wait_retained(broker, f"{p}/escalation_state", lambda s: s["caregiver_needed"])
    await first.close()

    held = [caregivers.alert]  # what AlertManager.held_escalations() gives after the restart
    again = MqttSink(settings, zones=list(ZONES), state_dir=state_dir, acknowledge=lambda _r: None)
    again.held_escalations = lambda: tuple(held)
    await again.start()
    await again.publish(alert_event("garage", 2))  # the monitor goes on; its retained state is rewritten
    after = await _wait_retained(broker, f"{p}/escalation_state",
                                 lambda s: s["count"] == 1 and s["caregiver_needed"])
    assert (after["alert_id"], after["level"], after["seq"]) == (before["alert_id"], 2, before["seq"])
    zone = await _wait_retained(broker, f"{p}/kitchen/escalation_state", lambda s: s["active"])
    assert zone["caregiver_needed"] is True

    held.clear()  # ended (not seen again within dedup_ttl_s after the restart)
    await again.publish(AlertEvent("end", caregivers.alert, at=new.at + 600, end_reason="restart"))
    await _wait_retained(broker, f"{p}/escalation_state", lambda s: not s["active"])
    await again.close()
