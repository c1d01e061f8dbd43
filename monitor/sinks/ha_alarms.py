"""Home Assistant: a `smoke` and a `carbon_monoxide` binary sensor per zone a microphone hears.

Both read the zone's retained state topic: `alarms` lists the alarms whose alert
is open in the zone (monitor/assess/acoustic.py `alarm_kinds`), so a sensor is
on from the alert's `new` to its `end`, survives a restart with the open-alerts
journal, and never depends on the model. Available while the monitor is online
and the zone is monitored: a zone switched off raises no alarm alert, so its
sensors read "unavailable", never "Clear".
"""

from __future__ import annotations

from typing import Any

from monitor.assess.acoustic import HAZARDS

ALARM_AVAILABLE = "{{ 'offline' if value_json.state == 'off' else 'online' }}"
_NAMES = {"smoke": "Smoke alarm", "carbon_monoxide": "Carbon monoxide alarm"}


def alarm_entities(state_topic: str, available_topic: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, entity, config) of the two alarm sensors of a zone whose state is on `state_topic`."""
    entities: list[tuple[str, str, dict[str, Any]]] = []
    for kind in HAZARDS:
        entities.append(("binary_sensor", kind, {
            "name": _NAMES[kind], "device_class": kind, "state_topic": state_topic,
            "value_template": f"{{{{ 'ON' if '{kind}' in (value_json.alarms | default([])) else 'OFF' }}}}",
            "payload_on": "ON", "payload_off": "OFF",
            "availability": [
                {"topic": available_topic, "payload_available": "online", "payload_not_available": "offline"},
                {"topic": state_topic, "value_template": ALARM_AVAILABLE,
                 "payload_available": "online", "payload_not_available": "offline"},
            ],
            "availability_mode": "all",
        }))
    return entities
