"""Home Assistant's side of feedback: buttons on each zone's device that judge the zone's latest alert.

Each button publishes a feedback message on `<prefix>/feedback` when pressed (its
`payload_press`), so Home Assistant needs no automation and the daemon one handler.
"""

from __future__ import annotations

import json
from typing import Any

from monitor.history.feedback import LATEST
from monitor.history.labels import Label

# The window of the "missed hazard" button.
MISSED_BUTTON_MINUTES = 10

_BUTTONS: tuple[tuple[Label, str, str], ...] = (
    ("helpful", "Last warning was helpful", "mdi:thumb-up"),
    ("false_alarm", "Last warning was a false alarm", "mdi:thumb-down"),
    ("unclear", "Last warning was unclear", "mdi:help-circle"),
    ("missed", f"Report a missed hazard (last {MISSED_BUTTON_MINUTES} min)", "mdi:alert-plus"),
)


def button_payload(zone: str, label: Label) -> str:
    """What a zone's feedback button publishes on `<prefix>/feedback`."""
    if label == "missed":
        body: dict[str, Any] = {"zone": zone, "label": label, "minutes": MISSED_BUTTON_MINUTES}
    else:
        body = {"zone": zone, "alert_id": LATEST, "label": label}
    return json.dumps({**body, "via": "home_assistant"}, separators=(",", ":"))


def feedback_entities(feedback_topic: str, zone: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The (component, entity, config) of each feedback button of a zone's device (discovery adds the rest)."""
    return [("button", f"feedback_{label}", {
        "name": name, "command_topic": feedback_topic, "payload_press": button_payload(zone, label),
        "icon": icon, "qos": 1, "retain": False,
        # Feedback is given now and then, not watched: off the zone's main card, so the hazard leads it.
        "entity_category": "config",
    }) for label, name, icon in _BUTTONS]
