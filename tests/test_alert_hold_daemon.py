"""An alert outlives an outage of the model, end to end: the real daemon, the scripted model server failing
with HTTP 500 for longer than alerts.dedup_ttl_s, a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from pathlib import Path
from typing import Any

from tests.support.daemon import DANGER_LADDER, SAFE, Daemon, alert_lines, append
from tests.support.mosquitto import Mosquitto, Recorder
from tests.support.openai_server import Action, ScriptedOpenAIServer, reply
from tests.test_failsafe_visible import config_for, state_is


async def keep_seeing(log: Path, text: str) -> None:
    while True:
        await asyncio.to_thread(append, log, text)
        await asyncio.sleep(0.3)


def ends(path: Path) -> list[dict[str, Any]]:
    return [e for e in alert_lines(path) if e["type"] == "end"]


async def test_an_alert_is_not_ended_while_the_model_fails_and_continues_when_it_answers(
        broker: Mosquitto, tmp_path: Path) -> None:
    """Seen: an alert ended "not confirmed" while its zone was blind (the model failing), so the escalation
    ladder started again afterwards and the person heard the first warning again."""
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    state_topic = f"{prefix}/kitchen/state"
    with ScriptedOpenAIServer(default=reply(DANGER_LADDER)) as server:
        config, log, alerts = config_for(tmp_path, server, broker, prefix, blind_after_s=1.0)
        async with Recorder(broker, f"{prefix}/#") as rec:
            daemon = Daemon(config, tmp_path, env={"MONITOR_ALERTS__DEDUP_TTL_S": "2"})
            feeder: asyncio.Task[None] | None = None
            try:
                await asyncio.to_thread(daemon.start)
                append(log, "Sam climbs the ladder and leans far out")
                opened = (await rec.wait_topic(f"{prefix}/alerts")).json()
                assert opened["type"] == "new"

                server.default = Action(status=500)  # the model server fails, for three times the TTL
                feeder = asyncio.create_task(keep_seeing(log, "Sam is still on the ladder"))
                await rec.wait_for(state_is(rec, state_topic, "blind"), timeout=15, what="blind")
                await asyncio.sleep(6.0)
                assert ends(alerts) == [], "an alert ended while the model was not answering"
                [held] = daemon.find("alert held open: its zone cannot be assessed")
                assert held["alert"] == opened["id"] and "HTTP 500" in held["why"]
                blind = rec.last(state_topic)
                assert blind is not None and blind.json()["alert_id"] == opened["id"]  # blind, hazard kept

                server.default = reply(DANGER_LADDER)  # it answers again, and still sees the hazard
                await rec.wait_for(lambda: any(m.json()["type"] == "update" and m.json()["id"] == opened["id"]
                                               for m in rec.on(f"{prefix}/alerts")), timeout=15, what="update")
                server.default = reply(SAFE)  # then the hazard is gone
                await rec.wait_for(lambda: any(m.json()["type"] == "end" for m in rec.on(f"{prefix}/alerts")),
                                   timeout=20, what="the end")
            finally:
                if feeder is not None:
                    feeder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeder
                daemon.signal(signal.SIGTERM)
                await asyncio.to_thread(daemon.wait, 15)
                daemon.kill()

    news = [e for e in alert_lines(alerts) if e["type"] == "new"]
    assert [e["id"] for e in news] == [opened["id"]]  # one alert through the outage, never a second "new"
    [end] = ends(alerts)
    assert (end["id"], end["end_cause"]) == (opened["id"], "assessed_clear")
    assert end["end_reason"].startswith("assessed clear:")
