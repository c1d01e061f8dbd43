"""The hub's problem entity in a real Home Assistant (issue 20): on while a sink cannot deliver or a task the
daemon depends on died, with the problems as attributes; off again once they are gone."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from monitor.mqtt.settings import MqttSettings
from monitor.sinks.mqtt import MqttSink
from tests.support.homeassistant import HomeAssistant
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.slow


async def test_the_hubs_problem_entity_is_on_while_delivery_or_a_task_has_a_problem(
        ha: HomeAssistant, ha_broker: Mosquitto, tmp_path: Path) -> None:
    settings = MqttSettings(host=ha_broker.host, port=ha_broker.port, topic_prefix=f"pm_hp/{uuid.uuid4().hex[:8]}",
                            stats_interval_s=0.2, reconnect_min_s=0.05, reconnect_max_s=0.5, close_timeout_s=3.0)
    problems: list[str] = []
    sink = MqttSink(settings, zones=["kitchen"], state_dir=tmp_path / "state",
                    stats=lambda: {"problems": list(problems), "sources": {"log": "online"}, "sources_offline": []})
    await sink.start()
    try:
        entry = await asyncio.to_thread(ha.wait_entity, f"{settings.node_id}_hub_source_problem", 30.0)
        entity = entry["entity_id"]
        await ha.async_wait_state(entity, "off")
        problems.append("sink jsonl: failing to take alerts for 3 s: OSError: [Errno 28] No space left on device")
        on = await ha.async_wait_state(entity, "on")
        assert on["attributes"]["problems"] == problems
        assert on["attributes"]["friendly_name"].endswith("Monitor problem")
        problems.clear()
        await ha.async_wait_state(entity, "off")
    finally:
        await sink.close()
