"""What Home Assistant shows of the discovery configs, checked without starting it (issue 21, sections 3 and 6).

Every icon exists in the icon set of the installed Home Assistant frontend (an unknown `mdi:` name renders
blank); no attribute carries an `_epoch` number; the hub links to a URL only when one is configured; the zone
problem is on for off and blind, not for a zone merely not assessed since start; the hub has an entity that
turns on, not unavailable, when the monitor dies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from monitor.mqtt.settings import MqttSettings
from monitor.sinks.ha_discovery import Discovery, ZoneLabel
from tests.support.homeassistant import ha_python
from tests.support.paths import REPO

ZONES = [ZoneLabel("kitchen", "Kitchen", "Kitchen"), ZoneLabel("garage"), ZoneLabel("workshop", evidence=True)]


def every_config(**settings: Any) -> dict[str, dict[str, Any]]:
    """Every config the daemon can announce: acknowledgements wired and feedback buttons on."""
    return Discovery(MqttSettings(topic_prefix="pm/home", **settings), reach=True).messages(ZONES, feedback=True)


def frontend_icons() -> set[str]:
    """The `mdi:` names the installed Home Assistant frontend can draw (its iconList.json); skips without HA."""
    python = ha_python()
    if python is None:
        pytest.skip("no Home Assistant venv: make ha-venv")
    lists = sorted(python.parent.parent.glob("lib/python3*/site-packages/hass_frontend/static/mdi/iconList.json"))
    if not lists:
        pytest.fail(f"no hass_frontend/static/mdi/iconList.json in the venv of {python}")
    return {entry["name"] for entry in json.loads(lists[0].read_text())}


def test_every_icon_exists_in_the_installed_frontend() -> None:
    icons = frontend_icons()
    used = {config["icon"] for config in every_config().values() if "icon" in config}
    examples = {m for path in (REPO / "examples" / "homeassistant").glob("*.yaml")
                for m in re.findall(r"\bmdi:[a-z0-9-]+", path.read_text())}
    assert used and examples
    missing = sorted(icon for icon in used | examples if icon.removeprefix("mdi:") not in icons)
    assert missing == [], f"icons Home Assistant {len(icons)}-icon set does not have: {missing}"


def test_the_hub_links_only_to_a_configured_url() -> None:
    hubs = [c["device"] for c in every_config().values() if c["device"]["identifiers"] == ["pm_home"]]
    assert hubs and all("configuration_url" not in device for device in hubs)
    public = "https://monitor.example.lan/status"
    configured = every_config(discovery={"configuration_url": public})
    assert {c["device"]["configuration_url"] for c in configured.values()
            if c["device"]["identifiers"] == ["pm_home"]} == {public}
    with pytest.raises(ValueError, match="configuration_url"):
        MqttSettings(discovery={"configuration_url": "javascript:alert(1)"})


def test_no_attribute_template_passes_an_epoch_number() -> None:
    """Entities on a JSON topic with `_epoch` keys pick their attributes: "Since epoch 1,796,631,474.96" is gone."""
    for topic, config in every_config().items():
        if topic.startswith("homeassistant/event/"):  # an event entity's attributes are its rendered payload
            assert "_epoch" not in config["value_template"] and "event_type" in config["value_template"], topic
            continue
        if "json_attributes_topic" not in config:
            continue
        state_topic = config["json_attributes_topic"]
        if state_topic.endswith("/stats"):
            continue  # the stats payload: its templates pick single keys
        assert "json_attributes_template" in config, topic
        assert "_epoch" not in config["json_attributes_template"], topic


def test_problem_means_off_or_blind_and_a_dead_monitor_turns_a_hub_entity_on() -> None:
    configs = every_config()
    problem = configs["homeassistant/binary_sensor/pm_home/kitchen_problem/config"]["value_template"]
    assert render_state(problem, {"state": "unknown"}) == "OFF"
    assert render_state(problem, {"state": "clear"}) == "OFF"
    assert render_state(problem, {"state": "hazard"}) == "OFF"
    assert render_state(problem, {"state": "blind"}) == "ON"
    assert render_state(problem, {"state": "off"}) == "ON"
    offline = configs["homeassistant/binary_sensor/pm_home/hub_offline/config"]
    assert (offline["state_topic"], offline["payload_on"], offline["payload_off"]) == (
        "pm/home/available", "offline", "online")
    assert "availability_topic" not in offline and "availability" not in offline
    assert offline["device_class"] == "problem" and "entity_category" not in offline
    status = configs["homeassistant/sensor/pm_home/kitchen_status/config"]["value_template"]
    assert render_state(status, {"state": "blind", "reason": "x" * 400}) == "Blind: " + "x" * 248


def render_state(template: str, value_json: dict[str, Any]) -> str:
    """Render a value template as Home Assistant does for these simple ones (jinja2, `value_json`)."""
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(autoescape=False)
    env.filters["tojson"] = json.dumps
    return str(env.from_string(template).render(value_json=value_json)).strip()


def test_examples_are_yaml_lists_of_automations_with_ids(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    for name in ("caregiver_call.yaml", "monitor_down.yaml", "zone_blind.yaml"):
        automations = yaml.safe_load((REPO / "examples" / "homeassistant" / name).read_text())
        assert isinstance(automations, list) and all(a["id"] and a["triggers"] for a in automations), name
