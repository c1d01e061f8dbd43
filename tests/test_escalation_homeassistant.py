"""The new Home Assistant entities in a real HA core: the Acknowledge button acks, the Escalation event fires.

Needs `make ha-venv` (skips otherwise), like tests/test_homeassistant.py.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from monitor.core.text import iso_time
from monitor.escalation.engine import AckRequest
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.mqtt import MqttSink
from tests.support.homeassistant import NOTICE_LEVELS, HomeAssistant
from tests.support.mosquitto import Mosquitto, alert_event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker(ha_broker: Mosquitto) -> Mosquitto:
    """The module's Home Assistant broker (tests/conftest.py)."""
    return ha_broker


async def test_the_button_acknowledges_and_the_escalation_event_carries_what_an_automation_needs(
        ha: HomeAssistant, broker: Mosquitto, tmp_path: Path) -> None:
    """HA accepts both discovery configs without a notice; pressing the button reaches the engine as an ack by
    home_assistant; a caregivers' escalation becomes an `event` state with the payload as attributes."""
    tag = uuid.uuid4().hex[:8]
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{tag}",
                            reconnect_min_s=0.05, close_timeout_s=3.0)
    node = settings.node_id
    requests: list[AckRequest] = []
    mark = ha.mark()
    sink = MqttSink(settings, zones=["kitchen"], state_dir=tmp_path / "state", acknowledge=requests.append)
    await sink.start()
    try:
        button = await asyncio.to_thread(ha.wait_entity, f"{node}_kitchen_acknowledge")
        event = await asyncio.to_thread(ha.wait_entity, f"{node}_escalations")
        available = lambda s: s["state"] != "unavailable"  # noqa: E731 (a pressed unavailable button does nothing)
        await ha.async_wait_state(button["entity_id"], available)
        await ha.async_wait_state(event["entity_id"], available)

        await asyncio.to_thread(ha.api, "POST", "/api/services/button/press", {"entity_id": button["entity_id"]})
        for _ in range(200):
            if requests:
                break
            await asyncio.sleep(0.05)
        assert requests == [AckRequest(None, "kitchen", "home_assistant", "mqtt")]

        new = alert_event("kitchen", 1, severity="warning")
        await sink.publish(replace(new, type="escalate", alert=replace(
            new.alert, severity="critical", escalation_level=2, caregivers_notified=True, zone_name="Cooking corner")))
        fired = await ha.async_wait_state(
            event["entity_id"], lambda s: s["attributes"].get("event_type") == "critical")
        attributes = fired["attributes"]
        assert (attributes["zone"], attributes["escalation_level"]) == ("kitchen", 2)
        # What a caregiver reads names the zone as the household calls it; the id stays for the ack topic.
        assert attributes["zone_name"] == "Cooking corner" and attributes["text"].startswith("Cooking corner: ")
        assert attributes["advice"] == new.alert.advice
        assert attributes["first_warning_at"] == iso_time(new.alert.created_at)
        assert not [key for key in attributes if key.endswith("_epoch")]  # HA would show them as raw numbers
        assert isinstance(attributes["seq"], int) and attributes["event_id"] == attributes["message_id"]
    finally:
        await sink.close()
    assert ha.problems(since=mark, levels=NOTICE_LEVELS) == []
