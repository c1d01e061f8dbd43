"""Escalation state that survives a restart, and caregivers that repeats to the person can never starve.

In-process, on a fake clock: an `AlertManager` with its journal and an `Escalator` with its state file in
a temporary state dir; a "crash" is a second pair built on the same dir without closing the first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monitor.alerts import AlertEvent, AlertManager, AlertSettings, OpenAlertJournal
from monitor.escalation.engine import ESCALATION_STATE_FILE, Escalator
from monitor.escalation.settings import EscalationSettings, Ladder
from tests.test_escalation import NOON, Clock, Lifecycle, settings

TTL = 600.0


class Durable(Lifecycle):
    """The test_escalation lifecycle with the daemon's state files in `state_dir`."""

    def __init__(self, state_dir: Path, escalation: EscalationSettings | None = None, now: float = NOON,
                 clock: Clock | None = None) -> None:
        self.clock = clock or Clock(now)
        self.alerts = AlertManager(AlertSettings(dedup_ttl_s=TTL), clock=self.clock,
                                   journal=OpenAlertJournal.in_state_dir(state_dir))
        self.engine = Escalator(escalation or settings(), alerts=self.alerts, clock=self.clock,
                                state=Escalator.state_in(state_dir))

    def restart(self, state_dir: Path, escalation: EscalationSettings | None = None) -> tuple[Durable, list[Any]]:
        """What the daemon does at start: restore the alerts (ends of old ones), then the escalation state."""
        again = Durable(state_dir, escalation, clock=self.clock)
        ends = again.alerts.restore_previous_run()
        again.engine.restore()
        return again, ends

    def run(self, seconds: float, *, step: float = 10.0, hazards: tuple[tuple[str, str], ...] = (
            ("kitchen", "hot oil fire"),)) -> list[AlertEvent]:
        """The hazards persist: each seen again every `step` seconds; the escalations that came."""
        events: list[AlertEvent] = []
        for _ in range(round(seconds / step)):
            self.clock.now += step
            for zone, hazard in hazards:
                self.warn(zone=zone, hazard=hazard)
            events += self.engine.tick()
        return events


def test_a_restart_at_level_2_continues_the_same_alert_at_its_level(tmp_path: Path) -> None:
    """Seen: SIGKILL at level 2, restart: the re-confirmed hazard started again at level 0 under a new id."""
    life = Durable(tmp_path)
    first = life.warn()
    climbed = life.run(100)  # critical ladder: level 1 at 60 s, level 2 (caregivers) at 100 s
    assert [e.alert.escalation_level for e in climbed] == [1, 2]

    # The process dies here (nothing flushed or closed), and starts again 5 s later.
    life.clock.now += 5
    again, ends = life.restart(tmp_path)
    assert ends == []  # confirmed 5 s ago: held open, not ended
    held = again.alerts.open[first.alert.id]
    assert (held.escalation_level, held.caregivers_notified) == (2, True)
    assert held.unconfirmed_since == NOON + 100 and held.unconfirmed_reason
    assert again.alerts.confirmed() == []  # nobody is shown a hazard the monitor has not seen since

    seen = again.warn()  # the same hazard in the same zone, seen again
    assert (seen.type, seen.alert.id, seen.alert.escalation_level) == ("update", first.alert.id, 2)
    assert seen.alert.unconfirmed_since is None and again.alerts.confirmed() == [seen.alert]
    [level_3] = again.run(40)  # repeat_after_s = 40 after level 2, counted from before the restart
    assert (level_3.alert.id, level_3.alert.escalation_level) == (first.alert.id, 3)
    assert level_3.message_id == f"{first.alert.id}:escalate:3"


