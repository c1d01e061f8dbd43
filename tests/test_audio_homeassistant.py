"""The smoke and CO sensors of a zone a microphone hears, in a real Home Assistant core (needs `make ha-venv`).

The discovery configs are the monitor's own (monitor/sinks/ha_alarms.py); the zone states are what the
monitor publishes on `<zone>/state` (its `alarms` list while an alarm's alert is open).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from monitor.mqtt.settings import MqttSettings
from monitor.sinks.ha_discovery import Discovery, ZoneLabel
from tests.support.homeassistant import NOTICE_LEVELS, HomeAssistant
from tests.support.mosquitto import Mosquitto, publish

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker(ha_broker: Mosquitto) -> Mosquitto:
    return ha_broker


async def publish_json(broker: Mosquitto, topic: str, payload: dict[str, Any]) -> None:
    await publish(broker, topic, json.dumps(payload), retain=True)


@pytest.mark.asyncio
async def test_smoke_and_co_sensors_follow_the_zone_state_alarms(ha: HomeAssistant, broker: Mosquitto) -> None:
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    discovery = Discovery(MqttSettings(host=broker.host, port=broker.port, topic_prefix=prefix))
    mark = ha.mark()
    messages = discovery.messages([ZoneLabel("hall", name="Hall", hears_alarms=True)])
    for topic, config in messages.items():
        await publish_json(broker, topic, config)
    await publish(broker, discovery.topics.available, "online", retain=True)
    state = discovery.topics.state("hall")
    node = discovery.node_id

    async def entity(kind: str) -> str:
        deadline = time.monotonic() + 30
        while (found := ha.entity_by_unique_id(f"{node}_hall_{kind}")) is None:
            assert time.monotonic() < deadline, f"Home Assistant made no {kind} entity"
            await asyncio.sleep(0.2)
        return str(found["entity_id"])

    # A smoke alarm's alert open in a zone whose cameras are blind: smoke on, CO off.
    await publish_json(broker, state, {"state": "blind", "reason": "camera offline", "since": "x", "since_epoch": 0,
                                       "hazard": "smoke alarm sounding", "alarms": ["smoke"]})
    smoke = await ha.async_wait_state(await entity("smoke"), "on")
    assert smoke["attributes"]["device_class"] == "smoke"
    co = await ha.async_wait_state(await entity("carbon_monoxide"), "off")
    assert co["attributes"]["device_class"] == "carbon_monoxide"
    # The alert ended: no `alarms` key at all.
    await publish_json(broker, state, {"state": "clear", "reason": "fine", "since": "x", "since_epoch": 0})
    await ha.async_wait_state(await entity("smoke"), "off")
    # Monitoring switched off: no alarm alert can come, so the sensors say so instead of "Clear".
    await publish_json(broker, state, {"state": "off", "reason": "switched off", "since": "x", "since_epoch": 0})
    await ha.async_wait_state(await entity("smoke"), "unavailable")
    await ha.async_wait_state(await entity("carbon_monoxide"), "unavailable")
    assert ha.problems(since=mark, levels=NOTICE_LEVELS) == []
