"""The zone tracker's rules, with a controllable clock: clear, hazard, unknown, off and blind, and their reasons."""

from __future__ import annotations

from monitor.alerts import Alert, AlertEvent
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import Usage
from monitor.control import ZoneControls
from monitor.core.errors import BackendTimeoutError, TransientBackendError
from monitor.observer import Settled
from monitor.windows import Window
from monitor.zones import ZoneState, ZoneStatus
from sensors.types import InputHealth
from tests.support.sources import entry


class Clock:
    """One clock for both the tracker's monotonic and wall time (they advance together here)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Tracker:
    """A ZoneStatus on a fake clock, with helpers that act like the pipeline."""

    def __init__(self, *zones: str, blind_after_s: float = 60.0, controls: ZoneControls | None = None) -> None:
        self.clock = Clock()
        self.health: dict[str, list[tuple[str, InputHealth]]] = {}
        self.status = ZoneStatus(zones or ("kitchen",), blind_after_s=blind_after_s, controls=controls,
                                 sources=lambda: self.health, clock=self.clock, wall=self.clock)
        self.changes: list[ZoneState] = []
        self.status.listeners.append(self.changes.append)
        self._windows = 0

    def tick(self, seconds: float) -> list[ZoneState]:
        self.clock.now += seconds
        return self.status.refresh()

    def observe(self, zone: str = "kitchen") -> None:
        self.status.observation_received(zone, entry("Sam cooks", source=zone))

    def window(self, zone: str = "kitchen") -> Window:
        self._windows += 1
        return Window(id=f"{zone}-{self._windows}", zone=zone, observations=(entry("x", source=zone),),
                      new_count=1, created_at=self.clock.now)

    def succeed(self, window: Window) -> None:
        assessment = Assessment.model_validate({"danger": False, "severity": "info", "hazard": "", "reason": "ok",
                                                "advice": "", "confidence": 0.9})
        verdict = Verdict(assessment=assessment, model="m", usage=Usage())
        self.status.window_settled(Settled(window, verdict, None, None, 0.1))

    def fail(self, window: Window, error: Exception | None = None) -> None:
        exc = error or TransientBackendError("model server answered HTTP 500")
        self.status.window_settled(Settled(window, None, exc, None, 0.1))  # type: ignore[arg-type]

    def state(self, zone: str = "kitchen") -> ZoneState:
        return self.status.state(zone)


def alert(zone: str = "kitchen", *, severity: str = "critical", hazard: str = "hot oil fire",
          alert_id: str = "a1", created_at: float = 1_800_000_000.0) -> Alert:
    return Alert(id=alert_id, zone=zone, sources=(zone,), created_at=created_at, updated_at=created_at,
                 severity=severity, hazard=hazard, reason="Smoking oil.", advice="Turn it off.",  # type: ignore[arg-type]
                 evidence=(), confidence=0.9, model="m", strategy="single", window_id="w", latency_s=0.1,
                 prompt_tokens=1, completion_tokens=1)


def test_unknown_until_the_first_assessment_then_clear_then_hazard_and_back() -> None:
    t = Tracker()
    assert (t.state().state, t.state().reason) == ("unknown", "no observations since start")
    t.observe()
    t.tick(1)
    assert (t.state().state, t.state().reason) == ("unknown", "not assessed since start; waiting for the first "
                                                   "assessment")
    t.succeed(t.window())
    assert (t.state().state, t.state().reason) == ("clear", "the last assessment found no hazard")
    t.status.alert_event(AlertEvent("new", alert()))
    hazard = t.state().to_json()
    assert hazard["state"] == "hazard" and hazard["reason"] == "critical hazard: hot oil fire"
    assert (hazard["hazard"], hazard["severity"], hazard["alert_id"], hazard["active_alerts"]) == (
        "hot oil fire", "critical", "a1", 1)
    assert hazard["since_epoch"] == 1_800_000_000.0 and hazard["since"] == "2027-01-15T08:00:00.000+00:00"
    t.status.alert_event(AlertEvent("end", alert()))
    assert t.state().state == "clear" and "alert_id" not in t.state().to_json()


def test_a_zone_whose_every_model_call_fails_goes_blind_after_blind_after_s() -> None:
    """The bug of issue 10: such a zone said "clear". It is unknown while it waits, then blind, with the error."""
    t = Tracker(blind_after_s=60)
    t.observe()
    t.fail(t.window())
    assert t.state().state == "unknown"
    assert t.state().reason == "not assessed since start; last error: transient: model server answered HTTP 500"
    assert t.tick(59.0) == []
    t.observe()
    t.fail(t.window())
    [blind] = t.tick(1.0)
    assert blind.state == "blind" and t.status.blind() == ["kitchen"]
    assert blind.reason == ("observations waited 60 s (health.blind_after_s) with no successful assessment; "
                            "last error: transient: model server answered HTTP 500")
    assert blind.since == t.clock.now
    t.succeed(t.window())
    assert t.state().state == "clear" and t.status.blind() == []


def test_a_successful_zone_turns_blind_when_later_calls_fail() -> None:
    t = Tracker(blind_after_s=30)
    t.observe()
    t.succeed(t.window())
    t.tick(600)  # quiet for ten minutes: nothing to judge, still clear
    assert t.state().state == "clear"
    t.observe()
    t.fail(t.window(), BackendTimeoutError("attempt timed out after 30 s"))
    t.tick(29)
    assert t.state().state == "clear"  # errs early, never late: measured from the observation that waits
    t.tick(1)
    assert t.state().state == "blind" and "last error: timeout: attempt timed out after 30 s" in t.state().reason


def test_observations_after_the_assessed_snapshot_keep_the_clock_running() -> None:
    """A success covers what its window saw; an observation that arrived after the snapshot still waits."""
    t = Tracker(blind_after_s=10)
    t.observe()
    snapshot = t.window()
    t.tick(2)
    t.observe()  # arrives while the window is being assessed
    t.succeed(snapshot)
    assert t.state().state == "clear"
    t.tick(7.9)
    assert t.state().state == "clear"
    t.tick(0.2)  # 10.1 s since the snapshot: the later observation has waited too long
    assert t.state().state == "blind"


def test_a_hanging_model_makes_the_zone_blind_without_any_error() -> None:
    t = Tracker(blind_after_s=20)
    t.observe()
    t.succeed(t.window())
    t.observe()  # assessment starts and never returns
    t.tick(20)
    assert t.state().state == "blind"
    assert t.state().reason.endswith("no assessment finished (the model may be hanging)")


def test_a_blind_zone_keeps_its_open_hazard() -> None:
    t = Tracker(blind_after_s=10)
    t.observe()
    t.succeed(t.window())
    t.status.alert_event(AlertEvent("new", alert()))
    t.observe()
    t.fail(t.window())
    t.tick(10)
    body = t.state().to_json()
    assert body["state"] == "blind" and body["hazard"] == "hot oil fire" and body["alert_id"] == "a1"


def test_every_source_offline_is_blind_at_once_with_each_source_and_its_error() -> None:
    t = Tracker(blind_after_s=600)
    t.observe()
    t.succeed(t.window())
    t.health["kitchen"] = [("cam", InputHealth("cam", "offline", last_error="no frame for 12.0 s")),
                           ("log", InputHealth("log", "online"))]
    assert t.tick(0.1) == [] and t.state().state == "clear"  # one source still sees
    t.health["kitchen"][1] = ("log", InputHealth("log", "offline"))
    [blind] = t.tick(0.1)
    assert blind.state == "blind"
    assert blind.reason == "every source of the zone is offline: cam (no frame for 12.0 s), log"
    t.health["kitchen"][0] = ("cam", InputHealth("cam", "online"))
    [back] = t.tick(0.1)
    assert (back.state, back.reason) == ("unknown", "no observations since its sources came back online")


def test_a_returning_source_waits_for_a_fresh_assessment_like_switching_a_zone_back_on() -> None:
    """Seen: a camera came back and its zone read clear 50 ms before any new frame was assessed."""
    t = Tracker(blind_after_s=600)
    t.health["kitchen"] = [("cam", InputHealth("cam", "online"))]
    t.observe()
    t.succeed(t.window())
    t.tick(0.1)
    t.health["kitchen"] = [("cam", InputHealth("cam", "offline", last_error="no frame for 12.0 s"))]
    assert t.tick(0.1)[-1].state == "blind"
    stale = t.window()  # snapshotted while the camera was away, assessed after it came back
    t.tick(5)
    t.health["kitchen"] = [("cam", InputHealth("cam", "online"))]
    assert t.tick(0.05)[-1].state == "unknown"
    assert t.status.unseen("kitchen") == "not assessed since its sources came back online"
    t.succeed(stale)
    assert t.state().state == "unknown"  # a window from before the return says nothing about now
    t.tick(0.1)
    t.observe()
    t.succeed(t.window())
    assert (t.state().state, t.state().reason) == ("clear", "the last assessment found no hazard")
    assert t.status.unseen("kitchen") is None
    assert "clear" not in [c.state for c in t.changes[t.changes.index(next(
        c for c in t.changes if c.state == "blind")):-1]]


def test_off_wins_and_switching_back_on_starts_afresh() -> None:
    controls = ZoneControls()
    t = Tracker("kitchen", "garage", blind_after_s=10, controls=controls)
    t.observe()
    t.succeed(t.window())
    t.status.alert_event(AlertEvent("new", alert()))
    controls.set_monitoring("kitchen", False)
    off = t.state()
    assert (off.state, off.reason) == ("off", "monitoring is switched off")
    assert off.to_json()["alert_id"] == "a1"  # the open alert is still shown
    t.status.alert_event(AlertEvent("end", alert()))
    for _ in range(5):  # observations keep arriving while off: never blind, it is off
        t.observe()
        t.tick(10)
    assert t.state().state == "off"
    assert t.state("garage").state == "unknown"  # the other zone is untouched
    controls.set_monitoring("kitchen", True)
    assert (t.state().state, t.state().reason) == ("unknown", "no observations since monitoring was switched on")
    t.tick(30)
    assert t.state().state == "unknown"  # what arrived while off does not count against it
    t.observe()
    t.succeed(t.window())
    assert t.state().state == "clear"


def test_listeners_hear_each_change_once_and_since_stays_put() -> None:
    t = Tracker(blind_after_s=10)
    t.observe()
    t.succeed(t.window())
    first = t.state()
    for _ in range(3):
        t.observe()
        t.succeed(t.window())
        t.tick(1)
    assert [c.state for c in t.changes] == ["clear"]
    assert t.state().since == first.since  # still clear since the first assessment


def test_stats_json_carries_each_zone_and_its_last_assessment() -> None:
    t = Tracker("kitchen", "garage")
    t.observe()
    t.succeed(t.window())
    body = t.status.to_json()
    assert list(body) == ["kitchen", "garage"]
    assert body["kitchen"]["state"] == "clear" and body["kitchen"]["last_assessed_at"].endswith("+00:00")
    assert body["garage"]["state"] == "unknown" and body["garage"]["last_assessed_at"] is None
    assert t.status.last_success_at() == t.clock.now


def test_a_first_window_that_warns_goes_straight_to_hazard_never_through_clear() -> None:
    """The verdict settles before its alert is published; were they two changes, an unknown or blind zone would
    flash "clear" (Home Assistant: "Safe") for a moment before "hazard"."""
    t = Tracker(blind_after_s=10)
    t.observe()
    t.fail(t.window())
    t.tick(10)
    assert t.state().state == "blind"
    assessment = Assessment.model_validate({"danger": True, "severity": "critical", "hazard": "hot oil fire",
                                            "reason": "Smoking oil.", "advice": "Turn it off.", "confidence": 0.9})
    verdict = Verdict(assessment=assessment, model="m", usage=Usage())
    t.status.window_settled(Settled(t.window(), verdict, None, AlertEvent("new", alert()), 0.1))
    assert [c.state for c in t.changes] == ["unknown", "blind", "hazard"]
    t.status.alert_published(AlertEvent("new", alert()))  # the pipeline reports it again once published
    assert [c.state for c in t.changes] == ["unknown", "blind", "hazard"]


def test_a_source_that_has_not_come_online_yet_is_waited_for_then_the_zone_is_blind() -> None:
    """A camera connecting at start-up reports offline until its first frame: its zone is unknown ("waiting"),
    not blind, for up to blind_after_s; a camera that never comes up makes it blind after that."""
    t = Tracker("porch", "garage", blind_after_s=30)
    t.health["porch"] = [("porch-cam", InputHealth("porch-cam", "offline", last_error="connection refused"))]
    t.health["garage"] = [("garage-cam", InputHealth("garage-cam", "offline"))]
    t.tick(0)
    waiting = t.state("porch")
    assert (waiting.state, waiting.reason) == (
        "unknown", "waiting for the zone's sources to come online: porch-cam (connection refused)")
    t.health["garage"] = [("garage-cam", InputHealth("garage-cam", "online"))]
    t.tick(29)
    assert t.state("porch").state == "unknown"
    t.tick(1)
    assert t.state("porch").state == "blind"
    assert t.state("porch").reason == "every source of the zone is offline: porch-cam (connection refused)"
    t.health["garage"] = [("garage-cam", InputHealth("garage-cam", "offline"))]  # was online once: blind at once
    t.tick(0.1)
    assert t.state("garage").state == "blind"
