"""State that outlives the process: zone controls and open alerts in the state dir, and corrupt files moved aside."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.alerts import OPEN_ALERTS_FILE, AlertManager, AlertSettings, OpenAlertJournal
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import Usage
from monitor.control import CONTROLS_FILE, ZoneControls
from monitor.core.statefile import JsonStateFile
from monitor.windows import Window
from tests.support.sources import entry


def verdict(hazard: str) -> Verdict:
    assessment = Assessment.model_validate({"danger": True, "severity": "critical", "hazard": hazard,
                                            "reason": "Smoking oil.", "advice": "Turn it off.", "confidence": 0.9})
    return Verdict(assessment=assessment, model="m", usage=Usage())


def window(zone: str = "kitchen") -> Window:
    return Window(id=f"{zone}-1", zone=zone, observations=(entry("x", source=zone),), new_count=1, created_at=0.0)


def aside(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f"{name}.corrupt-*"))


def test_controls_come_back_after_a_restart(tmp_path: Path) -> None:
    """Today the HA slider silently jumped back to 0.5 and a switched-off zone came back on."""
    first = ZoneControls.persistent(tmp_path)
    first.set_monitoring("garage", False)
    first.set_sensitivity("kitchen", 0.8)
    second = ZoneControls.persistent(tmp_path)
    assert second.is_monitoring("garage") is False and second.is_monitoring("kitchen") is True
    assert second.get_sensitivity("kitchen") == 0.8 and second.get_sensitivity("garage") == 0.5
    mode = stat.S_IMODE((tmp_path / CONTROLS_FILE).stat().st_mode)
    assert mode == 0o600


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'{"zones": {"kitchen": {"monitoring": "yes"}}}',
                                     b'{"zones": {"kitchen": {"monitoring": true, "sensitivity": 7}}}'])
def test_a_corrupt_controls_file_is_moved_aside_and_the_monitor_starts_fresh(tmp_path: Path, content: bytes) -> None:
    (tmp_path / CONTROLS_FILE).write_bytes(content)
    with capture_logs() as logs:
        controls = ZoneControls.persistent(tmp_path)
    assert controls.is_monitoring("kitchen") and controls.get_sensitivity("kitchen") == 0.5
    [moved] = aside(tmp_path, CONTROLS_FILE)
    assert moved.read_bytes() == content and not (tmp_path / CONTROLS_FILE).exists()
    [warning] = [e for e in logs if e["event"] == "controls file unusable; moved aside, starting fresh"]
    assert warning["path"] == str(tmp_path / CONTROLS_FILE) and warning["moved_to"] == str(moved)
    controls.set_monitoring("kitchen", False)  # and the fresh file works
    assert ZoneControls.persistent(tmp_path).is_monitoring("kitchen") is False


def test_a_folder_in_place_of_the_controls_file_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / CONTROLS_FILE).mkdir()
    controls = ZoneControls.persistent(tmp_path)
    assert controls.is_monitoring("kitchen")
    assert len(aside(tmp_path, CONTROLS_FILE)) == 1
    controls.set_sensitivity("kitchen", 0.2)
    assert ZoneControls.persistent(tmp_path).get_sensitivity("kitchen") == 0.2


def test_open_alerts_are_journaled_and_restored_held_after_a_restart(tmp_path: Path) -> None:
    clock = [1000.0]
    journal = OpenAlertJournal.in_state_dir(tmp_path)
    first = AlertManager(AlertSettings(dedup_ttl_s=60), journal=journal, clock=lambda: clock[0])
    new = first.decide(window(), verdict("hot oil fire"))
    update = first.decide(window(), verdict("hot oil fire"))
    other = first.decide(window("garage"), verdict("ladder fall"))
    assert new is not None and update is not None and other is not None
    stored = json.loads((tmp_path / OPEN_ALERTS_FILE).read_text())["alerts"]
    assert {a["id"]: a["updates"] for a in stored} == {new.alert.id: 1, other.alert.id: 0}

    # The process dies here. The next run takes both up again, held: nothing confirmed them since.
    clock[0] += 5
    second = AlertManager(AlertSettings(dedup_ttl_s=60), journal=OpenAlertJournal.in_state_dir(tmp_path),
                          clock=lambda: clock[0])
    assert second.restore_previous_run() == []
    assert set(second.open) == {new.alert.id, other.alert.id} and second.confirmed() == []
    again = second.decide(window(), verdict("hot oil fire"))
    assert again is not None and (again.type, again.alert.id, again.alert.updates) == ("update", new.alert.id, 2)
    clock[0] += 60
    ends = second.expire()
    assert [(e.alert.id, e.end_cause) for e in ends] == [(new.alert.id, "not_confirmed"), (other.alert.id, "restart")]
    body = ends[1].to_json()
    assert body["reason"] == "monitor restarted" and body["end_reason"].startswith("monitor restarted at ")
    assert body["hazard"] == "ladder fall" and body["message_id"] == f"{other.alert.id}:end:1"
    assert AlertManager(AlertSettings(), journal=OpenAlertJournal.in_state_dir(tmp_path)).restore_previous_run() == []


def test_alerts_confirmed_longer_than_the_ttl_before_a_restart_end_at_once(tmp_path: Path) -> None:
    clock = [1000.0]
    first = AlertManager(AlertSettings(dedup_ttl_s=60), journal=OpenAlertJournal.in_state_dir(tmp_path),
                         clock=lambda: clock[0])
    new = first.decide(window(), verdict("hot oil fire"))
    assert new is not None
    clock[0] += 61
    second = AlertManager(AlertSettings(dedup_ttl_s=60), journal=OpenAlertJournal.in_state_dir(tmp_path),
                          clock=lambda: clock[0])
    [end] = second.restore_previous_run()
    assert (end.type, end.alert.id, end.end_cause) == ("end", new.alert.id, "restart")
    assert end.to_json()["reason"] == "monitor restarted" and second.open == {}
    # The journal keeps it until the end was published and the service persists.
    third = AlertManager(AlertSettings(), journal=OpenAlertJournal.in_state_dir(tmp_path))
    assert len(third.restore_previous_run()) == 1
    second.persist()
    assert AlertManager(AlertSettings(), journal=OpenAlertJournal.in_state_dir(tmp_path)).restore_previous_run() == []


def test_an_alert_that_ended_normally_is_not_ended_again(tmp_path: Path) -> None:
    clock = [1000.0]
    manager = AlertManager(AlertSettings(dedup_ttl_s=60), journal=OpenAlertJournal.in_state_dir(tmp_path),
                           clock=lambda: clock[0])
    assert manager.decide(window(), verdict("hot oil fire")) is not None
    clock[0] += 61
    [ended] = manager.expire()
    assert ended.end_cause == "not_confirmed"
    assert AlertManager(AlertSettings(), journal=OpenAlertJournal.in_state_dir(tmp_path)).restore_previous_run() == []


@pytest.mark.parametrize("content", [b"\x00\x01garbage", b'{"alerts": [{"id": "x"}]}', b'{"alerts": 3}'])
def test_a_corrupt_open_alerts_file_is_moved_aside(tmp_path: Path, content: bytes) -> None:
    (tmp_path / OPEN_ALERTS_FILE).write_bytes(content)
    with capture_logs() as logs:
        manager = AlertManager(AlertSettings(), journal=OpenAlertJournal.in_state_dir(tmp_path))
        assert manager.restore_previous_run() == []
    assert len(aside(tmp_path, OPEN_ALERTS_FILE)) == 1
    assert any(e["event"] == "open alerts file unusable; moved aside, starting fresh" for e in logs)


async def test_saves_from_the_event_loop_run_in_a_thread_and_the_newest_wins(tmp_path: Path) -> None:
    state = JsonStateFile(tmp_path / "x.json", what="test file")
    for n in range(50):
        state.save({"n": n})
    await state.flush()
    assert state.load() == {"n": 49}


def test_a_write_that_fails_is_logged_and_counted_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    state = JsonStateFile(blocker / "x.json", what="test file")
    with capture_logs() as logs:
        state.save({"n": 1})
    assert state.write_failures == 1
    assert any(e["event"] == "test file could not be written; the previous content stays" for e in logs)
