"""Escalation across a crash, end to end: the real daemon (subprocess), the scripted model server, SIGKILL at
escalation level 2, a restart: the ladder goes on where it was and the hour's budget is not refilled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, alert_lines, append, responder, wait_until, write_config
from tests.support.openai_server import ScriptedOpenAIServer


@pytest.fixture
def model() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(responder=responder()) as server:
        yield server


def restart_config(tmp_path: Path, model: ScriptedOpenAIServer) -> Path:
    for name in ("garage", "kitchen"):
        (tmp_path / f"{name}.jsonl").write_text("")
    ladder = "escalate_after_s = 1.5\ncaregivers_from_level = 2\n"
    return write_config(tmp_path / "monitor.toml", base_url=model.base_url, alerts=tmp_path / "alerts.jsonl",
                        logs={"garage": tmp_path / "garage.jsonl", "kitchen": tmp_path / "kitchen.jsonl"}, extra=f"""
[escalation]
enabled = true
confirmed_within_s = 5
max_per_alert = 10
max_per_hour = 1               # one repeat to the person an hour: the garage's level 1 uses it
caregivers_max_per_hour = 100

[escalation.warning]
{ladder}
[escalation.critical]
{ladder}
[[zones]]
id = "garage"
name = "Workshop"
""")


async def keep_seeing(log: Path, text: str) -> None:
    """The hazard persists: the same observation every 0.4 s."""
    while True:
        await asyncio.to_thread(append, log, text)
        await asyncio.sleep(0.4)


def escalations(path: Path, zone: str) -> list[dict[str, Any]]:
    return [e for e in alert_lines(path) if e["type"] == "escalate" and e["zone"] == zone]


async def test_a_crash_at_level_2_continues_the_ladder_and_keeps_the_hours_budget(
        tmp_path: Path, model: ScriptedOpenAIServer) -> None:
    """Seen: SIGKILL at level 2, restart: `end` said level 0, the hazard started again at level 0 under a new
    id, and the hour's escalation budget was full again."""
    config = restart_config(tmp_path, model)
    alerts, garage = tmp_path / "alerts.jsonl", tmp_path / "garage.jsonl"
    first = Daemon(config, tmp_path)
    await asyncio.to_thread(first.start)
    feeder = asyncio.create_task(keep_seeing(garage, "Sam climbs the ladder and leans out"))
    try:
        await asyncio.to_thread(wait_until, lambda: len(escalations(alerts, "garage")) >= 2, 30, "level 2")
        first.signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 15)
        before = escalations(alerts, "garage")
        assert [e["escalation_level"] for e in before] == [1, 2]
        assert before[1]["caregivers_notified"] is True and before[1]["zone_name"] == "Workshop"
        alert_id = before[0]["id"]
        stored = json.loads((tmp_path / "state" / "escalation.json").read_text())
        assert stored["tracks"][alert_id]["level"] == 2 and len(stored["person"]) == 1

        second = Daemon(config, tmp_path)
        await asyncio.to_thread(second.start)
        try:
            # The garage hazard is still seen: the same alert goes on, at level 3.
            await asyncio.to_thread(wait_until, lambda: len(escalations(alerts, "garage")) >= 3, 30, "level 3")
            after = escalations(alerts, "garage")[2]
            assert (after["id"], after["escalation_level"]) == (alert_id, 3)
            assert after["message_id"] == f"{alert_id}:escalate:3"
            restarted = [e for e in alert_lines(alerts) if e["id"] == alert_id and e["type"] in ("new", "end")]
            assert [e["type"] for e in restarted] == ["new"]  # not ended by the restart, not opened anew

            # A new hazard in the kitchen: its repeat to the person finds the hour's budget used (before the
            # crash); the ladder climbs on silently and the caregivers are told at level 2.
            kitchen = asyncio.create_task(keep_seeing(tmp_path / "kitchen.jsonl", "Sam leaves the stove on"))
            try:
                await asyncio.to_thread(wait_until, lambda: escalations(alerts, "kitchen"), 30, "kitchen caregivers")
            finally:
                kitchen.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await kitchen
            [told] = escalations(alerts, "kitchen")[:1]
            assert (told["escalation_level"], told["caregivers_notified"]) == (2, True)
            skipped = [e for e in alert_lines(alerts) if e["zone"] == "kitchen" and e["type"] == "update"
                       and "max_per_hour" in (e["escalation_limit"] or "")]
            assert skipped and skipped[0]["escalation_level"] == 1  # level 1 reached without a repeat, recorded
            person = [e for e in alert_lines(alerts) if e["type"] == "escalate" and not e["caregivers_notified"]]
            assert len(person) == 1  # one repeat to the person in the hour, across the crash
        finally:
            second.signal(signal.SIGTERM)
            await asyncio.to_thread(second.wait, 30)
            second.kill()
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        first.kill()
