"""The escalation and acknowledgement rules, one by one, with a controllable clock (no I/O, no asyncio)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from monitor.alerts import AlertEvent, AlertManager, AlertSettings
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import Usage
from monitor.escalation.engine import AckRequest, Escalator
from monitor.escalation.settings import EscalationSettings, Ladder, ZoneEscalation, in_periods, parse_period
from monitor.windows import Window
from monitor.zones import ZoneSettings
from tests.support.sources import entry

NOON = datetime(2026, 3, 2, 12, 0).timestamp()  # local time: quiet hours are local
LATE = datetime(2026, 3, 2, 23, 30).timestamp()


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(**changes: Any) -> EscalationSettings:
    base: dict[str, Any] = {
        "enabled": True, "confirmed_within_s": 30.0, "max_per_alert": 3, "max_per_hour": 10,
        "critical": Ladder(escalate_after_s=60, repeat_after_s=40, caregivers_from_level=2),
        "warning": Ladder(escalate_after_s=120),
    }
    return EscalationSettings(**(base | changes))


class Lifecycle:
    """An AlertManager and an Escalator on one fake clock, fed the way the pipeline feeds them."""

    def __init__(self, escalation: EscalationSettings | None = None, zones: tuple[ZoneSettings, ...] = (),
                 now: float = NOON) -> None:
        self.clock = Clock(now)
        self.alerts = AlertManager(AlertSettings(dedup_ttl_s=600), clock=self.clock)
        self.engine = Escalator(escalation or settings(), zones=zones, alerts=self.alerts, clock=self.clock)

    def warn(self, severity: str = "critical", zone: str = "kitchen", hazard: str = "hot oil fire") -> AlertEvent:
        assessment = Assessment.model_validate({
            "danger": True, "severity": severity, "hazard": hazard, "reason": "Smoke above the pan.",
            "advice": "Turn off the burner.", "confidence": 0.9})
        window = Window(id=f"{zone}-w", zone=zone, observations=(entry("x", source=zone),), new_count=1,
                        created_at=self.clock.now)
        event = self.alerts.decide(window, Verdict(assessment=assessment, model="m", usage=Usage()))
        assert event is not None
        return self.engine.annotate(event)

    def advance(self, seconds: float) -> list[AlertEvent]:
        self.clock.now += seconds
        return self.engine.tick()

    def ack(self, **request: Any) -> Any:
        return self.engine.acknowledge(AckRequest(**({"alert_id": None, "zone": None, "by": "sam", "via": "cli"}
                                                     | request)))


def test_level_1_comes_escalate_after_s_after_the_first_warning_when_confirmed() -> None:
    """No escalation before `escalate_after_s`; at it, with a fresh update, level 1 is published."""
    life = Lifecycle()
    first = life.warn()
    assert life.advance(50) == []
    life.warn()  # the hazard is seen again: an update after the warning
    assert life.advance(9) == []  # 59 s: not yet due
    events = life.advance(1)
    assert [(e.type, e.alert.escalation_level) for e in events] == [("escalate", 1)]
    escalated = events[0].alert
    assert escalated.id == first.alert.id and escalated.escalated_at == life.clock.now
    assert escalated.caregivers_notified is False  # level 1 is for the person
    assert life.alerts.open[escalated.id].escalation_level == 1  # the open alert carries it
    assert life.warn().alert.escalation_level == 1  # and so does the next update
    assert life.engine.counters["escalations:person"] == 1


def test_an_unconfirmed_hazard_waits_and_escalates_when_an_update_confirms_it() -> None:
    """"Still confirmed" = an update after the previous warning, at most confirmed_within_s old."""
    life = Lifecycle()
    life.warn()
    assert life.advance(120) == []  # due since 60 s, but nothing confirmed the hazard after the warning
    life.warn()  # an update at 120 s
    life.clock.now += 31
    assert life.engine.tick() == []  # that update is now 31 s old: stale (confirmed_within_s = 30)
    life.warn()
    events = life.advance(1)
    assert [e.alert.escalation_level for e in events] == [1]


def test_the_first_escalation_raises_the_severity_one_step_and_updates_keep_it() -> None:
    """warning -> critical at level 1; a later update at `warning` does not lower it back."""
    life = Lifecycle()
    life.warn("warning")
    life.clock.now += 110
    life.warn("warning")
    (escalation,) = life.advance(10)
    assert escalation.alert.severity == "critical"
    assert life.warn("warning").alert.severity == "critical"

    calm = Lifecycle(settings(raise_severity=False))
    calm.warn("warning")
    calm.clock.now += 110
    calm.warn("warning")
    (kept,) = calm.advance(10)
    assert kept.alert.severity == "warning"


def test_repeats_then_caregivers_with_levels_and_unique_message_ids() -> None:
    """Level n+1 comes repeat_after_s after level n; from caregivers_from_level on, caregivers are told."""
    life = Lifecycle()
    life.warn()
    events: list[AlertEvent] = []
    for _ in range(30):  # the hazard persists: an update every 10 s for 5 minutes
        life.clock.now += 10
        life.warn()
        events += life.engine.tick()
    assert [(e.alert.escalation_level, round(e.at - NOON)) for e in events] == [(1, 60), (2, 100), (3, 140)]
    assert [e.alert.caregivers_notified for e in events] == [False, True, True]
    assert len({e.message_id for e in events}) == 3
    assert events[1].message_id.endswith(":escalate:2")
    assert life.engine.counters["escalations:caregivers"] == 2


def test_max_per_alert_stops_escalation_and_is_recorded_in_the_events() -> None:
    """The last allowed escalation says which limit ends the ladder; later updates and the end say it too."""
    life = Lifecycle(settings(max_per_alert=2))
    life.warn()
    events: list[AlertEvent] = []
    for _ in range(40):
        life.clock.now += 10
        life.warn()
        events += life.engine.tick()
    assert [e.alert.escalation_level for e in events] == [1, 2]
    assert events[0].alert.escalation_limit is None
    assert events[1].alert.escalation_limit is not None and "max_per_alert" in events[1].alert.escalation_limit
    assert "max_per_alert" in (life.warn().alert.escalation_limit or "")
    life.clock.now += 601
    (end,) = life.alerts.expire()
    assert end.alert.escalation_level == 2 and "max_per_alert" in (end.to_json()["escalation_limit"] or "")
    assert life.engine.counters["limited:max_per_alert"] == 1


def test_max_per_hour_skips_repeats_to_the_person_records_it_and_repeats_again_after_the_hour() -> None:
    """Across alerts, at most max_per_hour repeats to the person in any rolling hour; past it the repeat is
    skipped (no event, recorded in the alert) and the ladder climbs on towards the caregivers."""
    life = Lifecycle(settings(max_per_hour=1, confirmed_within_s=3600.0,
                              critical=Ladder(escalate_after_s=60, repeat_after_s=40, caregivers_from_level=3)))
    life.warn(hazard="hot oil fire")
    life.warn(hazard="knife on the floor", zone="hall")
    life.clock.now += 1
    life.warn(hazard="hot oil fire")
    life.warn(hazard="knife on the floor", zone="hall")
    events = life.advance(60)
    assert len(events) == 1  # the budget allowed one
    skipped = next(a for a in life.alerts.open.values() if a.id != events[0].alert.id)
    assert skipped.escalation_level == 1 and "max_per_hour" in (skipped.escalation_limit or "")
    assert life.engine.counters["limited:max_per_hour"] == 1
    life.clock.now = events[0].at + 3600  # the allowed repeat is an hour old: budget back
    life.warn(hazard="knife on the floor", zone="hall")
    resumed = life.engine.tick()
    assert [(e.alert.id, e.alert.escalation_level) for e in resumed] == [(skipped.id, 2)]
    assert resumed[0].alert.escalation_limit is None


def test_acknowledgement_stops_escalation_but_not_updates_and_the_alert_still_ends() -> None:
    """An ack event carries who and when; updates go on carrying it; no escalation follows; end is normal."""
    life = Lifecycle()
    first = life.warn()
    life.clock.now += 5
    result = life.ack(alert_id=first.alert.id, by="sam")
    assert result.status == "acknowledged" and [e.type for e in result.events] == ["ack"]
    ack = result.events[0]
    assert ack.alert.acknowledged_by == "sam" and ack.alert.acknowledged_at == NOON + 5
    assert ack.message_id == f"{first.alert.id}:ack:0"
    assert {"acknowledged_at", "acknowledged_by", "escalation_level"} <= set(ack.to_json())
    escalations = []
    for _ in range(30):
        life.clock.now += 10
        update = life.warn()
        assert update.type == "update" and update.alert.acknowledged_by == "sam"
        escalations += life.engine.tick()
    assert escalations == []
    life.clock.now += 601
    (end,) = life.alerts.expire()
    assert end.type == "end" and end.alert.acknowledged_at == NOON + 5
    assert life.engine.counters["acknowledged:cli"] == 1


def test_acknowledging_a_zone_takes_every_open_alert_there_once() -> None:
    """--zone acknowledges all of a zone's open alerts; again is `already_acknowledged`; elsewhere `not_found`."""
    life = Lifecycle()
    a = life.warn(hazard="hot oil fire")
    b = life.warn(hazard="knife on the floor")
    other = life.warn(zone="garage", hazard="fall from ladder")
    result = life.ack(zone="kitchen")
    assert result.status == "acknowledged" and set(result.alert_ids) == {a.alert.id, b.alert.id}
    assert life.alerts.open[other.alert.id].acknowledged_at is None
    assert life.ack(zone="kitchen").status == "already_acknowledged"
    assert life.ack(zone="hall").status == "not_found"
    assert life.ack(alert_id=other.alert.id, zone="kitchen").status == "not_found"  # not in that zone
    assert life.ack(alert_id="0123456789abcdef").status == "not_found"


