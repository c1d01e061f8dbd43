"""Home Assistant MQTT discovery: the retained config messages that create the monitor's devices and entities.

One hub device for the monitor itself: `binary_sensor` Monitor offline (on the
`available` topic itself, so it is on, not unavailable, when the monitor died),
and diagnostic entities read from the retained `<prefix>/stats` topic (model
errors, windows assessed with the last successful assessment as an attribute,
outbox backlog, source problem). One device per zone, hung off the hub
(`via_device`), named after the zone's display name, suggested for its area:
`binary_sensor` Hazard (safety), `sensor` Hazard status (the zone's state and
its reason), `binary_sensor` Monitoring problem (on while the zone is off or blind;
a zone merely not assessed since start is not a problem, nor one a fallback backend
assesses: `degraded` is watched, and its attributes and Hazard status say so), `event` Warning,
`sensor` Last warning, `switch` Monitoring and `number` Sensitivity.

Every entity but Monitor offline is available while `<prefix>/available` is
`online`; the Hazard sensor in addition only while its zone can see (state
`clear`, `hazard` or `degraded`), so it reads "unavailable", never "Safe", while the zone
is unknown, off or blind. The hub's Active model names the backend that answered last
(docs/failover.md). No attribute carries an `_epoch` twin (Home Assistant
would show it as a raw number); times are ISO 8601.
Config topics are `<discovery prefix>/<component>/<node_id>/<object>/config`
with `<object>` = `<zone>_<entity>` for zones and `hub_<entity>` for the hub.

When acknowledgements are wired (`reach`, the daemon), each zone's device also has a
`button` (acknowledge), and the hub an `event` entity for caregivers (escalations).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from monitor import __version__
from monitor.control import SENSITIVITY_MAX, SENSITIVITY_MIN
from monitor.core.config import MAX_NAME_CHARS
from monitor.core.text import shorten
from monitor.escalation import contract as escalation_contract
from monitor.history.discovery import feedback_entities
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.ha_alarms import alarm_entities

EVENT_TYPES = ("info", "warning", "critical")
# Anything but `clear` (or `degraded`: clear, said by a fallback backend) reads as a hazard: if the availability
# ever let a blind zone through, it would say "Unsafe", never "Safe". A hazard while degraded is `hazard`.
HAZARD_ON = "{{ 'OFF' if value_json.state in ['clear', 'degraded'] else 'ON' }}"
# A problem is what needs a person: the zone switched off or blind (its sources offline, the model failing).
# `unknown` (not assessed since start: a quiet zone after a restart) is not one; it turns blind if it lasts
# while observations wait. Nor is `degraded`: a fallback backend watches the zone (its attributes and the
# Hazard status say which, and what is lost). A dead monitor is the hub's Monitor offline.
PROBLEM_ON = "{{ 'ON' if value_json.state in ['off', 'blind'] else 'OFF' }}"
# Home Assistant drops an attribute named `state`: the zone's state is `zone_state` there.
PROBLEM_ATTRIBUTES = escalation_contract.attributes_template("reason", "since", "backend", "degraded",
                                                             zone_state="state")
# The zone state as Home Assistant attributes: without the `_epoch` twins.
ZONE_ATTRIBUTES = escalation_contract.attributes_template(
    "reason", "since", "hazard", "severity", "alert_id", "active_alerts", "escalation_level", "acknowledged_at",
    "acknowledged_by", "backend", "degraded", zone_state="state")
# The reason a person reads on the card, e.g. "Blind: every source of the zone is offline: cam (...)".
STATUS = "{{ ((value_json.state | capitalize) ~ ': ' ~ value_json.reason)[:255] }}"
NO_WARNING = "No open warning"
LAST_WARNING = "{{ value_json.text[:255] if value_json.text else '" + NO_WARNING + "' }}"
LAST_WARNING_ATTRIBUTES = escalation_contract.attributes_template(
    "active", "hazard", "severity", "advice", "reason", "alert_id", "at")
# An event entity's attributes are its payload: without the `_epoch` twin.
WARNING_EVENT = escalation_contract.attributes_template(
    "event_type", "alert_id", "message_id", "event_id", "seq", "zone", "hazard", "reason", "advice", "confidence", "at")
ZONE_SEES = "{{ 'online' if value_json.state in ['clear', 'hazard', 'degraded'] else 'offline' }}"
# The backend that answered last (docs/failover.md); each backend's breaker as attributes.
ACTIVE_MODEL = "{{ (value_json.get('model') or {}).get('active') or 'unknown' }}"
MODEL_ATTRIBUTES = ("{{ {'primary': (value_json.get('model') or {}).get('primary'), "
                    "'backends': (value_json.get('model') or {}).get('backends')} | tojson }}")
MANUFACTURER = "proactive-monitor"
HUB = "hub"


def _version() -> str:
    try:
        return metadata.version("proactive-monitor")
    except metadata.PackageNotFoundError:
        return __version__


@dataclass(frozen=True, slots=True)
class ZoneLabel:
    """How a zone is shown: its id, its display name (`[[zones]] name`) and its Home Assistant area."""

    id: str
    name: str | None = None
    area: str | None = None
    # A camera zone whose evidence is kept: its device shows the latest warning's evidence frame (an image entity).
    evidence: bool = False
    hears_alarms: bool = False  # a microphone listens for alarms here: smoke and CO sensors (ha_alarms.py)


def labels(zones: Iterable[str | ZoneLabel]) -> list[ZoneLabel]:
    """Zone ids or labels as labels, each zone once, in order."""
    out: dict[str, ZoneLabel] = {}
    for zone in zones:
        label = zone if isinstance(zone, ZoneLabel) else ZoneLabel(zone)
        out.setdefault(label.id, label)
    return list(out.values())


class Topics:
    """Every topic of the contract, derived from the topic prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.available = f"{prefix}/available"
        self.alerts = f"{prefix}/alerts"
        self.stats = f"{prefix}/stats"
        self.monitoring_set_filter = f"{prefix}/+/monitoring/set"
        self.sensitivity_set_filter = f"{prefix}/+/sensitivity/set"
        self.feedback = f"{prefix}/feedback"

    def state(self, zone: str) -> str:
        return f"{self.prefix}/{zone}/state"

    def event(self, zone: str) -> str:
        return f"{self.prefix}/{zone}/event"

    def last_warning(self, zone: str) -> str:
        return f"{self.prefix}/{zone}/last_warning"

    def evidence(self, zone: str) -> str:
        """Retained: the JPEG bytes of the latest warning's evidence frame (camera zones)."""
        return f"{self.prefix}/{zone}/evidence"

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
    """Builds the discovery config messages: the hub's first, then each zone's."""

    def __init__(self, settings: MqttSettings, *, configuration_url: str | None = None, reach: bool = False) -> None:
        self.settings = settings
        self.reach = reach  # announce the acknowledge buttons and the caregivers' escalation entity
        self.topics = Topics(settings.topic_prefix)
        self.node_id = settings.node_id
        self.prefix = settings.discovery.prefix
        self.status_topic = f"{self.prefix}/status"
        self.sw_version = _version()
        # The hub's "Visit" link: only a URL the user configured (a loopback health URL is dead elsewhere).
        self.configuration_url = configuration_url or settings.discovery.configuration_url

    def config_topic(self, component: str, zone: str, entity: str) -> str:
        return f"{self.prefix}/{component}/{self.node_id}/{zone}_{entity}/config"

    def messages(self, zones: Iterable[str | ZoneLabel], *, feedback: bool = False) -> dict[str, dict[str, Any]]:
        """Config topic -> config payload, the hub's entities first (zone devices refer to the hub device);
        with `feedback`, each zone's device also gets the feedback buttons."""
        out: dict[str, dict[str, Any]] = {}
        out[self.config_topic("binary_sensor", HUB, "offline")] = self._monitor_offline()
        for component, entity, config in self._hub_entities():
            out[self.config_topic(component, HUB, entity)] = self._hub_common(entity) | config
        if self.reach:
            state = escalation_contract.escalation_state_topic(self.topics.prefix)
            # Not diagnostic: it is what a caregiver's automation and the hub's card are for.
            out[self.config_topic("binary_sensor", HUB, "caregiver_needed")] = {
                "unique_id": f"{self.node_id}_{HUB}_caregiver_needed", "device": self.hub_device(), **self._origin(),
                **self._monitor_availability(), **escalation_contract.caregiver_needed_entity(state)}
        for zone in labels(zones):
            entities = [*self._zone_entities(zone.id), *self._reach_entities(zone.id)]
            if zone.evidence:
                entities.append(("image", "evidence", {
                    "name": "Evidence", "image_topic": self.topics.evidence(zone.id), "content_type": "image/jpeg",
                    "icon": "mdi:camera-image"}))
            if zone.hears_alarms:
                entities += alarm_entities(self.topics.state(zone.id), self.topics.available)
            if feedback:
                entities += feedback_entities(self.topics.feedback, zone.id)
            for component, entity, config in entities:
                availability = {} if "availability" in config else self._monitor_availability()
                out[self.config_topic(component, zone.id, entity)] = (
                    self._zone_common(zone, component, entity) | availability | config)
        if self.reach:
            # Reaching the person: one escalation event entity on the hub, for caregivers' automations.
            topic, config = escalation_contract.caregiver_entity(
                prefix=self.topics.prefix, node_id=self.node_id, sw_version=self.sw_version,
                device_name=self.settings.discovery.device_name, discovery_prefix=self.prefix)
            out[topic] = config | {"device": self.hub_device()}
        return out

    def _reach_entities(self, zone: str) -> list[tuple[str, str, dict[str, Any]]]:
        return escalation_contract.zone_entities(self.topics.prefix, zone) if self.reach else []

    # -- the hub ----------------------------------------------------------------------
    def hub_device(self) -> dict[str, Any]:
        device: dict[str, Any] = {
            "identifiers": [self.node_id], "name": self.settings.discovery.device_name,
            "manufacturer": MANUFACTURER, "model": "Proactive safety monitor", "sw_version": self.sw_version,
        }
        if self.configuration_url is not None:
            device["configuration_url"] = self.configuration_url
        return device

    def _hub_common(self, entity: str) -> dict[str, Any]:
        return {
            "unique_id": f"{self.node_id}_{HUB}_{entity}", "device": self.hub_device(), **self._origin(),
            **self._monitor_availability(), "entity_category": "diagnostic", "state_topic": self.topics.stats,
        }

    def _monitor_offline(self) -> dict[str, Any]:
        """On while `<prefix>/available` says `offline` (a clean stop, or the Last Will of a dead monitor).

        It reads the availability topic itself and has no availability of its own: every other entity goes
        unavailable when the monitor dies, this one turns on. Unknown until the monitor first connected.
        """
        return {
            "name": "Monitor offline", "unique_id": f"{self.node_id}_{HUB}_offline", "device": self.hub_device(),
            **self._origin(), "device_class": "problem", "state_topic": self.topics.available,
            "payload_on": "offline", "payload_off": "online", "icon": "mdi:lan-disconnect",
        }

    def _hub_entities(self) -> list[tuple[str, str, dict[str, Any]]]:
        # A binary_sensor and sensors come first: zone entities of those platforms name the hub as via_device.
        return [
            # The hub's problem entity: a source offline, a sink that cannot deliver or queue, a task that died.
            ("binary_sensor", "source_problem", {
                "name": "Monitor problem", "device_class": "problem",
                "value_template": "{{ 'ON' if value_json.sources_offline or value_json.problems else 'OFF' }}",
                "json_attributes_topic": self.topics.stats,
                "json_attributes_template": "{{ {'sources': value_json.sources, 'problems': value_json.problems}"
                                            " | tojson }}",
            }),
            # Changes at every stats publish: disabled by default (like zigbee2mqtt's last_seen), so it does not
            # fill the logbook; the time is also an attribute of Windows assessed.
            ("sensor", "last_assessment", {
                "name": "Last successful assessment", "device_class": "timestamp", "enabled_by_default": False,
                "value_template": "{{ value_json.last_assessment_at or 'None' }}",
            }),
            ("sensor", "model_errors", {
                "name": "Model errors", "state_class": "total_increasing", "icon": "mdi:robot-confused-outline",
                "value_template": "{{ value_json.model_errors_total }}",
                "json_attributes_topic": self.topics.stats,
                "json_attributes_template": "{{ value_json.model_errors | tojson }}",
            }),
            ("sensor", "windows_assessed", {
                "name": "Windows assessed", "state_class": "total_increasing", "icon": "mdi:eye-check-outline",
                "value_template": "{{ value_json.windows_assessed }}",
                "json_attributes_topic": self.topics.stats,
                "json_attributes_template": "{{ {'last_assessment_at': value_json.last_assessment_at} | tojson }}",
            }),
            ("sensor", "outbox_backlog", {
                "name": "Outbox backlog", "state_class": "measurement", "icon": "mdi:tray-full",
                "unit_of_measurement": "messages", "value_template": "{{ value_json.mqtt.outbox_pending }}",
            }),
            ("sensor", "active_model", {
                "name": "Active model", "icon": "mdi:robot-outline", "value_template": ACTIVE_MODEL,
                "json_attributes_topic": self.topics.stats, "json_attributes_template": MODEL_ATTRIBUTES,
            }),
            ("sensor", "optional_failures", {
                "name": "Optional part failures", "state_class": "total_increasing",
                "icon": "mdi:puzzle-remove-outline",
                "value_template": "{{ value_json.optional_failures_total }}",
                "json_attributes_topic": self.topics.stats,
                "json_attributes_template": "{{ value_json.get('optional_failures', {}) | tojson }}",
            }),
        ]

    # -- the zones --------------------------------------------------------------------
    def zone_device(self, zone: ZoneLabel, *, via_hub: bool = True) -> dict[str, Any]:
        device: dict[str, Any] = {
            "identifiers": [f"{self.node_id}_{zone.id}"],
            # Bounded here too, whatever built the label: Home Assistant stores what it is sent.
            "name": shorten(zone.name or f"{self.settings.discovery.device_name} {zone.id}", MAX_NAME_CHARS),
            "manufacturer": MANUFACTURER, "model": "Monitored zone", "sw_version": self.sw_version,
        }
        if zone.area:
            device["suggested_area"] = shorten(zone.area, MAX_NAME_CHARS)
        if via_hub:
            device["via_device"] = self.node_id
        return device

    def _zone_common(self, zone: ZoneLabel, component: str, entity: str) -> dict[str, Any]:
        # Home Assistant loads each entity platform on first use, in no fixed order across platforms; within
        # one platform configs are handled in order. Only the platforms the hub also uses (published first)
        # name the hub as via_device, so a zone device never refers to a hub device HA has not made yet.
        return {
            "unique_id": f"{self.node_id}_{zone.id}_{entity}",
            "device": self.zone_device(zone, via_hub=component in ("binary_sensor", "sensor")),
            **self._origin(),
        }

    def _origin(self) -> dict[str, Any]:
        return {"origin": {"name": MANUFACTURER, "sw_version": self.sw_version}}

    def _monitor_availability(self) -> dict[str, Any]:
        return {"availability_topic": self.topics.available, "payload_available": "online",
                "payload_not_available": "offline"}

    def _zone_entities(self, zone: str) -> list[tuple[str, str, dict[str, Any]]]:
        t = self.topics
        return [
            ("binary_sensor", "hazard", {
                "name": "Hazard", "device_class": "safety", "state_topic": t.state(zone),
                "value_template": HAZARD_ON, "payload_on": "ON", "payload_off": "OFF",
                "json_attributes_topic": t.state(zone), "json_attributes_template": ZONE_ATTRIBUTES,
                **self._zone_availability(zone),
            }),
            ("sensor", "status", {
                "name": "Hazard status", "state_topic": t.state(zone), "value_template": STATUS,
                "icon": "mdi:list-status",
            }),
            ("binary_sensor", "problem", {
                "name": "Monitoring problem", "device_class": "problem", "state_topic": t.state(zone),
                "value_template": PROBLEM_ON, "payload_on": "ON", "payload_off": "OFF",
                "json_attributes_topic": t.state(zone),
                "json_attributes_template": PROBLEM_ATTRIBUTES,
            }),
            ("event", "warning", {
                "name": "Warning", "state_topic": t.event(zone), "event_types": list(EVENT_TYPES),
                "value_template": WARNING_EVENT,
            }),
            ("sensor", "last_warning", {
                "name": "Last warning", "state_topic": t.last_warning(zone),
                "value_template": LAST_WARNING, "json_attributes_topic": t.last_warning(zone),
                "json_attributes_template": LAST_WARNING_ATTRIBUTES, "icon": "mdi:alert",
            }),
            ("switch", "monitoring", {
                "name": "Monitoring", "command_topic": t.monitoring(zone, "set"),
                "state_topic": t.monitoring(zone, "state"), "payload_on": "ON", "payload_off": "OFF",
                "state_on": "ON", "state_off": "OFF", "optimistic": False, "icon": "mdi:shield-home",
            }),
            ("number", "sensitivity", {
                "name": "Sensitivity", "command_topic": t.sensitivity(zone, "set"),
                "state_topic": t.sensitivity(zone, "state"), "min": SENSITIVITY_MIN, "max": SENSITIVITY_MAX,
                "step": 0.05, "mode": "slider", "entity_category": "config", "icon": "mdi:tune-variant",
            }),
        ]

    def _zone_availability(self, zone: str) -> dict[str, Any]:
        """Available only while the monitor is online AND the zone can see (Hazard must never say "Safe" blind)."""
        return {
            "availability": [
                {"topic": self.topics.available, "payload_available": "online", "payload_not_available": "offline"},
                {"topic": self.topics.state(zone), "value_template": ZONE_SEES,
                 "payload_available": "online", "payload_not_available": "offline"},
            ],
            "availability_mode": "all",
        }

