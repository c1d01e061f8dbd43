"""The Home Assistant harness, end to end: a real mosquitto, a real HA core, discovery messages published by hand.

These show what HA makes of a discovery payload (entity ids, states, availability, the device registry) and
that the harness sees HA's complaints about a bad payload, so "no warnings" checks built on it can fail.
Needs `make ha-venv` (skips otherwise).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support.homeassistant import NOTICE_LEVELS, HomeAssistant
from tests.support.mosquitto import Mosquitto, publish

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker(ha_broker: Mosquitto) -> Mosquitto:
    """The module's Home Assistant broker (tests/conftest.py)."""
    return ha_broker


def monitor_device(tag: str) -> dict[str, Any]:
    return {"identifiers": [f"pm_{tag}"], "name": f"Monitor {tag}", "manufacturer": "proactive-monitor",
            "model": "safety monitor", "sw_version": "0.1.0"}


def safety_config(tag: str, base: str) -> dict[str, Any]:
    """A binary_sensor with device_class safety, JSON state through a value_template, availability, a device."""
    return {
        "name": "Kitchen danger", "unique_id": f"pm_{tag}_kitchen_danger", "device_class": "safety",
        "state_topic": f"{base}/kitchen/state", "value_template": "{{ 'ON' if value_json.danger else 'OFF' }}",
        "json_attributes_topic": f"{base}/kitchen/state",
        "availability_topic": f"{base}/availability", "payload_available": "online",
        "payload_not_available": "offline", "device": monitor_device(tag),
    }


def problem_config(tag: str, base: str) -> dict[str, Any]:
    """A diagnostic problem binary_sensor of the same device, whose entity id is set with object_id."""
    return {
        "name": "Fault", "unique_id": f"pm_{tag}_fault", "object_id": f"pm_{tag}_fault", "device_class": "problem",
        "entity_category": "diagnostic", "state_topic": f"{base}/health",
        "value_template": "{{ 'OFF' if value_json.status == 'ok' else 'ON' }}",
        "availability_topic": f"{base}/availability", "device": monitor_device(tag),
    }


async def publish_json(broker: Mosquitto, topic: str, payload: dict[str, Any], *, retain: bool = False) -> None:
    await publish(broker, topic, json.dumps(payload), retain=retain)


@pytest.mark.asyncio
async def test_safety_and_problem_sensors_are_discovered_with_states_and_availability(
        ha: HomeAssistant, broker: Mosquitto) -> None:
    tag = uuid.uuid4().hex[:8]
    base = f"pm_test/{tag}"
    mark = ha.mark()
    await publish_json(broker, f"homeassistant/binary_sensor/pm_{tag}/kitchen_danger/config",
                       safety_config(tag, base), retain=True)
    await publish_json(broker, f"homeassistant/binary_sensor/pm_{tag}/fault/config", problem_config(tag, base),
                       retain=True)
    await publish(broker, f"{base}/availability", "online", retain=True)
    await publish_json(broker, f"{base}/kitchen/state", {"danger": True, "hazard": "smoking oil"}, retain=True)
    await publish_json(broker, f"{base}/health", {"status": "ok"}, retain=True)

    # has_entity_name: the device name comes first; object_id sets the id outright.
    danger_id = f"binary_sensor.monitor_{tag}_kitchen_danger"
    fault_id = f"binary_sensor.pm_{tag}_fault"
    danger = await ha.async_wait_state(danger_id, "on")
    assert danger["attributes"]["device_class"] == "safety"
    assert danger["attributes"]["friendly_name"] == f"Monitor {tag} Kitchen danger"
    assert danger["attributes"]["hazard"] == "smoking oil"
    fault = await ha.async_wait_state(fault_id, "off")
    assert fault["attributes"]["device_class"] == "problem"

    registry = {e["unique_id"]: e for e in ha.entity_registry() if e["platform"] == "mqtt"}
    assert registry[f"pm_{tag}_kitchen_danger"]["entity_id"] == danger_id
    assert registry[f"pm_{tag}_fault"]["entity_id"] == fault_id
    assert registry[f"pm_{tag}_fault"]["entity_category"] == "diagnostic"
    devices = [d for d in ha.device_registry() if ["mqtt", f"pm_{tag}"] in d["identifiers"]]
    assert len(devices) == 1, devices
    device = devices[0]
    assert (device["name"], device["manufacturer"], device["model"], device["sw_version"]) == (
        f"Monitor {tag}", "proactive-monitor", "safety monitor", "0.1.0")
    assert registry[f"pm_{tag}_kitchen_danger"]["device_id"] == device["id"]
    assert registry[f"pm_{tag}_fault"]["device_id"] == device["id"]

    await publish_json(broker, f"{base}/kitchen/state", {"danger": False}, retain=True)
    await ha.async_wait_state(danger_id, "off")
    await publish_json(broker, f"{base}/health", {"status": "camera offline"}, retain=True)
    await ha.async_wait_state(fault_id, "on")

    await publish(broker, f"{base}/availability", "offline", retain=True)
    await ha.async_wait_state(danger_id, "unavailable")
    await ha.async_wait_state(fault_id, "unavailable")
    await publish(broker, f"{base}/availability", "online", retain=True)
    await ha.async_wait_state(danger_id, "off")

    assert ha.problems(since=mark, levels=NOTICE_LEVELS) == []


