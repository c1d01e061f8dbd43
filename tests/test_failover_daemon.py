"""Failover on the real daemon (a subprocess), a real mosquitto and two scripted model servers on 127.0.0.1:
the primary's cable pulled, the zone degraded wherever a person looks, back to clear when it returns, a hazard
still a hazard while degraded, a late primary answer never a second alert, both down: blind (docs/failover.md)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.daemon import Daemon, KillableOpenAIServer, alert_lines, append, responder, write_config
from tests.support.mosquitto import Mosquitto, Recorder
from tests.support.openai_server import ScriptedOpenAIServer
from tests.test_failsafe_visible import metric

PRIMARY = "scripted-vlm"  # the primary's name: its model (write_config's [model] has no name)


def failover_config(tmp_path: Path, primary: ScriptedOpenAIServer, fallback: ScriptedOpenAIServer,
                    broker: Mosquitto, prefix: str) -> tuple[Path, Path, Path]:
    log, alerts = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    log.touch()
    extra = f"""
[health]
blind_after_s = 4.0

[mqtt]
host = "{broker.host}"
port = {broker.port}
topic_prefix = "{prefix}"
reconnect_min_s = 0.05
reconnect_max_s = 0.5
stats_interval_s = 0.3

[[zones]]
id = "kitchen"
name = "Kitchen"

[model.breaker]
failures = 1
open_s = 0.5
max_open_s = 1.0

[[model.fallbacks]]
name = "local"
backend = "openai"
base_url = "{fallback.base_url}"
model = "local-qwen"
accepts_images = false
attempt_timeout_s = 5.0
total_timeout_s = 10.0
max_retries = 0
"""
    config = write_config(tmp_path / "monitor.toml", base_url=primary.base_url, logs={"kitchen": log},
                          alerts=alerts, attempt_timeout_s=1.0, extra=extra)
    return config, log, alerts


async def assess_until(rec: Recorder, log: Path, topic: str, check: Any, *, text: str, what: str,
                       timeout: float = 20.0) -> dict[str, Any]:
    """Append `text` until the zone's retained state satisfies `check` (a breaker may need a few windows)."""
    deadline = time.monotonic() + timeout
    while True:
        append(log, text)
        try:
            await rec.wait_for(lambda: (m := rec.last(topic)) is not None and bool(m.payload) and check(m.json()),
                               timeout=2.0, what=what)
        except AssertionError:
            assert time.monotonic() < deadline, f"{what}: not seen within {timeout} s; last: {rec.last(topic)}"
            continue
        message = rec.last(topic)
        assert message is not None
        return message.json()  # type: ignore[no-any-return]