def test_each_severity_has_its_ladder_and_info_never_escalates_by_default() -> None:
    """critical escalates after 60 s, warning after 120 s, info (no escalate_after_s) never."""
    life = Lifecycle()
    critical = life.warn("critical", hazard="hot oil fire")
    warning = life.warn("warning", hazard="wet floor")
    info = life.warn("info", hazard="knife left out")
    seen: dict[str, list[int]] = {}
    for _ in range(24):
        life.clock.now += 10
        for severity, hazard in (("critical", "hot oil fire"), ("warning", "wet floor"), ("info", "knife left out")):
            life.warn(severity, hazard=hazard)
        for event in life.engine.tick():
            seen.setdefault(event.alert.id, []).append(round(event.at - NOON))
    assert seen[critical.alert.id][0] == 60
    assert seen[warning.alert.id][0] == 120
    assert info.alert.id not in seen


def test_a_zone_ladder_replaces_the_global_one_and_a_zone_can_switch_escalation() -> None:
    """[zones.escalation] overrides: its own ladder, enabled=false in one zone, enabled=true with global off."""
    zones = (
        ZoneSettings(id="kitchen", escalation=ZoneEscalation(critical=Ladder(escalate_after_s=10))),
        ZoneSettings(id="garage", escalation=ZoneEscalation(enabled=False)),
    )
    life = Lifecycle(zones=zones)
    kitchen, garage = life.warn(zone="kitchen"), life.warn(zone="garage")
    life.clock.now += 5
    life.warn(zone="kitchen")
    life.warn(zone="garage")
    assert [e.alert.id for e in life.advance(5)] == [kitchen.alert.id]
    for _ in range(20):
        life.clock.now += 10
        life.warn(zone="garage")
        assert garage.alert.id not in [e.alert.id for e in life.engine.tick()]

    only_hall = Lifecycle(settings(enabled=False), zones=(ZoneSettings(id="hall", escalation=ZoneEscalation(
        enabled=True)),))
    only_hall.warn(zone="hall")
    only_hall.warn(zone="kitchen")
    only_hall.clock.now += 30
    only_hall.warn(zone="hall")
    only_hall.warn(zone="kitchen")
    assert [e.alert.zone for e in only_hall.advance(30)] == ["hall"]