def test_an_alert_not_seen_again_after_a_restart_ends_telling_the_level_it_reached(tmp_path: Path) -> None:
    """Seen: the `end` after a restart said level 0 and caregivers_notified false for a level 2 alert."""
    life = Durable(tmp_path)
    first = life.warn()
    life.run(100)
    life.clock.now += 5
    again, _ = life.restart(tmp_path)
    again.clock.now += TTL - 1
    assert again.alerts.expire() == []  # the TTL counts from the restart
    again.clock.now += 1
    [end] = again.alerts.expire()
    body = end.to_json()
    assert (body["id"], body["escalation_level"], body["caregivers_notified"]) == (first.alert.id, 2, True)
    assert body["end_cause"] == "restart" and body["end_reason"].startswith("monitor restarted at ")
    assert "no assessment of the zone finished" in body["end_reason"]


def test_an_alert_older_than_the_ttl_at_restart_ends_at_once_with_its_level(tmp_path: Path) -> None:
    life = Durable(tmp_path)
    first = life.warn()
    life.run(100)
    life.clock.now += TTL + 1  # down longer than dedup_ttl_s
    again, ends = life.restart(tmp_path)
    [end] = ends
    assert (end.alert.id, end.alert.escalation_level, end.alert.caregivers_notified) == (first.alert.id, 2, True)
    assert end.end_cause == "restart" and "more than alerts.dedup_ttl_s" in (end.end_reason or "")
    assert again.alerts.open == {}


def test_the_hourly_budgets_hold_across_a_restart(tmp_path: Path) -> None:
    """Seen: with max_per_hour = 3, 5 escalations within a minute across a restart (the budget reset)."""
    hazards = tuple((zone, "hot oil fire") for zone in ("kitchen", "hall", "garage", "attic", "cellar"))
    escalation = settings(max_per_hour=3, caregivers_max_per_hour=50,
                          critical=Ladder(escalate_after_s=60, caregivers_from_level=3))
    life = Durable(tmp_path, escalation)
    for zone, hazard in hazards[:3]:
        life.warn(zone=zone, hazard=hazard)
    before = life.run(60, hazards=hazards[:3])
    assert [e.alert.escalation_level for e in before] == [1, 1, 1]  # the hour's three repeats

    life.clock.now += 5
    again, _ = life.restart(tmp_path, escalation)
    for zone, hazard in hazards[3:]:
        again.warn(zone=zone, hazard=hazard)
    after = again.run(60, hazards=hazards)
    assert [e for e in after if not e.alert.caregivers_notified] == []  # no repeat to the person: budget used
    skipped = [a for a in again.alerts.open.values() if a.zone in ("attic", "cellar")]
    assert [a.escalation_level for a in skipped] == [1, 1]  # the ladder still climbs, silently
    assert all("max_per_hour" in (a.escalation_limit or "") for a in skipped)
    stored = json.loads((tmp_path / ESCALATION_STATE_FILE).read_text())
    assert len(stored["person"]) == 3


def test_repeats_to_the_person_never_use_up_the_caregivers_budget() -> None:
    """Seen: 30 zones in critical hazard, max_per_hour = 10: 0 caregiver notifications (level 1 used the hour)."""
    hazards = tuple((f"zone{n:02d}", "fire") for n in range(30))
    life = Lifecycle(settings(max_per_hour=10, confirmed_within_s=30.0))
    for zone, hazard in hazards:
        life.warn(zone=zone, hazard=hazard)
    events: list[AlertEvent] = []
    for _ in range(30):  # 300 s, every hazard seen again every 10 s
        life.clock.now += 10
        for zone, hazard in hazards:
            life.warn(zone=zone, hazard=hazard)
        events += life.engine.tick()
    person = [e for e in events if not e.alert.caregivers_notified]
    caregivers = [e for e in events if e.alert.caregivers_notified]
    assert len(person) == 10  # the person's limit held
    assert 1 <= len(caregivers) <= 10 + 1  # the caregivers' own budget, and at most one summary
    told = {e.alert.id for e in caregivers} | {a.id for e in caregivers for a in e.summary}
    assert told == set(life.alerts.open)  # every one of the 30 alerts reached a caregiver


STORM = settings(caregivers_max_per_hour=3, max_per_hour=100,
                 critical=Ladder(escalate_after_s=60, caregivers_from_level=1))
