"""The MQTT side of escalation and acknowledgement, as plain functions (no client, no I/O).

- `<prefix>/<zone>/ack` (in): acknowledge the zone's open alerts, or one alert. Payload:
  `PRESS` or `ACK` (every open alert of the zone); an alert id; or JSON
  `{"alert_id": "...", "by": "..."}` (both optional). Retained or empty messages are no commands.
- `<prefix>/escalations` (out, QoS 1, through the outbox): one JSON message per escalation that
  notifies caregivers, for Home Assistant's `event` entity and automations.
- `<prefix>/<zone>/escalation_state` and `<prefix>/escalation_state` (out, retained): the open escalations of
  the zone, of every zone; what a subscriber that was away (Home Assistant restarting) reads when it returns.
- Discovery: an `Acknowledge` button per zone and one `Escalation` event entity for caregivers; "Caregiver
  needed" binary sensors and "Escalation level" sensors on the retained state.

The MQTT sink calls these; docs/mqtt.md and docs/escalation.md describe the contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from monitor.alerts import ALERT_ID, Alert, AlertEvent, summary_json
from monitor.core.errors import JsonInputError
from monitor.core.jsonio import loads_bounded
from monitor.core.text import iso_time
from monitor.escalation.engine import AckRequest

# Not the empty payload: that is how MQTT deletes a retained message, never a command.
_ZONE_WIDE = ("PRESS", "ACK", "ON")
_MAX_BY = 64
# An ack object is two short strings; an object can hold no deeper structure worth reading.
_MAX_ACK_BYTES = 4096
_MAX_ACK_DEPTH = 4
ESCALATION_EVENT_TYPES = ("info", "warning", "critical")
# What Home Assistant's button sends: it does not say who pressed it, so it names itself.
HA_BUTTON_PAYLOAD = '{"by": "home_assistant"}'


def escalations_topic(prefix: str) -> str:
    return f"{prefix}/escalations"


def escalation_state_topic(prefix: str, zone: str | None = None) -> str:
    """The retained open escalations of `zone`, or of every zone (the hub) when None."""
    return f"{prefix}/escalation_state" if zone is None else f"{prefix}/{zone}/escalation_state"


def ack_topic(prefix: str, zone: str) -> str:
    return f"{prefix}/{zone}/ack"


def ack_filter(prefix: str) -> str:
    return f"{prefix}/+/ack"


# --------------------------------------------------------------------------- in: acknowledgements


def ack_zone(prefix: str, topic: str) -> str | None:
    """The zone of a `<prefix>/<zone>/ack` topic, or None if it is not one."""
    head, tail = f"{prefix}/", "/ack"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    zone = topic[len(head):-len(tail)]
    return zone if zone and "/" not in zone else None


def parse_ack(prefix: str, topic: str, payload: bytes, zones: Collection[str]) -> AckRequest | str | None:
    """An ack message as a request; a string says why it is invalid; None: not an ack topic."""
    zone = ack_zone(prefix, topic)
    if zone is None:
        return None
    if zone not in zones:
        return "unknown zone"
    text = payload.decode("utf-8", "replace").strip()
    if text.upper() in _ZONE_WIDE:
        return AckRequest(alert_id=None, zone=zone, by="mqtt", via="mqtt")
    if text.startswith("{"):
        return _parse_json_ack(zone, text)
    if ALERT_ID.match(text.lower()):  # an id read out and typed may come in capitals
        return AckRequest(alert_id=text.lower(), zone=zone, by="mqtt", via="mqtt")
    return "expected PRESS, an alert id, or JSON {\"alert_id\": ..., \"by\": ...}"


def _parse_json_ack(zone: str, text: str) -> AckRequest | str:
    try:
        data = loads_bounded(text, what="mqtt ack message", max_bytes=_MAX_ACK_BYTES, max_depth=_MAX_ACK_DEPTH)
    except JsonInputError as exc:  # too large, too deep, not JSON: named and counted by the reader
        return exc.detail
    if not isinstance(data, dict) or set(data) - {"alert_id", "by"}:
        return "expected a JSON object with only alert_id and by"
    alert_id, by = data.get("alert_id"), data.get("by", "mqtt")
    if alert_id is not None and not (isinstance(alert_id, str) and ALERT_ID.match(alert_id := alert_id.lower())):
        return "alert_id: expected an alert id (16 hex digits, as in every alert event)"
    if not isinstance(by, str) or not clean_by(by):
        return "by: expected a short name"
    return AckRequest(alert_id=alert_id, zone=zone, by=clean_by(by), via="mqtt")


def clean_by(name: str) -> str:
    """Who acknowledged, as a short printable name (it is logged and published)."""
    return "".join(c for c in name if c.isprintable()).strip()[:_MAX_BY]


# --------------------------------------------------------------------------- out: escalations


def escalation_messages(prefix: str, event: AlertEvent, seq: int | None = None) -> list[tuple[str, bytes, str]]:
    """(topic, payload, message id) for the caregivers' topic: escalations that notify caregivers."""
    if event.type != "escalate" or not event.alert.caregivers_notified:
        return []
    payload = json.dumps(escalation_payload(event, seq), ensure_ascii=False, separators=(",", ":")).encode()
    return [(escalations_topic(prefix), payload, f"{event.message_id}:caregivers")]