def test_quiet_hours_silence_info_only() -> None:
    """An info alert in quiet hours is `quiet` and never escalates; warning and critical never are quiet."""
    zones = (ZoneSettings(id="kitchen", quiet_hours=["22:00-07:00"]),)
    life = Lifecycle(settings(info=Ladder(escalate_after_s=60)), zones=zones, now=LATE)
    info = life.warn("info", hazard="knife left out")
    critical = life.warn("critical", hazard="hot oil fire")
    assert info.alert.quiet is True and info.to_json()["quiet"] is True
    assert critical.alert.quiet is False
    assert life.alerts.open[info.alert.id].quiet is True
    escalated = []
    for _ in range(12):
        life.clock.now += 10
        life.warn("info", hazard="knife left out")
        life.warn("critical", hazard="hot oil fire")
        escalated += [e.alert.id for e in life.engine.tick()]
    assert info.alert.id not in escalated and critical.alert.id in escalated
    assert life.engine.counters["quiet:info"] >= 13

    daytime = Lifecycle(settings(info=Ladder(escalate_after_s=60)), zones=zones, now=NOON)
    assert daytime.warn("info", hazard="knife left out").alert.quiet is False


def test_an_ended_alert_never_escalates() -> None:
    """Once the alert ended (not confirmed within dedup_ttl_s), its due escalation is dropped."""
    life = Lifecycle()
    life.warn()
    life.clock.now += 10
    life.warn()
    life.clock.now += 601
    ended = [life.engine.annotate(e) for e in life.alerts.expire()]
    assert [e.type for e in ended] == ["end"]
    assert life.engine.tick() == []