STORM_HAZARDS = tuple((zone, "fall") for zone in ("a", "b", "c", "d", "e", "f", "g", "h"))


def test_a_storm_past_the_caregivers_budget_gets_one_summary_naming_every_waiting_alert(tmp_path: Path) -> None:
    life = Durable(tmp_path, STORM)
    for zone, hazard in STORM_HAZARDS:
        life.warn(zone=zone, hazard=hazard)
    events = life.run(60, step=30, hazards=STORM_HAZARDS)
    assert [len(e.summary) for e in events] == [0, 0, 0, 4]  # three, then one summary: a lead and four named
    summary = events[-1]
    named = {summary.alert.zone} | {a.zone for a in summary.summary}
    assert named == {"d", "e", "f", "g", "h"}
    assert "summary of 5 alerts" in (summary.alert.escalation_limit or "")
    body = summary.to_json()
    assert [s["zone"] for s in body["summary"]] == sorted(named - {summary.alert.zone})
    assert all(life.alerts.open[a.id].caregivers_notified for a in summary.summary)
    assert life.engine.counters["escalations:caregivers_summary"] == 1

    # The hour is used: more due caregivers' steps wait (said once each), and a restart does not refill it.
    life.clock.now += 5
    again, _ = life.restart(tmp_path, STORM)
    assert again.run(300, step=30, hazards=STORM_HAZARDS) == []
    assert all("caregivers_max_per_hour" in (a.escalation_limit or "") for a in again.alerts.open.values())
    # After the hour, the budget is back: three and the hour's summary.
    again.clock.now = events[0].at + 3600 - 30
    assert [len(e.summary) for e in again.run(30, step=30, hazards=STORM_HAZARDS)] == [0, 0, 0, 4]


def test_a_corrupt_escalation_state_file_is_moved_aside_and_levels_come_from_the_alerts(tmp_path: Path) -> None:
    life = Durable(tmp_path)
    first = life.warn()
    life.run(100)
    (tmp_path / ESCALATION_STATE_FILE).write_text('{"tracks": 3}')
    life.clock.now += 5
    again, _ = life.restart(tmp_path)
    assert len(list(tmp_path.glob(f"{ESCALATION_STATE_FILE}.corrupt-*"))) == 1
    again.warn()
    [level_3] = again.run(40)
    assert (level_3.alert.id, level_3.alert.escalation_level) == (first.alert.id, 3)


def test_a_restored_alert_does_not_escalate_before_its_hazard_is_seen_again(tmp_path: Path) -> None:
    """Its last confirmation may be recent enough for confirmed_within_s, but the monitor has not seen it since."""
    life = Durable(tmp_path, settings(confirmed_within_s=300.0))
    life.warn()
    life.run(100)  # level 2 at 100 s
    life.clock.now += 5
    life.warn()  # confirmed after level 2, at 105 s; then the crash
    life.clock.now += 1
    again, _ = life.restart(tmp_path, settings(confirmed_within_s=300.0))
    again.clock.now += 40  # level 3 is due (repeat_after_s = 40) and the last confirmation is 41 s old
    assert again.engine.tick() == []
    again.warn()
    [level_3] = again.engine.tick()
    assert level_3.alert.escalation_level == 3


def test_an_acknowledgement_survives_a_restart(tmp_path: Path) -> None:
    """Acknowledged before the crash: after it, the same alert is still acknowledged and never escalates."""
    life = Durable(tmp_path)
    first = life.warn()
    life.run(60)  # level 1
    assert life.ack(alert_id=first.alert.id, by="ann").status == "acknowledged"
    life.clock.now += 5
    again, _ = life.restart(tmp_path)
    seen = again.warn()
    assert (seen.alert.id, seen.alert.acknowledged_by, seen.alert.escalation_level) == (first.alert.id, "ann", 1)
    assert again.run(300) == []
    assert again.ack(alert_id=first.alert.id).status == "already_acknowledged"