async def test_the_cable_pulled_degraded_everywhere_then_back_and_both_down_is_blind(
        broker: Mosquitto, tmp_path: Path) -> None:
    prefix = f"pm_test/{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}/kitchen/state"
    primary = KillableOpenAIServer(responder=responder())
    fallback = KillableOpenAIServer(model="local-qwen", responder=responder())
    with primary, fallback:
        config, log, alerts = failover_config(tmp_path, primary, fallback, broker, prefix)
        async with Recorder(broker, f"{prefix}/#") as rec:
            daemon = Daemon(config, tmp_path, env={"MONITOR_SERVICE__STATE_DIR": str(tmp_path / "state")})
            try:
                await asyncio.to_thread(daemon.start)
                assert daemon.find("monitor running")[0]["backends"] == [PRIMARY, "local"]
                clear = await assess_until(rec, log, topic, lambda s: s["state"] == "clear",
                                           text="Sam waters the plants", what="clear by the primary")
                assert clear["backend"] == PRIMARY and "degraded" not in clear

                # -- the cable pulled: the fallback assesses, the zone is degraded, never plain clear
                primary.stop()
                degraded = await assess_until(rec, log, topic, lambda s: s["state"] == "degraded",
                                              text="Sam waters the plants", what="degraded")
                assert degraded["backend"] == "local"
                assert degraded["degraded"] == "assessed by local (fallback)"
                assert degraded["reason"].startswith("clear (degraded): assessed by local (fallback); ")
                status, ready = await asyncio.to_thread(daemon.json, "/readyz")
                assert status == 200, ready
                assert ready["degraded"] == {"kitchen": "assessed by local (fallback)"}
                assert ready["checks"]["zones"]["detail"]["kitchen"].startswith("degraded: clear (degraded)")
                assert ready["model"]["active"] == "local"
                assert ready["model"]["backends"][PRIMARY].startswith("open")
                assert await asyncio.to_thread(metric, daemon, "monitor_zone_state", zone="kitchen",
                                               state="degraded") == 1
                assert await asyncio.to_thread(metric, daemon, "monitor_backend_active", backend="local") == 1
                assert (await asyncio.to_thread(metric, daemon, "monitor_backend_errors_total", backend=PRIMARY,
                                                kind="transient") or 0) >= 1
                assert (await asyncio.to_thread(metric, daemon, "monitor_backend_calls_total", backend="local")
                        or 0) >= 1
                await rec.wait_for(lambda: any((m.json().get("model") or {}).get("active") == "local"
                                               for m in rec.on(f"{prefix}/stats")), what="stats: active model")

                # -- the primary back: probed with a real assessment, closed, the zone clear again
                primary.start()
                back = await assess_until(rec, log, topic, lambda s: s["state"] == "clear",
                                          text="Sam waters the plants", what="clear after recovery")
                assert back["backend"] == PRIMARY
                assert await asyncio.to_thread(metric, daemon, "monitor_backend_breaker_state", backend=PRIMARY,
                                               state="closed") == 1
                assert (await asyncio.to_thread(metric, daemon, "monitor_backend_breaker_seconds_total",
                                                backend=PRIMARY, state="open") or 0) > 0

                # -- a late primary: the fallback's verdict stands, the late answer is no second alert
                primary.responder = responder(delay_s=2.5)
                hazard = await assess_until(rec, log, topic, lambda s: s["state"] == "hazard",
                                            text="Sam climbs the ladder and leans far out", what="hazard")
                assert hazard["reason"] == "warning hazard: fall from ladder (degraded: assessed by local (fallback))"
                assert hazard["degraded"] == "assessed by local (fallback)"
                await asyncio.sleep(3.0)  # the primary's late answer has arrived, to a call already cancelled
                events = alert_lines(alerts)
                news = [e for e in events if e["type"] == "new"]
                assert len(news) == 1, events
                assert (news[0]["backend"], news[0]["degraded"]) == (
                    "local", "assessed by local (fallback)")
                assert all(e["backend"] == "local" for e in events), "no event from the late answer"

                # -- both down: blind, with both failures named
                primary.stop()
                fallback.stop()
                blind = await assess_until(rec, log, topic, lambda s: s["state"] == "blind",
                                           text="Sam waters the plants", what="blind", timeout=30.0)
                assert "no model backend answered" in blind["reason"] or "circuit" in blind["reason"], blind
                status, ready = await asyncio.to_thread(daemon.json, "/readyz")
                assert status == 503 and "zones" in ready["failed"]
            finally:
                daemon.kill()
        # Every history record names the backend that answered, and what a fallback lost.
        records = [json.loads(line) for file in sorted((tmp_path / "state").rglob("history/*.jsonl"))
                   for line in file.read_text().splitlines()]
        answered = {(r["backend"], r["degraded"]) for r in records if r.get("type") == "window" and not r["error"]}
        assert answered == {(PRIMARY, None), ("local", "assessed by local (fallback)")}, answered
        assert all(r["backend"] is None for r in records if r.get("type") == "window" and r["error"])
        states = [json.loads(m.payload)["state"] for m in rec.on(topic) if m.payload]
        # While the primary was down, clear never showed: clear came back only with the primary.
        first_degraded = states.index("degraded")
        back_at = states.index("clear", first_degraded)
        assert "clear" not in states[first_degraded:back_at]
