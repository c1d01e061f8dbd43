"""The zone tracker with fallbacks (docs/failover.md): a clear verdict from a fallback is `degraded`, never plain
clear; a hazard stays a hazard and says it is degraded; the primary's next verdict is plain clear again."""

from __future__ import annotations

from monitor.alerts import AlertEvent
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import Usage
from monitor.observer import Settled
from tests.test_zone_status import Tracker, alert

FALLBACK = "assessed by local (fallback): frames not seen"


def settle(t: Tracker, *, backend: str, degraded: str | None, event: AlertEvent | None = None) -> None:
    assessment = Assessment(danger=False, severity="info", reason="ok", confidence=0.9)
    verdict = Verdict(assessment=assessment, model="m", usage=Usage(), backend=backend, degraded=degraded)
    t.observe()
    t.status.window_settled(Settled(t.window(), verdict, None, event, 0.1))


def test_a_fallbacks_clear_is_degraded_and_the_primarys_is_clear_again() -> None:
    t = Tracker()
    settle(t, backend="cloud", degraded=None)
    assert (t.state().state, t.state().backend, t.state().degraded) == ("clear", "cloud", None)
    settle(t, backend="local", degraded=FALLBACK)
    state = t.state()
    assert state.state == "degraded" and state.sees
    assert state.reason == f"clear (degraded): {FALLBACK}; the last assessment found no hazard"
    assert state.to_json()["backend"] == "local" and state.to_json()["degraded"] == FALLBACK
    settle(t, backend="cloud", degraded=None)
    assert t.state().state == "clear" and "degraded" not in t.state().to_json()


def test_a_hazard_while_degraded_is_a_hazard_that_says_so() -> None:
    t = Tracker()
    settle(t, backend="local", degraded=FALLBACK, event=AlertEvent("new", alert()))
    state = t.state()
    assert state.state == "hazard"
    assert state.reason == f"critical hazard: hot oil fire (degraded: {FALLBACK})"
    assert state.to_json()["degraded"] == FALLBACK


def test_a_blind_zone_names_no_backend() -> None:
    t = Tracker(blind_after_s=10)
    settle(t, backend="local", degraded=FALLBACK)
    t.observe()
    t.tick(11)
    assert t.state().state == "blind"
    assert "backend" not in t.state().to_json() and "degraded" not in t.state().to_json()