def test_escalation_is_off_by_default() -> None:
    """Without `[escalation] enabled = true` the alert stream is what it always was: no escalate events."""
    life = Lifecycle(EscalationSettings())
    life.warn()
    for _ in range(60):
        life.clock.now += 10
        life.warn()
        assert life.engine.tick() == []


@pytest.mark.parametrize(("period", "minute_inside", "minute_outside"), [
    ("22:00-07:00", (23, 59), (7, 0)), ("22:00-07:00", (0, 0), (21, 59)),
    ("13:00-14:30", (14, 29), (14, 30)), ("00:00-24:00", (23, 59), None),
])
def test_quiet_periods_include_the_start_exclude_the_end_and_may_cross_midnight(
        period: str, minute_inside: tuple[int, int], minute_outside: tuple[int, int] | None) -> None:
    """Periods are local times of day, [start, end)."""
    day = datetime(2026, 3, 2)
    assert in_periods([period], day.replace(hour=minute_inside[0], minute=minute_inside[1]))
    if minute_outside is not None:
        assert not in_periods([period], day.replace(hour=minute_outside[0], minute=minute_outside[1]))


@pytest.mark.parametrize(("text", "reason"), [
    ("22-07", "HH:MM-HH:MM"), ("25:00-07:00", "not a time of day"), ("07:00-07:00", "starts where it ends"),
    ("24:00-07:00", "24:00 only as an end"), ("07:60-08:00", "not a time of day"),
])
def test_a_bad_quiet_period_says_how_to_write_it(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_period(text)


def test_a_reload_applies_new_ladders_to_alerts_in_progress_without_resetting_them() -> None:
    """configure() (SIGHUP) keeps each open alert's level and timing; the new ladder decides the next step."""
    life = Lifecycle()
    life.warn()
    life.clock.now += 30
    life.warn()
    (first,) = life.advance(30)
    assert first.alert.escalation_level == 1
    life.engine.configure(settings(critical=Ladder(escalate_after_s=60, repeat_after_s=200)))
    life.clock.now += 30
    life.warn()
    assert life.advance(20) == []  # the old repeat_after_s (40 s) has passed, the new one (200 s) has not
    life.engine.configure(settings(enabled=False))
    for _ in range(30):
        life.clock.now += 10
        life.warn()
        assert life.engine.tick() == []


def test_an_alert_the_model_upgrades_before_escalating_follows_the_worse_ladder() -> None:
    """info (never escalates) upgraded to warning by the model: the warning ladder applies, from the first warning."""
    life = Lifecycle()
    first = life.warn("info", hazard="knife left out")
    life.clock.now += 100
    assert life.warn("warning", hazard="knife left out").alert.severity == "warning"
    (escalation,) = life.advance(20)  # 120 s after the first warning: the warning ladder's escalate_after_s
    assert escalation.alert.id == first.alert.id and escalation.alert.escalation_level == 1
