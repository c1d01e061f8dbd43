"""The MQTT side of escalation and acknowledgement, as plain functions (no client, no I/O).

- `<prefix>/<zone>/ack` (in): acknowledge the zone's open alerts, or one alert. Payload:
  `PRESS` or `ACK` (every open alert of the zone); an alert id; or JSON
  `{"alert_id": "...", "by": "..."}` (both optional). Retained or empty messages are no commands.
- `<prefix>/escalations` (out, QoS 1, through the outbox): one JSON message per escalation that
  notifies caregivers, for Home Assistant's `event` entity and automations.
- Discovery: an `Acknowledge` button per zone and one `Escalation` event entity for caregivers.

The MQTT sink calls these; docs/mqtt.md and docs/escalation.md describe the contract.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from monitor.alerts import Alert, AlertEvent, summary_json
from monitor.core.errors import JsonInputError
from monitor.core.jsonio import loads_bounded
from monitor.core.text import iso_time
from monitor.escalation.engine import AckRequest

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
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
    if _ID.match(text):
        return AckRequest(alert_id=text, zone=zone, by="mqtt", via="mqtt")
    return "expected PRESS, an alert id, or JSON {\"alert_id\": ..., \"by\": ...}"


def _parse_json_ack(zone: str, text: str) -> AckRequest | str:
    try:
        data = loads_bounded(text, what="mqtt ack message", max_bytes=_MAX_ACK_BYTES, max_depth=_MAX_ACK_DEPTH)
    except JsonInputError as exc:  # too large, too deep, not JSON: named and counted by the reader
        return exc.detail
    if not isinstance(data, dict) or set(data) - {"alert_id", "by"}:
        return "expected a JSON object with only alert_id and by"
    alert_id, by = data.get("alert_id"), data.get("by", "mqtt")
    if alert_id is not None and not (isinstance(alert_id, str) and _ID.match(alert_id)):
        return "alert_id: expected an alert id (letters, digits, _ and -)"
    if not isinstance(by, str) or not clean_by(by):
        return "by: expected a short name"
    return AckRequest(alert_id=alert_id, zone=zone, by=clean_by(by), via="mqtt")


def clean_by(name: str) -> str:
    """Who acknowledged, as a short printable name (it is logged and published)."""
    return "".join(c for c in name if c.isprintable()).strip()[:_MAX_BY]


# --------------------------------------------------------------------------- out: escalations


def escalation_messages(prefix: str, event: AlertEvent) -> list[tuple[str, bytes, str]]:
    """(topic, payload, message id) for the caregivers' topic: escalations that notify caregivers."""
    if event.type != "escalate" or not event.alert.caregivers_notified:
        return []
    payload = json.dumps(escalation_payload(event), ensure_ascii=False, separators=(",", ":")).encode()
    return [(escalations_topic(prefix), payload, f"{event.message_id}:caregivers")]


def escalation_payload(event: AlertEvent) -> dict[str, Any]:
    """One caregivers' notification; `event_type` (the severity) is what Home Assistant's event entity keys on."""
    alert = event.alert
    return {
        "event_type": alert.severity, "alert_id": alert.id, "message_id": event.message_id, "zone": alert.zone,
        "zone_name": alert.zone_label, "hazard": alert.hazard, "advice": alert.advice, "reason": alert.reason,
        "severity": alert.severity,
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


def zone_reach_state(alert: Alert) -> dict[str, Any]:
    """What the zone state adds about the alert it shows, once it was escalated or acknowledged."""
    return alert.reach_state()


# --------------------------------------------------------------------------- Home Assistant discovery


def zone_entities(prefix: str, zone: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The per-zone entities: (component, entity, config without the common part)."""
    return [("button", "acknowledge", {
        "name": "Acknowledge", "command_topic": ack_topic(prefix, zone), "payload_press": HA_BUTTON_PAYLOAD,
        "icon": "mdi:hand-back-right",
    })]


def caregiver_entity(*, prefix: str, node_id: str, device_name: str, sw_version: str,
                     discovery_prefix: str) -> tuple[str, dict[str, Any]]:
    """The one `event` entity caregivers' automations trigger on: (config topic, config)."""
    config = {
        "name": "Escalation", "unique_id": f"{node_id}_escalations", "state_topic": escalations_topic(prefix),
        "event_types": list(ESCALATION_EVENT_TYPES), "icon": "mdi:phone-alert",
        "device": {"identifiers": [node_id], "name": device_name, "manufacturer": "proactive-monitor",
                   "model": "Proactive safety monitor", "sw_version": sw_version},
        "origin": {"name": "proactive-monitor", "sw_version": sw_version},
        "availability_topic": f"{prefix}/available", "payload_available": "online",
        "payload_not_available": "offline",
    }
    return f"{discovery_prefix}/event/{node_id}/escalations/config", config