@pytest.mark.asyncio
async def test_an_invalid_discovery_config_shows_up_as_a_problem(ha: HomeAssistant, broker: Mosquitto) -> None:
    tag = uuid.uuid4().hex[:8]
    base = f"pm_test/{tag}"
    mark = ha.mark()
    config = safety_config(tag, base)
    config["device_class"] = "not_a_device_class"  # HA's schema rejects it
    topic = f"homeassistant/binary_sensor/pm_{tag}/kitchen_danger/config"
    await publish_json(broker, topic, config)

    found = await ha.async_wait_problem(lambda r: tag in r.message, since=mark)
    assert found.level == "ERROR"
    assert "not_a_device_class" in found.message and topic in found.message
    assert ha.entity_by_unique_id(f"pm_{tag}_kitchen_danger") is None
    assert ha.state(f"binary_sensor.monitor_{tag}_kitchen_danger") is None


@pytest.mark.asyncio
async def test_a_device_block_without_a_name_is_an_info_notice(ha: HomeAssistant, broker: Mosquitto) -> None:
    """HA accepts it, but says so only at INFO: the strict check (NOTICE_LEVELS) sees it, the default does not."""
    tag = uuid.uuid4().hex[:8]
    base = f"pm_test/{tag}"
    mark = ha.mark()
    config = problem_config(tag, base)
    config["device"] = {"identifiers": [f"pm_{tag}"]}
    await publish_json(broker, f"homeassistant/binary_sensor/pm_{tag}/fault/config", config)
    await publish_json(broker, f"{base}/health", {"status": "ok"})

    await ha.async_wait_state(f"binary_sensor.pm_{tag}_fault")
    found = await ha.async_wait_problem(lambda r: tag in r.message, since=mark, levels=NOTICE_LEVELS)
    assert found.level == "INFO" and "device information always needs to include a name" in found.message
    assert ha.problems(since=mark) == []


@pytest.mark.asyncio
async def test_restart_keeps_the_config_and_rediscovers_retained_entities(ha: HomeAssistant, broker: Mosquitto) -> None:
    tag = uuid.uuid4().hex[:8]
    base = f"pm_test/{tag}"
    await publish_json(broker, f"homeassistant/binary_sensor/pm_{tag}/kitchen_danger/config",
                       safety_config(tag, base), retain=True)
    await publish(broker, f"{base}/availability", "online", retain=True)
    await publish_json(broker, f"{base}/kitchen/state", {"danger": True}, retain=True)
    danger_id = f"binary_sensor.monitor_{tag}_kitchen_danger"
    await ha.async_wait_state(danger_id, "on")
    pid, port = ha.pid, ha.port

    ha.restart()
    mark = ha.mark()

    assert ha.pid != pid and ha.port == port
    assert ha.startup_s is not None
    await ha.async_wait_state(danger_id, "on")
    await publish_json(broker, f"{base}/kitchen/state", {"danger": False}, retain=True)
    await ha.async_wait_state(danger_id, "off")
    assert ha.problems(since=mark, levels=NOTICE_LEVELS) == []
