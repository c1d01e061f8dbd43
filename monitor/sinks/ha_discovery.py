"""Home Assistant MQTT discovery: the retained config messages that create entities per zone.

Each zone is one device with five or six entities: `binary_sensor` (a hazard is
active), `event` (fires on each new warning, `event_type` = severity),
`sensor` (the last warning's text), `switch` (monitoring on/off), `number`
(sensitivity), and, when acknowledgements are wired (`reach`, the daemon),
`button` (acknowledge) plus one more device with the caregivers' `event`
entity (escalations). Every entity's availability follows `<prefix>/available`.
Config topics are `<discovery prefix>/<component>/<node_id>/<zone>_<entity>/config`.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from typing import Any

from monitor import __version__
from monitor.control import SENSITIVITY_MAX, SENSITIVITY_MIN
from monitor.escalation import contract as escalation_contract
from monitor.mqtt.settings import MqttSettings

EVENT_TYPES = ("info", "warning", "critical")
HAZARD_ON = "{{ 'OFF' if value_json.state == 'clear' else 'ON' }}"


def _version() -> str:
    try:
        return metadata.version("proactive-monitor")
    except metadata.PackageNotFoundError:
        return __version__


class Topics:
    """Every topic of the contract, derived from the topic prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.available = f"{prefix}/available"
        self.alerts = f"{prefix}/alerts"
        self.stats = f"{prefix}/stats"
        self.monitoring_set_filter = f"{prefix}/+/monitoring/set"
        self.sensitivity_set_filter = f"{prefix}/+/sensitivity/set"

    def state(self, zone: str) -> str:
        return f"{self.prefix}/{zone}/state"

    def event(self, zone: str) -> str:
        return f"{self.prefix}/{zone}/event"

    def last_warning(self, zone: str) -> str:
        return f"{self.prefix}/{zone}/last_warning"

    def monitoring(self, zone: str, suffix: str) -> str:
        return f"{self.prefix}/{zone}/monitoring/{suffix}"

    def sensitivity(self, zone: str, suffix: str) -> str:
        return f"{self.prefix}/{zone}/sensitivity/{suffix}"

    def control_zone(self, topic: str, control: str) -> str | None:
        """The zone of a `<prefix>/<zone>/<control>/set` topic, or None if it is not one."""
        head, tail = f"{self.prefix}/", f"/{control}/set"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        zone = topic[len(head):-len(tail)]
        return zone if zone and "/" not in zone else None


class Discovery:
    """Builds the discovery config messages for a set of zones."""

    def __init__(self, settings: MqttSettings, *, reach: bool = False) -> None:
        self.settings = settings
        self.reach = reach  # announce the acknowledge buttons and the caregivers' escalation entity
        self.topics = Topics(settings.topic_prefix)
        self.node_id = settings.node_id
        self.prefix = settings.discovery.prefix
        self.status_topic = f"{self.prefix}/status"
        self.sw_version = _version()

    def config_topic(self, component: str, zone: str, entity: str) -> str:
        return f"{self.prefix}/{component}/{self.node_id}/{zone}_{entity}/config"

    def messages(self, zones: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Config topic -> config payload, for every entity of every zone."""
        out: dict[str, dict[str, Any]] = {}
        for zone in zones:
            for component, entity, config in [*self._entities(zone), *self._reach_entities(zone)]:
                out[self.config_topic(component, zone, entity)] = self._common(zone, entity) | config
        if not self.reach:
            return out
        # Reaching the person: one escalation event entity for caregivers' automations.
        topic, config = escalation_contract.caregiver_entity(
            prefix=self.topics.prefix, node_id=self.node_id, sw_version=self.sw_version,
            device_name=self.settings.discovery.device_name, discovery_prefix=self.prefix)
        out[topic] = config
        return out

    def _reach_entities(self, zone: str) -> list[tuple[str, str, dict[str, Any]]]:
        return escalation_contract.zone_entities(self.topics.prefix, zone) if self.reach else []

    def _common(self, zone: str, entity: str) -> dict[str, Any]:
        return {
            "unique_id": f"{self.node_id}_{zone}_{entity}",
            "device": {
                "identifiers": [f"{self.node_id}_{zone}"],
                "name": f"{self.settings.discovery.device_name} {zone}",
                "manufacturer": "proactive-monitor",
                "model": "Proactive safety monitor",
                "sw_version": self.sw_version,
            },
            "origin": {"name": "proactive-monitor", "sw_version": self.sw_version},
            "availability_topic": self.topics.available,
            "payload_available": "online",
            "payload_not_available": "offline",
        }

    def _entities(self, zone: str) -> list[tuple[str, str, dict[str, Any]]]:
        t = self.topics
        return [
            ("binary_sensor", "hazard", {
                "name": "Hazard", "device_class": "safety", "state_topic": t.state(zone),
                "value_template": HAZARD_ON, "payload_on": "ON", "payload_off": "OFF",
                "json_attributes_topic": t.state(zone),
            }),
            ("event", "warning", {
                "name": "Warning", "state_topic": t.event(zone), "event_types": list(EVENT_TYPES),
            }),
            ("sensor", "last_warning", {
                "name": "Last warning", "state_topic": t.last_warning(zone),
                "value_template": "{{ value_json.text[:255] }}", "json_attributes_topic": t.last_warning(zone),
                "icon": "mdi:alert",
            }),
            ("switch", "monitoring", {
                "name": "Monitoring", "command_topic": t.monitoring(zone, "set"),
                "state_topic": t.monitoring(zone, "state"), "payload_on": "ON", "payload_off": "OFF",
                "state_on": "ON", "state_off": "OFF", "optimistic": False, "entity_category": "config",
            }),
            ("number", "sensitivity", {
                "name": "Sensitivity", "command_topic": t.sensitivity(zone, "set"),
                "state_topic": t.sensitivity(zone, "state"), "min": SENSITIVITY_MIN, "max": SENSITIVITY_MAX,
                "step": 0.05, "mode": "slider", "entity_category": "config",
            }),
        ]
