"""Failover in a real Home Assistant core: the real daemon (a subprocess), a real mosquitto, a primary model
server that fails on demand and a fallback. What a person sees (docs/failover.md): the hub's Active model names
the fallback, the zone's Hazard status says degraded and which backend, the problem entity stays off (the zone is
watched) with `degraded` in its attributes, a hazard stays on through the failover (no flicker to Safe), and
everything comes back when the primary does. Needs `make ha-venv` (skips otherwise). One HA start."""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, append, responder
from tests.support.homeassistant import NOTICE_LEVELS, HomeAssistant
from tests.support.mosquitto import Mosquitto
from tests.support.openai_server import ScriptedOpenAIServer
from tests.test_homeassistant_monitor import Model, StateWatcher, _wait_entity, daemon_config, entity_ids

pytestmark = pytest.mark.slow
FALLBACK = "assessed by local (fallback)"


@pytest.fixture(scope="module")
def broker(ha_broker: Mosquitto) -> Mosquitto:
    return ha_broker


def with_fallback(config: Path, fallback: ScriptedOpenAIServer) -> None:
    with config.open("a") as handle:
        handle.write(f"""
[model.breaker]
failures = 1
open_s = 0.5
max_open_s = 1.0

[[model.fallbacks]]
name = "local"
backend = "openai"
base_url = "{fallback.base_url}"
model = "local-qwen"
attempt_timeout_s = 5.0
total_timeout_s = 10.0
max_retries = 0
""")


async def until_state(ha: HomeAssistant, log: Path, entity: str, check: Any, *, text: str,
                      timeout: float = 30.0) -> dict[str, Any]:
    """Append `text` until `entity` satisfies `check` (a breaker's probe may take a window or two)."""
    deadline = time.monotonic() + timeout
    while True:
        append(log, text)
        try:
            return await ha.async_wait_state(entity, check, timeout=3.0)
        except AssertionError:
            assert time.monotonic() < deadline, f"{entity}: not as expected within {timeout} s: {ha.state(entity)}"


async def test_home_assistant_shows_the_fallback_and_degraded_and_never_flickers_to_safe(
        ha: HomeAssistant, broker: Mosquitto, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    node = f"pm_ha_{tag}"
    primary = Model()
    mark = ha.mark()
    watcher = StateWatcher(ha)
    with primary.server, ScriptedOpenAIServer(model="local-qwen", responder=responder()) as fallback, \
            contextlib.ExitStack() as stack:
        stack.callback(watcher.close)
        config, log = daemon_config(tmp_path, primary, broker, tag)
        with_fallback(config, fallback)
        daemon = Daemon(config, tmp_path)
        stack.callback(daemon.kill)
        daemon.start()
        for suffix in ("kitchen_hazard", "kitchen_status", "kitchen_problem", "hub_active_model"):
            await _wait_entity(ha, f"{node}_{suffix}")
        ids = entity_ids(ha, node)
        hazard, status, problem, active = (ids["kitchen_hazard"], ids["kitchen_status"], ids["kitchen_problem"],
                                           ids["hub_active_model"])

        # -- the primary watches: a hazard, named by the primary
        await until_state(ha, log, hazard, "on", text="Sam climbs the ladder and leans far out")
        shown = await ha.async_wait_state(active, "scripted-vlm")
        assert shown["attributes"]["backends"]["scripted-vlm"] == "closed"

        # -- the primary fails while the hazard is open: the fallback confirms it, the hazard never reads Safe
        failed_at = time.monotonic()
        primary.failing = True
        degraded = await until_state(ha, log, status, lambda s: "degraded" in s["state"],
                                     text="Sam climbs the ladder again and leans far out")
        assert degraded["state"] == f"Hazard: warning hazard: fall from ladder (degraded: {FALLBACK})"
        seen_at = time.monotonic()
        on = await ha.async_wait_state(hazard, "on")
        assert on["attributes"]["degraded"] == FALLBACK and on["attributes"]["backend"] == "local"
        shown = await ha.async_wait_state(active, "local")
        assert shown["attributes"]["backends"]["scripted-vlm"].startswith("open")
        watched = await ha.async_wait_state(problem, "off")  # degraded is watched: not a monitoring problem
        assert watched["attributes"]["degraded"] == FALLBACK and watched["attributes"]["zone_state"] == "hazard"

        # -- the alert ends; the fallback sees the kitchen safe: clear (degraded), never plain clear
        cleared = await until_state(ha, log, status, lambda s: s["state"].startswith("Degraded: "),
                                    text="Sam sweeps the floor")
        assert cleared["state"].startswith(f"Degraded: clear (degraded): {FALLBACK}; ")
        through = [c.state for c in list(watcher.changes) if c.entity_id == hazard and failed_at <= c.at <= seen_at]
        assert "off" not in through and "unavailable" not in through, f"flickered through the failover: {through}"
        assert (await ha.async_wait_state(problem, "off"))["attributes"]["zone_state"] == "degraded"

        # -- the primary back: probed, closed, plain clear, the Active model the primary again
        recovered_at = time.monotonic()
        primary.failing = False
        await until_state(ha, log, status, lambda s: s["state"].startswith("Clear: "), text="Sam sweeps the floor")
        await ha.async_wait_state(active, "scripted-vlm")
        statuses = [s or "" for s in watcher.states(status, since=failed_at)]
        before_recovery = [c.state or "" for c in list(watcher.changes)
                           if c.entity_id == status and failed_at <= c.at < recovered_at]
        assert not [s for s in before_recovery if s.startswith("Clear:")], f"plain clear while degraded: {statuses}"
        assert "unavailable" not in watcher.states(hazard, since=failed_at), "watched throughout"
        assert "on" not in watcher.states(problem, since=failed_at), "degraded is not a monitoring problem"

    problems = [r for r in ha.problems(since=mark, levels=NOTICE_LEVELS) if "birth message sent" not in r.message]
    assert problems == [], [str(p) for p in problems]
