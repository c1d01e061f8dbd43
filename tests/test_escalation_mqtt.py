"""Escalations and acknowledgements over MQTT: the contract as functions, then the sink against a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.escalation.contract import (
    HA_BUTTON_PAYLOAD,
    escalation_messages,
    escalation_payload,
    parse_ack,
    zone_reach_state,
)
from monitor.escalation.engine import AckRequest
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.ha_discovery import Discovery
from monitor.sinks.mqtt import MqttSink
from tests.support.mosquitto import Mosquitto, Recorder, alert_event, publish, retained

P = "pm/home"
ZONES = ("kitchen", "garage")


@pytest.mark.parametrize(("topic", "payload", "expected"), [
    (f"{P}/kitchen/ack", b" press\n", AckRequest(None, "kitchen", "mqtt", "mqtt")),
    (f"{P}/kitchen/ack", b"3f9c0e6b2a1d4c55", AckRequest("3f9c0e6b2a1d4c55", "kitchen", "mqtt", "mqtt")),
    (f"{P}/kitchen/ack", HA_BUTTON_PAYLOAD.encode(), AckRequest(None, "kitchen", "home_assistant", "mqtt")),
    (f"{P}/garage/ack", b'{"alert_id": "0a1b2c3d4e5f6789", "by": "Ann\\u0007 "}',
     AckRequest("0a1b2c3d4e5f6789", "garage", "Ann", "mqtt")),
    (f"{P}/kitchen/ack", b"3F9C0E6B2A1D4C55", AckRequest("3f9c0e6b2a1d4c55", "kitchen", "mqtt", "mqtt")),
])
def test_ack_messages_become_requests(topic: str, payload: bytes, expected: AckRequest) -> None:
    """Every accepted form of `<prefix>/<zone>/ack`: zone-wide, one alert, Home Assistant's button, JSON."""
    assert parse_ack(P, topic, payload, ZONES) == expected


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    (f"{P}/attic/ack", b"PRESS", "unknown zone"),
    (f"{P}/kitchen/ack", b"yes please!", "expected PRESS, an alert id"),
    # Not of the form the monitor gives its alerts (16 hex digits): a typo or a slip, said and counted.
    (f"{P}/kitchen/ack", b"not-an-id", "expected PRESS, an alert id"),
    (f"{P}/kitchen/ack", b"a1", "expected PRESS, an alert id"),
    (f"{P}/kitchen/ack", b'{"alert_id": "not-an-id"}', "alert_id: expected an alert id"),
    (f"{P}/kitchen/ack", b"", "expected PRESS, an alert id"),  # an empty message deletes a retained one
    (f"{P}/kitchen/ack", b'{"by": ' + b"[" * 1500 + b"]" * 1500 + b"}", "nested more than 4 levels deep"),
    (f"{P}/kitchen/ack", b"{not json", "not valid JSON"),
    (f"{P}/kitchen/ack", b'{"alert_id": "a1", "zone": "garage"}', "only alert_id and by"),
    (f"{P}/kitchen/ack", b'{"alert_id": "../../etc"}', "alert_id: expected an alert id"),
    (f"{P}/kitchen/ack", b'{"by": 7}', "by: expected a short name"),
])
def test_invalid_ack_messages_say_why(topic: str, payload: bytes, reason: str) -> None:
    result = parse_ack(P, topic, payload, ZONES)
    assert isinstance(result, str) and reason in result


def test_other_topics_are_not_acks() -> None:
    for topic in (f"{P}/kitchen/monitoring/set", f"{P}/a/b/ack", f"{P}//ack", "other/kitchen/ack", f"{P}/ack"):
        assert parse_ack(P, topic, b"PRESS", ZONES) is None