def escalation_payload(event: AlertEvent, seq: int | None = None) -> dict[str, Any]:
    """One caregivers' notification; `event_type` (the severity) is what Home Assistant's event entity keys on.

    `event_id` (the alert event's `message_id`) and `seq` (monitor/sinks/sequence.py) are the same on every
    topic the event reaches, so a consumer can drop what it has seen.
    """
    alert = event.alert
    return {
        "event_type": alert.severity, "alert_id": alert.id, "message_id": event.message_id,
        "event_id": event.message_id, "seq": seq, "zone": alert.zone, "zone_name": alert.zone_label,
        "hazard": alert.hazard, "advice": alert.advice, "reason": alert.reason, "severity": alert.severity,
        "escalation_level": alert.escalation_level,
        # Times as everywhere on MQTT: ISO 8601 in UTC, and seconds since the epoch under `<key>_epoch`.
        "first_warning_at": iso_time(alert.created_at), "first_warning_at_epoch": alert.created_at,
        "at": iso_time(event.at), "at_epoch": event.at,
        "text": caregiver_text(event),
        **({"summary": [summary_json(named) for named in event.summary]} if event.summary else {}),
    }


def caregiver_text(event: AlertEvent) -> str:
    """What a caregiver reads: the zone by its display name; a storm summary names every alert it stands for."""
    alert = event.alert
    text = f"{alert.zone_label}: {alert.hazard} for {event.at - alert.created_at:.0f} s, not acknowledged"
    if not event.summary:
        return text
    others = "; ".join(f"{named.zone_label}: {named.hazard}" for named in event.summary)
    return f"{text}; and {len(event.summary)} more alert(s) not acknowledged: {others}"


# --------------------------------------------------------------------------- out: the retained escalation state


