"""Windows (age, count, min interval, newest wins) and the alert lifecycle (new, update, end)."""

from __future__ import annotations

import asyncio

import pytest

from monitor.alerts import AlertManager, AlertSettings
from monitor.assess.verdict import Assessment, Verdict, same_hazard
from monitor.backends import Usage
from monitor.control import ZoneControls
from monitor.windows import LatestSlot, RollingWindow, Window
from tests.support.sources import entry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_is_bounded_by_count_and_age() -> None:
    clock = FakeClock()
    window = RollingWindow("z", max_age_s=60, max_entries=3, min_interval_s=0, clock=clock)
    for ts in (0, 10, 20, 30, 100):
        clock.now += 20
        window.add(entry(f"e{ts}", ts=float(ts)))
    snap = window.snapshot()
    # Count kept 20, 30, 100; age (by arrival: 40, 20 and 0 s ago against 60 s) keeps them all.
    assert [o.ts for o in snap.observations] == [20.0, 30.0, 100.0]
    clock.now += 45
    assert [o.ts for o in window.snapshot().observations] == [100.0]


def test_frames_and_log_entries_are_capped_separately() -> None:
    from sensors.types import Frame

    window = RollingWindow("z", max_age_s=600, max_entries=2, max_frames=3, min_interval_s=0)
    window.add(entry("a", ts=1.0))
    window.add(entry("b", ts=2.0))
    for ts in range(3, 13):
        window.add(Frame(source="cam", ts=float(ts), jpeg=b"", width=1, height=1))
    window.add(entry("c", ts=13.0))
    snap = window.snapshot()
    assert [o.text for o in snap.entries] == ["b", "c"]
    assert [f.ts for f in snap.frames] == [10.0, 11.0, 12.0]


def test_window_keeps_arrival_order_across_sources() -> None:
    """Arrival order, whatever the sources' clocks say: a lagging source is not placed behind newer entries
    (where the count bound would push it out unseen); each keeps its sensor time as data."""
    window = RollingWindow("z", max_age_s=600, max_entries=10, min_interval_s=0)
    window.add(entry("b", ts=2.0, source="s1"))
    window.add(entry("a", ts=1.0, source="s2"))
    window.add(entry("c", ts=3.0, source="s1"))
    snap = window.snapshot()
    assert [o.text for o in snap.observations] == ["b", "a", "c"]
    assert [o.ts for o in snap.observations] == [2.0, 1.0, 3.0]


def test_window_due_needs_new_entries_and_min_interval() -> None:
    clock = FakeClock()
    window = RollingWindow("z", max_age_s=600, max_entries=10, min_interval_s=5, clock=clock)
    assert not window.due()
    window.add(entry("a", ts=1.0))
    assert window.due()
    snap = window.snapshot()
    assert snap.new_count == 1
    window.add(entry("b", ts=2.0))
    assert not window.due() and window.seconds_until_due() == pytest.approx(5.0)
    clock.now += 5
    assert window.due()


async def test_latest_slot_newest_window_wins_and_drops_are_counted() -> None:
    slot = LatestSlot()

    def win(zone: str, n: int) -> Window:
        return Window(id=f"{zone}-{n}", zone=zone, observations=(), new_count=0, created_at=0.0)

    assert await slot.put(win("a", 1)) is None
    assert await slot.put(win("b", 1)) is None
    replaced = await slot.put(win("a", 2))
    assert replaced is not None and replaced.id == "a-1"
    assert slot.dropped == 1
    first, second = await slot.get(), await slot.get()
    assert first is not None and second is not None
    assert (first.id, second.id) == ("a-2", "b-1")
    await slot.close()
    assert await asyncio.wait_for(slot.get(), 1) is None


def verdict(hazard: str, *, danger: bool = True, severity: str = "warning", confidence: float = 0.8) -> Verdict:
    assessment = Assessment.model_validate({"danger": danger, "severity": severity, "hazard": hazard,
                                            "reason": "r", "advice": "a", "confidence": confidence})
    return Verdict(assessment=assessment, model="m", usage=Usage())


def window(zone: str = "kitchen") -> Window:
    return Window(id=f"{zone}-1", zone=zone, observations=(entry("x", source=zone),), new_count=1, created_at=0.0)


def test_alert_new_update_end_with_ttl() -> None:
    clock = FakeClock()
    manager = AlertManager(AlertSettings(dedup_ttl_s=60), clock=clock)
    first = manager.decide(window(), verdict("gas leak"))
    assert first is not None and first.type == "new"
    clock.now += 30
    second = manager.decide(window(), verdict("Gas leak!", severity="critical"))
    assert second is not None and second.type == "update" and second.alert.id == first.alert.id
    assert second.alert.severity == "critical"
    assert manager.expire() == []
    clock.now += 60
    ended = manager.expire()
    assert [e.type for e in ended] == ["end"] and ended[0].alert.id == first.alert.id
    third = manager.decide(window(), verdict("gas leak"))
    assert third is not None and third.type == "new" and third.alert.id != first.alert.id


def test_alert_dedup_is_per_zone() -> None:
    manager = AlertManager(AlertSettings())
    a = manager.decide(window("kitchen"), verdict("fire"))
    b = manager.decide(window("garage"), verdict("fire"))
    assert a is not None and b is not None and a.alert.id != b.alert.id


def test_thresholds_and_sensitivity() -> None:
    controls = ZoneControls()
    manager = AlertManager(AlertSettings(min_severity="warning", min_confidence=0.5), controls=controls)
    assert manager.decide(window(), verdict("x", danger=False)) is None
    assert manager.decide(window(), verdict("x", severity="info")) is None
    assert manager.decide(window(), verdict("x", confidence=0.3)) is None
    controls.set_sensitivity("kitchen", 1.0)  # most sensitive: any danger verdict warns
    assert manager.decide(window(), verdict("x", confidence=0.3)) is not None
    with pytest.raises(ValueError, match="outside"):
        controls.set_sensitivity("kitchen", 1.5)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("hot oil fire", "Hot-oil fire", True), ("fire", "kitchen fire", True),
     ("slippery floor", "hot oil fire", False), ("", "", True), ("", "fire", False)],
)
def test_same_hazard(a: str, b: str, same: bool) -> None:
    assert same_hazard(a, b) is same