def test_only_escalations_that_notify_caregivers_go_to_the_escalations_topic() -> None:
    """Level-1 repeats are for the person (alerts topic, speaker); caregivers get levels from caregivers_from_level."""
    new = alert_event("kitchen", 1, severity="critical")
    repeat = replace(new, type="escalate", alert=replace(new.alert, escalation_level=1))
    caregivers = replace(new, type="escalate", alert=replace(new.alert, escalation_level=2, caregivers_notified=True))
    assert escalation_messages(P, new) == escalation_messages(P, repeat) == []
    ((topic, payload, message_id),) = escalation_messages(P, caregivers)
    assert topic == f"{P}/escalations" and message_id == f"{new.alert.id}:escalate:2:caregivers"
    body = json.loads(payload)
    assert body == escalation_payload(caregivers)
    assert (body["event_type"], body["zone"], body["escalation_level"]) == ("critical", "kitchen", 2)
    assert body["advice"] == new.alert.advice and "evidence" not in body
    assert zone_reach_state(new.alert) == {}
    assert zone_reach_state(caregivers.alert)["escalation_level"] == 2


def test_discovery_announces_the_ack_buttons_and_the_caregivers_entity_only_when_wired() -> None:
    """With acknowledgements wired (the daemon): a button per zone and one escalation event entity."""
    settings = MqttSettings(topic_prefix=P)
    plain = Discovery(settings).messages(ZONES)
    wired = Discovery(settings, reach=True).messages(ZONES)
    node = settings.node_id
    added = {topic: wired[topic] for topic in set(wired) - set(plain)}
    assert set(added) == {f"homeassistant/button/{node}/kitchen_acknowledge/config",
                          f"homeassistant/button/{node}/garage_acknowledge/config",
                          f"homeassistant/event/{node}/escalations/config",
                          f"homeassistant/binary_sensor/{node}/hub_caregiver_needed/config",
                          *(f"homeassistant/binary_sensor/{node}/{zone}_caregiver_needed/config" for zone in ZONES),
                          *(f"homeassistant/sensor/{node}/{zone}_escalation_level/config" for zone in ZONES)}
    needed = added[f"homeassistant/binary_sensor/{node}/hub_caregiver_needed/config"]
    assert needed["state_topic"] == f"{P}/escalation_state" and "entity_category" not in needed
    assert added[f"homeassistant/sensor/{node}/kitchen_escalation_level/config"]["state_topic"] == (
        f"{P}/kitchen/escalation_state")
    button = added[f"homeassistant/button/{node}/kitchen_acknowledge/config"]
    assert button["command_topic"] == f"{P}/kitchen/ack" and button["payload_press"] == HA_BUTTON_PAYLOAD
    assert button["device"]["identifiers"] == [f"{node}_kitchen"]
    entity = added[f"homeassistant/event/{node}/escalations/config"]
    assert entity["state_topic"] == f"{P}/escalations" and entity["event_types"] == ["info", "warning", "critical"]
    assert entity["availability_topic"] == f"{P}/available" and entity["device"]["name"]
    assert len({c["unique_id"] for c in wired.values()}) == len(wired)