def escalation_state(alerts: Iterable[Alert], *, seq: Callable[[str], int | None],
                     names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The open escalations among `alerts` as one retained payload (docs/mqtt.md, "Escalation state").

    The top-level fields describe the escalation a caregiver should act on first (waiting for a caregiver,
    then the highest level, then the newest); `seq` is the highest event number among the escalations still
    waiting for a caregiver (null when none waits), which is what a deduplicating consumer compares.
    With no open escalation every field is at its empty value, never missing.
    """
    entries = sorted((_entry(a, seq(a.id), names) for a in alerts if a.escalation_level > 0),
                     key=lambda e: (e["caregiver_needed"], e["level"], e["since_epoch"], e["alert_id"]), reverse=True)
    waiting = [e["seq"] for e in entries if e["caregiver_needed"] and e["seq"] is not None]
    top = entries[0] if entries else _EMPTY_ENTRY
    return {"active": bool(entries), **{k: v for k, v in top.items() if k != "seq"},
            "seq": max(waiting, default=None), "count": len(entries), "escalations": entries}


def _entry(alert: Alert, seq: int | None, names: Mapping[str, str] | None) -> dict[str, Any]:
    since = alert.escalated_at if alert.escalated_at is not None else alert.created_at
    acknowledged = alert.acknowledged_at is not None
    return {
        "alert_id": alert.id, "zone": alert.zone, "zone_name": (names or {}).get(alert.zone, alert.zone_label),
        "hazard": alert.hazard, "severity": alert.severity, "level": alert.escalation_level,
        "since": iso_time(since), "since_epoch": since,
        "first_warning_at": iso_time(alert.created_at), "first_warning_at_epoch": alert.created_at,
        "caregivers_notified": alert.caregivers_notified, "acknowledged": acknowledged,
        "acknowledged_by": alert.acknowledged_by,
        "caregiver_needed": alert.caregivers_notified and not acknowledged, "seq": seq,
    }


_EMPTY_ENTRY: dict[str, Any] = {
    "alert_id": None, "zone": None, "zone_name": None, "hazard": "", "severity": None, "level": 0,
    "since": None, "since_epoch": None, "first_warning_at": None, "first_warning_at_epoch": None,
    "caregivers_notified": False, "acknowledged": False, "acknowledged_by": None, "caregiver_needed": False,
    "seq": None,
}


def zone_reach_state(alert: Alert) -> dict[str, Any]:
    """What the zone state adds about the alert it shows, once it was escalated or acknowledged."""
    return alert.reach_state()


# --------------------------------------------------------------------------- Home Assistant discovery


# Home Assistant attributes of the escalation state: the top escalation without the `_epoch` twins (HA would
# show "Since epoch 1,796,631,474.96") and without the list (the payload has it).
def attributes_template(*keys: str, **renamed: str) -> str:
    """A Home Assistant `json_attributes_template` picking `keys` (missing ones as null) from the payload;
    `renamed` maps an attribute name to the payload key it reads."""
    pairs = [f"'{name}': value_json.get('{key}')" for name, key in (*((k, k) for k in keys), *renamed.items())]
    return "{{ {" + ", ".join(pairs) + "} | tojson }}"


_STATE_ATTRIBUTES = attributes_template(
    "caregiver_needed", "level", "alert_id", "zone", "zone_name", "hazard", "severity", "since", "first_warning_at",
    "caregivers_notified", "acknowledged", "acknowledged_by", "seq", "count")
CAREGIVER_NEEDED = "{{ 'ON' if value_json.caregiver_needed else 'OFF' }}"
# An event entity's attributes are its payload: the escalation without the `_epoch` twins.
ESCALATION_EVENT = attributes_template(
    "event_type", "alert_id", "message_id", "event_id", "seq", "zone", "zone_name", "hazard", "advice", "reason",
    "severity", "escalation_level", "summary", "first_warning_at", "at", "text")


def caregiver_needed_entity(state_topic: str, name: str = "Caregiver needed") -> dict[str, Any]:
    """A `binary_sensor` on a retained escalation state: on while an escalation waits for a caregiver."""
    return {
        "name": name, "state_topic": state_topic, "value_template": CAREGIVER_NEEDED,
        "payload_on": "ON", "payload_off": "OFF", "json_attributes_topic": state_topic,
        "json_attributes_template": _STATE_ATTRIBUTES, "icon": "mdi:account-alert",
    }


def zone_entities(prefix: str, zone: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The per-zone entities: (component, entity, config without the common part)."""
    # Home Assistant's generated dashboards list a device's controls first, then its sensors by name, and leave
    # out entities with a category: the names and categories here keep Hazard and Hazard status at the top of
    # a zone's card ("Needs a caregiver" sorts after them; the level and the button are on the device page).
    state = escalation_state_topic(prefix, zone)
    return [
        ("binary_sensor", "caregiver_needed", caregiver_needed_entity(state, "Needs a caregiver")),
        ("sensor", "escalation_level", {
            "name": "Escalation level", "state_topic": state, "value_template": "{{ value_json.level }}",
            "json_attributes_topic": state, "json_attributes_template": _STATE_ATTRIBUTES,
            "icon": "mdi:stairs-up", "entity_category": "diagnostic",
        }),
        ("button", "acknowledge", {
            "name": "Acknowledge", "command_topic": ack_topic(prefix, zone), "payload_press": HA_BUTTON_PAYLOAD,
            "icon": "mdi:hand-back-right", "entity_category": "config",
        }),
    ]


def caregiver_entity(*, prefix: str, node_id: str, device_name: str, sw_version: str,
                     discovery_prefix: str) -> tuple[str, dict[str, Any]]:
    """The one `event` entity caregivers' automations trigger on: (config topic, config)."""
    config = {
        "name": "Escalation", "unique_id": f"{node_id}_escalations", "state_topic": escalations_topic(prefix),
        "event_types": list(ESCALATION_EVENT_TYPES), "icon": "mdi:phone-alert", "value_template": ESCALATION_EVENT,
        "device": {"identifiers": [node_id], "name": device_name, "manufacturer": "proactive-monitor",
                   "model": "Proactive safety monitor", "sw_version": sw_version},
        "origin": {"name": "proactive-monitor", "sw_version": sw_version},
        "availability_topic": f"{prefix}/available", "payload_available": "online",
        "payload_not_available": "offline",
    }
    return f"{discovery_prefix}/event/{node_id}/escalations/config", config
