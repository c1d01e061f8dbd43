"""Alerts do not end while their zone is blind, every end says what happened, and people read zone names.

In-process, on one fake clock: an `AlertManager` asking a `ZoneStatus` (fed like the pipeline feeds it)
whether a zone can be assessed, as the daemon wires them.
"""

from __future__ import annotations

import io
import json
from typing import Any

from structlog.testing import capture_logs

from monitor.alerts import AlertEvent, AlertManager, AlertSettings
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import Usage
from monitor.control import ZoneControls
from monitor.escalation.contract import escalation_messages
from monitor.escalation.engine import Escalator
from monitor.escalation.settings import Ladder
from monitor.observer import Settled
from monitor.sinks.local import StdoutSink
from tests.test_escalation import settings
from tests.test_zone_status import Tracker

TTL = 60.0
ZONE = "kitchen"


class Home:
    """A zone tracker and an alert manager on one clock, fed the way the pipeline feeds them."""

    def __init__(self, **names: str) -> None:
        self.controls = ZoneControls()
        self.zones = Tracker(ZONE, "garage", blind_after_s=30, controls=self.controls)
        self.clock = self.zones.clock
        self.alerts = AlertManager(AlertSettings(dedup_ttl_s=TTL), controls=self.controls, clock=self.clock,
                                   unseen=self.zones.status.unseen, zone_names=names)

    def assess(self, *, danger: bool, zone: str = ZONE, hazard: str = "hot oil fire") -> AlertEvent | None:
        """One window of the zone assessed: the alert decision, then the tracker, as the pipeline orders them."""
        self.zones.observe(zone)
        window = self.zones.window(zone)
        assessment = Assessment.model_validate({
            "danger": danger, "severity": "critical" if danger else "info", "hazard": hazard if danger else "",
            "reason": "Smoke." if danger else "Nothing.", "advice": "Turn it off." if danger else "",
            "confidence": 0.9})
        verdict = Verdict(assessment=assessment, model="m", usage=Usage())
        event = self.alerts.decide(window, verdict)
        self.zones.status.window_settled(Settled(window, verdict, None, event, 0.1))
        return event

    def fail(self, zone: str = ZONE) -> None:
        """One window of the zone whose assessment failed (the model server answering 500)."""
        self.zones.observe(zone)
        self.zones.fail(self.zones.window(zone))

    def expire(self, seconds: float) -> list[AlertEvent]:
        self.clock.now += seconds
        events = self.alerts.expire()
        for event in events:
            self.zones.status.alert_event(event)
        self.zones.status.refresh()
        return events


def test_an_alert_is_held_open_while_its_zone_cannot_be_assessed_and_continues_after() -> None:
    """Seen: an alert ended "not confirmed" while the model was failing; the ladder then started again."""
    home = Home()
    opened = home.assess(danger=True)
    assert opened is not None
    for _ in range(10):  # the model fails for 10 minutes, far past dedup_ttl_s
        home.fail()
        assert home.expire(60) == []
    held = home.alerts.open[opened.alert.id]
    assert held.unconfirmed_since == opened.alert.updated_at
    assert held.unconfirmed_reason is not None and "transient: model server answered HTTP 500" in \
        held.unconfirmed_reason
    assert home.zones.state().state == "blind" and home.zones.state().alert is not None  # blind, hazard kept

    again = home.assess(danger=True)  # the model answers again and still sees it: the same alert goes on
    assert again is not None and (again.type, again.alert.id) == ("update", opened.alert.id)
    assert again.alert.unconfirmed_since is None and again.alert.unconfirmed_reason is None


def test_a_held_alert_ends_by_the_ttl_counted_from_the_zones_first_assessment_after_the_outage() -> None:
    home = Home()
    opened = home.assess(danger=True)
    assert opened is not None
    home.fail()
    assert home.expire(300) == []  # blind: held
    home.assess(danger=False)  # assessed again, clear
    assert home.expire(TTL - 1) == []  # the TTL counts from that assessment, not from the last confirmation
    [end] = home.expire(1)
    assert (end.alert.id, end.end_cause) == (opened.alert.id, "assessed_clear")
    assert end.end_reason is not None and end.end_reason.startswith("assessed clear:")
    assert "held open while the zone could not be assessed" in end.end_reason


def test_each_end_says_what_happened() -> None:
    """Seen: an alert that expired for lack of confirmation was shown as "the last assessment found no hazard"."""
    home = Home()
    quiet = home.assess(danger=True)  # then nothing more happens in the zone
    [end] = home.expire(TTL)
    assert quiet is not None and end.alert.id == quiet.alert.id and end.end_cause == "not_confirmed"
    assert end.end_reason == ("expired unconfirmed after 60 s (alerts.dedup_ttl_s = 60 s): no assessment of the "
                              "zone finished since")
    state = home.zones.state()
    assert state.state == "clear" and state.reason != "the last assessment found no hazard"
    assert state.reason == f"no alert open: 'hot oil fire' ended ({end.end_reason})"
    home.assess(danger=False)
    assert home.zones.state().reason == "the last assessment found no hazard"  # now it is true

    home.assess(danger=True)
    home.clock.now += 10
    home.assess(danger=False)
    [cleared] = home.expire(TTL)
    assert cleared.end_cause == "assessed_clear"
    assert cleared.end_reason == ("assessed clear: the zone's assessments in the 70 s since the last confirmation "
                                  "did not find it (alerts.dedup_ttl_s = 60 s)")

    home.assess(danger=True)
    home.controls.set_monitoring(ZONE, False)
    [off] = home.expire(TTL)
    assert off.end_cause == "monitoring_off" and off.end_reason is not None
    assert off.end_reason.startswith("zone switched off:")


def test_people_read_the_zone_s_display_name_and_payloads_carry_both() -> None:
    """Seen: escalation texts said "garage: fall from ladder" for the device Home Assistant calls "Workshop"."""
    home = Home(garage="Workshop")
    engine = Escalator(settings(critical=Ladder(escalate_after_s=10, caregivers_from_level=1)),
                       alerts=home.alerts, clock=home.clock)
    opened = home.assess(danger=True, zone="garage", hazard="fall from ladder")
    assert opened is not None
    engine.annotate(opened)
    home.clock.now += 10
    engine.annotate(home.assess(danger=True, zone="garage", hazard="fall from ladder"))  # type: ignore[arg-type]
    [escalation] = engine.tick()
    body = escalation.to_json()
    assert (body["zone"], body["zone_name"]) == ("garage", "Workshop")
    [(_topic, payload, _id)] = escalation_messages("pm", escalation)
    caregivers: dict[str, Any] = json.loads(payload)
    assert (caregivers["zone"], caregivers["zone_name"]) == ("garage", "Workshop")
    assert caregivers["text"].startswith("Workshop: fall from ladder for 10 s")
    printed = StdoutSink(stream=io.StringIO(), color=False).render(escalation).splitlines()[0]
    assert printed.endswith("escalate Workshop: fall from ladder")



def test_a_broken_blindness_check_never_stops_expiry() -> None:
    """The check asks the zone tracker and the sources' health: if it raises, the plain TTL applies, logged."""
    home = Home()

    def broken(zone: str) -> str | None:
        raise RuntimeError("sources unavailable")

    home.alerts.unseen = broken
    opened = home.assess(danger=True)
    with capture_logs() as logs:
        [end] = home.expire(TTL)
    assert opened is not None and end.alert.id == opened.alert.id
    assert any(e["event"].startswith("could not tell whether a zone can be assessed") for e in logs)