async def test_the_sink_takes_acks_and_publishes_caregiver_escalations(broker: Mosquitto, tmp_path: Path) -> None:
    """Real mosquitto: `<prefix>/<zone>/ack` reaches the engine's callback; escalations reach `<prefix>/escalations`;
    the retained discovery has the new entities; invalid acks are counted, not fatal."""
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                            reconnect_min_s=0.05, reconnect_max_s=0.5, close_timeout_s=3.0)
    p, node = settings.topic_prefix, settings.node_id
    requests: list[AckRequest] = []
    sink = MqttSink(settings, zones=list(ZONES), state_dir=tmp_path / "state", acknowledge=requests.append)
    async with Recorder(broker, f"{p}/escalations", f"{p}/kitchen/state") as rec:
        await sink.start()
        await sink.wait_connected()
        with capture_logs() as logs:
            await publish(broker, f"{p}/kitchen/ack", "not-an-id")
            await publish(broker, f"{p}/kitchen/ack", HA_BUTTON_PAYLOAD)
            await publish(broker, f"{p}/garage/ack", '{"alert_id": "00000000000a1e71", "by": "carer"}')
            await rec.wait_for(lambda: len(requests) == 2, what="two acknowledgements")
        assert requests == [AckRequest(None, "kitchen", "home_assistant", "mqtt"),
                            AckRequest("00000000000a1e71", "garage", "carer", "mqtt")]
        assert sink.counters["invalid_commands"] == 1
        assert [e["reason"] for e in logs if e["event"] == "invalid mqtt control message ignored"] == [
            "expected PRESS, an alert id, or JSON {\"alert_id\": ..., \"by\": ...}"]

        new = alert_event("kitchen", 1, severity="warning")
        escalated = replace(new, type="escalate", alert=replace(
            new.alert, severity="critical", escalation_level=2, caregivers_notified=True, escalated_at=new.at + 60))
        await sink.publish(new)
        await sink.publish(escalated)
        message = await rec.wait_topic(f"{p}/escalations")
        assert message.json()["escalation_level"] == 2 and not message.retain and message.qos == 1
        await rec.wait_for(lambda: any(m.json().get("escalation_level") == 2 for m in rec.on(f"{p}/kitchen/state")),
                           what="zone state with the escalation level")
        await sink.close()
    configs = await retained(broker, f"homeassistant/+/{node}/+/config")
    assert f"homeassistant/button/{node}/garage_acknowledge/config" in configs
    assert f"homeassistant/event/{node}/escalations/config" in configs


async def test_quiet_info_alerts_fire_no_home_assistant_event(broker: Mosquitto, tmp_path: Path) -> None:
    """In quiet hours an info alert is still on `<prefix>/alerts`, but `<zone>/event` (what automations act on)
    stays silent."""
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                            reconnect_min_s=0.05, close_timeout_s=3.0)
    p = settings.topic_prefix
    sink = MqttSink(settings, zones=list(ZONES), state_dir=tmp_path / "state")
    async with Recorder(broker, f"{p}/alerts", f"{p}/kitchen/event") as rec:
        await sink.start()
        quiet = alert_event("kitchen", 1, severity="info")
        await sink.publish(replace(quiet, alert=replace(quiet.alert, quiet=True)))
        await sink.publish(alert_event("kitchen", 2, severity="info"))
        await rec.wait_for(lambda: len(rec.on(f"{p}/alerts")) == 2 and len(rec.on(f"{p}/kitchen/event")) == 1,
                           what="two alerts, one HA event")
        assert rec.on(f"{p}/kitchen/event")[0].json()["alert_id"] == "alert00002"
        assert rec.on(f"{p}/alerts")[0].json()["quiet"] is True
        await sink.close()


async def test_an_ack_shows_in_the_zone_state_but_is_not_a_new_last_warning(broker: Mosquitto, tmp_path: Path) -> None:
    """The retained zone state says who acknowledged; `last_warning` keeps the warning's own time."""
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                            reconnect_min_s=0.05, close_timeout_s=3.0)
    p = settings.topic_prefix
    sink = MqttSink(settings, zones=list(ZONES), state_dir=tmp_path / "state", acknowledge=lambda _r: None)
    new = alert_event("kitchen", 1, severity="critical")
    ack = replace(new, type="ack", at=new.at + 30,
                  alert=replace(new.alert, acknowledged_at=new.at + 30, acknowledged_by="carer"))
    async with Recorder(broker, f"{p}/kitchen/state", f"{p}/kitchen/last_warning") as rec:
        await sink.start()
        await sink.publish(new)
        await sink.publish(ack)
        await rec.wait_for(lambda: bool(rec.on(f"{p}/kitchen/last_warning")) and any(
            m.json().get("acknowledged_by") == "carer" for m in rec.on(f"{p}/kitchen/state")),
            what="acknowledged zone state and the last warning")
        await asyncio.sleep(0.5)  # retained topics go out together: a rewritten last_warning would be here by now
        await sink.close()
    # The start's cleared last warning may go out first (connect timing); every warning shown has the warning's time.
    assert {m.json()["at_epoch"] for m in rec.on(f"{p}/kitchen/last_warning") if m.json()["active"]} == {new.at}
