"""The password file and ACL of docs/mqtt.md, run in a real mosquitto: who may publish what (issue 20, section 5).

The ACL is read from the documentation itself, so the two cannot drift apart. An observer user (test only)
reads everything; each party publishes what it may and what it may not, then a message it may send, and the
observer's view after that last message shows which got through (one client's QoS 1 messages arrive in order).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import aiomqtt

from monitor.control import ZoneControls
from monitor.escalation.engine import AckRequest
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.mqtt import MqttSink
from tests.support.mosquitto import Mosquitto, Recorder, alert_event
from tests.support.paths import REPO

P = "proactive_monitor"
USERS = {name: uuid.uuid4().hex for name in ("monitor", "homeassistant", "caregiver", "observer")}


def documented_acl() -> str:
    """The ACL block of docs/mqtt.md (the fenced block that starts with `# /etc/mosquitto/acl`)."""
    text = (REPO / "docs" / "mqtt.md").read_text()
    match = re.search(r"```text\n(# /etc/mosquitto/acl.*?)```", text, re.DOTALL)
    assert match, "docs/mqtt.md has no ACL block"
    return match.group(1)


def documented_users() -> set[str]:
    text = (REPO / "docs" / "mqtt.md").read_text()
    return set(re.findall(r"mosquitto_passwd (?:-c )?/etc/mosquitto/passwd (\w+)", text))


# (user, topic, allowed) in the order each user sends them; the last of each user is allowed (the marker).
PUBLISHES = [
    ("caregiver", f"{P}/kitchen/monitoring/set", False),
    ("caregiver", f"{P}/kitchen/sensitivity/set", False),
    ("caregiver", f"{P}/feedback", False),
    ("caregiver", f"{P}/alerts", False),
    ("caregiver", f"{P}/kitchen/state", False),
    ("caregiver", "homeassistant/switch/proactive_monitor/kitchen_monitoring/config", False),
    ("caregiver", f"{P}/kitchen/ack", True),
    ("homeassistant", f"{P}/alerts", False),
    ("homeassistant", f"{P}/escalations", False),
    ("homeassistant", f"{P}/kitchen/state", False),
    ("homeassistant", f"{P}/available", False),
    ("homeassistant", f"{P}/kitchen/monitoring/set", True),
    ("homeassistant", f"{P}/kitchen/sensitivity/set", True),
    ("homeassistant", f"{P}/feedback", True),
    ("homeassistant", f"{P}/kitchen/ack", True),
    ("monitor", "homeassistant/status", False),
    ("monitor", "homeassistant/lock/front_door/config", False),
    ("monitor", "other/topic", False),
    ("monitor", f"{P}/alerts", True),
]


async def test_the_documented_acl_lets_each_party_publish_only_what_it_should(tmp_path: Path) -> None:
    assert documented_users() == {"monitor", "homeassistant", "caregiver"}
    acl = documented_acl() + "\nuser observer\ntopic read #\n"
    with Mosquitto(tmp_path / "broker", users=USERS, acl=acl) as broker:
        async with Recorder(broker, "#", username="observer", password=USERS["observer"]) as seen:
            for user in ("caregiver", "homeassistant", "monitor"):
                mine = [(topic, allowed) for who, topic, allowed in PUBLISHES if who == user]
                marker = uuid.uuid4().hex.encode()
                async with aiomqtt.Client(**broker.client_kwargs(username=user, password=USERS[user])) as client:
                    for index, (topic, _allowed) in enumerate(mine):
                        last = index == len(mine) - 1
                        await client.publish(topic, marker if last else f"{user} {index}".encode(), qos=1)
                await seen.wait_for(lambda m=marker: any(r.payload == m for r in seen.messages),  # type: ignore[misc]
                                    what=f"{user}'s last message")
                arrived = {r.topic for r in seen.messages if r.payload.startswith(user.encode()) or r.payload == marker}
                assert arrived == {topic for topic, allowed in mine if allowed}, user


async def test_under_the_documented_acl_the_monitor_works_and_a_caregiver_can_only_acknowledge(
        tmp_path: Path) -> None:
    """The monitor's sink connected as `monitor` publishes its alerts and states (the caregiver sees the alert,
    Home Assistant the zone state); the caregiver's acknowledgement reaches it, its OFF does not; Home
    Assistant's does."""
    with Mosquitto(tmp_path / "broker", users=USERS, acl=documented_acl()) as broker:
        settings = MqttSettings(host=broker.host, port=broker.port, username="monitor", password=USERS["monitor"],
                                reconnect_min_s=0.05, reconnect_max_s=0.5, close_timeout_s=3.0)
        controls, acks = ZoneControls(), list[AckRequest]()
        sink = MqttSink(settings, zones=["kitchen"], state_dir=tmp_path / "state", controls=controls,
                        acknowledge=acks.append)
        caregiver = {"username": "caregiver", "password": USERS["caregiver"]}
        home = {"username": "homeassistant", "password": USERS["homeassistant"]}
        async with Recorder(broker, f"{P}/#", **caregiver) as phone, Recorder(broker, f"{P}/#", **home) as ha:
            await sink.start()
            await sink.wait_connected()
            await sink.publish(alert_event("kitchen", 1))
            await phone.wait_topic(f"{P}/alerts")
            await ha.wait_topic(f"{P}/kitchen/state")
            assert not phone.on(f"{P}/stats")  # not the caregiver's to read
            async with aiomqtt.Client(**broker.client_kwargs(**caregiver)) as client:
                await client.publish(f"{P}/kitchen/monitoring/set", b"OFF", qos=1)
                await client.publish(f"{P}/kitchen/ack", b"PRESS", qos=1)
            await _until(lambda: len(acks) == 1)
            assert controls.is_monitoring("kitchen") is True
            async with aiomqtt.Client(**broker.client_kwargs(**home)) as client:
                await client.publish(f"{P}/kitchen/monitoring/set", b"OFF", qos=1)
            await _until(lambda: not controls.is_monitoring("kitchen"))
        await sink.close()


async def _until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
