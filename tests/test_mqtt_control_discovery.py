"""Control topics and Home Assistant discovery, against a real mosquitto."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from structlog.testing import capture_logs

from monitor.control import ZoneControls
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.mqtt import MqttSink
from tests.support.mosquitto import Mosquitto, Recorder, alert_event, publish, retained

# What Home Assistant's MQTT integration requires of each component's config.
REQUIRED = {
    "binary_sensor": {"state_topic"},
    "event": {"state_topic", "event_types"},
    "sensor": {"state_topic"},
    "switch": {"command_topic", "state_topic"},
    "number": {"command_topic", "state_topic", "min", "max"},
}
COMMON = {"name", "unique_id", "device"}


def settings_for(broker: Mosquitto) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                        reconnect_min_s=0.05, reconnect_max_s=0.5, close_timeout_s=3.0)


async def test_control_topics_switch_monitoring_and_bound_sensitivity(broker: Mosquitto, tmp_path: Path) -> None:
    settings = settings_for(broker)
    p = settings.topic_prefix
    controls = ZoneControls()
    sink = MqttSink(settings, zones=["kitchen", "garage"], state_dir=tmp_path / "state", controls=controls)
    async with Recorder(broker, f"{p}/+/monitoring/state", f"{p}/+/sensitivity/state") as rec:
        await sink.start()
        await rec.wait_topic(f"{p}/kitchen/monitoring/state", b"ON")

        await publish(broker, f"{p}/kitchen/monitoring/set", "OFF")
        await rec.wait_topic(f"{p}/kitchen/monitoring/state", b"OFF")
        assert controls.is_monitoring("kitchen") is False
        assert controls.is_monitoring("garage") is True

        await publish(broker, f"{p}/kitchen/monitoring/set", "on")
        await rec.wait_for(lambda: [m.payload for m in rec.on(f"{p}/kitchen/monitoring/state")][-1:] == [b"ON"]
                           and len(rec.on(f"{p}/kitchen/monitoring/state")) >= 3, what="monitoring back ON")
        assert controls.is_monitoring("kitchen") is True

        await publish(broker, f"{p}/kitchen/sensitivity/set", "0.8")
        await rec.wait_topic(f"{p}/kitchen/sensitivity/state", b"0.8")
        assert controls.get_sensitivity("kitchen") == 0.8

        with capture_logs() as logs:
            for topic, payload in [
                (f"{p}/kitchen/sensitivity/set", "1.5"),
                (f"{p}/kitchen/sensitivity/set", "-0.1"),
                (f"{p}/kitchen/sensitivity/set", "nan"),
                (f"{p}/kitchen/sensitivity/set", "loud"),
                (f"{p}/kitchen/monitoring/set", "MAYBE"),
                (f"{p}/attic/monitoring/set", "OFF"),
            ]:
                await publish(broker, topic, payload)
            # Commands are handled in order: once this one is echoed, the invalid ones were seen.
            await publish(broker, f"{p}/garage/sensitivity/set", "0.25")
            await rec.wait_topic(f"{p}/garage/sensitivity/state", b"0.25")
        assert controls.get_sensitivity("kitchen") == 0.8
        assert controls.is_monitoring("kitchen") is True
        assert "attic" not in controls.monitoring
        rejected = [e for e in logs if e["event"] == "invalid mqtt control message ignored"]
        assert [e["log_level"] for e in rejected] == ["warning"] * 6
        assert "outside [0.0, 1.0]" in rejected[0]["reason"]
        assert rejected[-1]["reason"] == "unknown zone"
        assert sink.counters["invalid_commands"] == 6

        # A change made by the service (not over MQTT) is echoed too.
        controls.set_monitoring("garage", False)
        await rec.wait_topic(f"{p}/garage/monitoring/state", b"OFF")
        await sink.close()

    kept = await retained(broker, f"{p}/#")
    assert kept[f"{p}/kitchen/monitoring/state"].payload == b"ON"
    assert kept[f"{p}/kitchen/sensitivity/state"].payload == b"0.8"
    assert kept[f"{p}/garage/monitoring/state"].payload == b"OFF"


async def test_discovery_configs_are_complete_retained_and_resent(broker: Mosquitto, tmp_path: Path) -> None:
    settings = settings_for(broker)
    p, node = settings.topic_prefix, settings.node_id
    sink = MqttSink(settings, zones=["kitchen", "garage"], state_dir=tmp_path / "state")
    await sink.start()
    async with Recorder(broker, f"{p}/available") as rec:
        await rec.wait_topic(f"{p}/available", b"online")

    configs = await retained(broker, f"homeassistant/+/{node}/+/config")
    assert len(configs) == 22  # seven entities for each of two zones, eight of the hub
    unique_ids = set()
    for topic, message in configs.items():
        component = topic.split("/")[1]
        config = message.json()
        missing = (COMMON | REQUIRED[component]) - set(config)
        assert not missing, f"{topic}: missing {missing}"
        if topic.endswith("/hub_offline/config"):  # reads the availability topic itself, and is never unavailable
            assert config["state_topic"] == f"{p}/available" and "availability_topic" not in config
        else:
            availability = config.get("availability") or [{"topic": config["availability_topic"]}]
            assert availability[0]["topic"] == f"{p}/available"
        assert {"identifiers", "name", "manufacturer", "model", "sw_version"} <= set(config["device"])
        unique_ids.add(config["unique_id"])
    assert len(unique_ids) == 22

    kitchen = {topic.split("/")[-2].removeprefix("kitchen_"): m.json() for topic, m in configs.items()
               if "/kitchen_" in topic}
    kitchen["binary_sensor"] = kitchen["hazard"]
    kitchen["event"], kitchen["sensor"] = kitchen["warning"], kitchen["last_warning"]
    kitchen["switch"], kitchen["number"] = kitchen["monitoring"], kitchen["sensitivity"]
    assert kitchen["binary_sensor"]["state_topic"] == f"{p}/kitchen/state"
    assert kitchen["event"]["state_topic"] == f"{p}/kitchen/event"
    assert kitchen["event"]["event_types"] == ["info", "warning", "critical"]
    assert kitchen["sensor"]["state_topic"] == f"{p}/kitchen/last_warning"
    assert kitchen["switch"]["command_topic"] == f"{p}/kitchen/monitoring/set"
    assert kitchen["switch"]["state_topic"] == f"{p}/kitchen/monitoring/state"
    assert kitchen["number"]["command_topic"] == f"{p}/kitchen/sensitivity/set"
    assert kitchen["switch"]["device"]["identifiers"] == [f"{node}_kitchen"]

    # The binary sensor's template turns the zone state into ON/OFF, as HA would render it.
    template = kitchen["binary_sensor"]["value_template"]
    assert template == "{{ 'OFF' if value_json.state in ['clear', 'degraded'] else 'ON' }}"
    async with Recorder(broker, f"{p}/kitchen/#") as rec:
        await sink.publish(alert_event("kitchen", 1, severity="critical"))
        assert (await rec.wait_topic(f"{p}/kitchen/event")).json()["event_type"] == "critical"
        await rec.wait_for(lambda: any(m.json().get("state") == "hazard" for m in rec.on(f"{p}/kitchen/state")),
                           what="hazard state")
        assert "text" in (await rec.wait_topic(f"{p}/kitchen/last_warning")).json()

    async with Recorder(broker, f"homeassistant/+/{node}/+/config") as rec:
        await rec.wait_for(lambda: len(rec.messages) == 22, what="retained configs")
        assert all(m.retain for m in rec.messages)
        await publish(broker, "homeassistant/status", "offline")
        await publish(broker, "homeassistant/status", "online")
        await rec.wait_for(lambda: len(rec.messages) == 44, what="configs re-sent after HA came online")
        assert {m.topic for m in rec.messages[22:]} == set(configs)
    await sink.close()


async def test_removed_zone_loses_its_entities(broker: Mosquitto, tmp_path: Path) -> None:
    settings = settings_for(broker)
    p, node = settings.topic_prefix, settings.node_id
    state = tmp_path / "state"
    first = MqttSink(settings, zones=["kitchen", "garage"], state_dir=state)
    await first.start()
    async with Recorder(broker, f"{p}/garage/state") as rec:
        await rec.wait_topic(f"{p}/garage/state")
    await first.close()
    assert len(await retained(broker, f"homeassistant/+/{node}/+/config")) == 22
    recorded = json.loads((state / "mqtt-published.json").read_text())["topics"]
    assert f"homeassistant/switch/{node}/garage_monitoring/config" in recorded

    async with Recorder(broker, f"homeassistant/+/{node}/+/config", f"{p}/garage/#") as rec:
        second = MqttSink(settings, zones=["kitchen"], state_dir=state)
        await second.start()
        await rec.wait_for(lambda: sum(1 for m in rec.messages if m.payload == b"" and not m.retain) == 12,
                           what="empty payloads for the garage's seven configs and five state topics")
        await second.close()
    configs = await retained(broker, f"homeassistant/+/{node}/+/config")
    assert len(configs) == 15 and all("/kitchen_" in topic or "/hub_" in topic for topic in configs)
    assert not any("/garage/" in topic for topic in await retained(broker, f"{p}/#"))
