"""The evidence frame in a real Home Assistant: the zone device's MQTT `image` entity changes with a new
warning, and HA's image proxy serves exactly the bytes the model was sent. Needs `make ha-venv` (skips otherwise)."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from monitor.evidence import EvidenceFrame
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.ha_discovery import ZoneLabel
from monitor.sinks.mqtt import MqttSink
from tests.support.homeassistant import NOTICE_LEVELS, HomeAssistant
from tests.support.media import natural_image
from tests.support.mosquitto import Mosquitto, alert_event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker(ha_broker: Mosquitto) -> Mosquitto:
    """The module's Home Assistant broker (tests/conftest.py)."""
    return ha_broker


def jpeg(seed: int) -> bytes:
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".jpg", natural_image(np.random.default_rng(seed), 120, 160))
    assert ok
    return bytes(data)


def proxied(ha: HomeAssistant, entity_id: str) -> bytes:
    token = ha.state(entity_id)["attributes"]["access_token"]  # type: ignore[index]
    with urllib.request.urlopen(f"{ha.url}/api/image_proxy/{entity_id}?token={token}", timeout=10) as response:  # noqa: S310
        return bytes(response.read())


async def test_the_zone_image_entity_shows_each_new_warnings_evidence_frame(
        ha: HomeAssistant, broker: Mosquitto, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{tag}",
                            reconnect_min_s=0.05, close_timeout_s=3.0)
    mark = ha.mark()
    sink = MqttSink(settings, zones=[ZoneLabel("workshop", "Workshop", evidence=True), ZoneLabel("hall")],
                    state_dir=tmp_path / "state")
    await sink.start()
    try:
        image = await asyncio.to_thread(ha.wait_entity, f"{settings.node_id}_workshop_evidence")
        assert ha.entity_by_unique_id(f"{settings.node_id}_hall_evidence") is None  # not a camera zone
        entity_id = image["entity_id"]
        states = []
        for n in (1, 2):
            frame = EvidenceFrame.of(jpeg(n))
            event = alert_event("workshop", n)
            event = replace(event, alert=replace(event.alert, frames=(frame.id,)), frames=(frame,))
            before = (ha.state(entity_id) or {}).get("state")
            await sink.publish(event)
            state = await ha.async_wait_state(entity_id, lambda s, b=before: s["state"] not in (b, "unavailable"))
            states.append(state["state"])
            served = await asyncio.to_thread(proxied, ha, entity_id)
            for _ in range(100):  # the state changes as the image arrives; the proxy may lag a moment
                if served == frame.jpeg:
                    break
                await asyncio.sleep(0.1)
                served = await asyncio.to_thread(proxied, ha, entity_id)
            assert served == frame.jpeg
        assert states[0] != states[1]
    finally:
        await sink.close()
    # Only this entity's: a hub sensor's template complains about the bare sink's stats on main already.
    problems = [p for p in ha.problems(since=mark, levels=NOTICE_LEVELS) if "image" in p.message.lower()]
    assert problems == [], [p.message[:700] for p in problems]
