"""The recorded history: the record format, frames only when asked, private files, the audit log in the same
format, retention by age and size, and `monitor history purge` (while records are being appended)."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.history.files import HistoryFiles
from monitor.history.record import RECORD_VERSION, parse_record
from monitor.history.times import utc_day
from tests.support.household import DAY, RECORDED_SCRIPT, START, household_settings, record_household
from tests.support.paths import REPO

# The keys of the audit log before the history: version 1 keeps each of them with its meaning.
AUDIT_KEYS = {"at", "zone", "window", "observations", "frames", "verdict", "raw", "usage", "alert", "error"}


def records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def modes(folder: Path) -> set[tuple[str, int]]:
    """(kind, permission bits) of everything under `folder`, the folder included."""
    found = {("dir", stat.S_IMODE(folder.stat().st_mode))}
    for root, dirs, names in os.walk(folder):
        found |= {("dir", stat.S_IMODE(Path(root, d).stat().st_mode)) for d in dirs}
        found |= {("file", stat.S_IMODE(Path(root, n).stat().st_mode)) for n in names}
    return found


@pytest.fixture(scope="module")
def week_with_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A week of the household recorded with history.record_frames on and the audit log set (once per module)."""
    import asyncio

    root = tmp_path_factory.mktemp("with-frames")
    settings = household_settings(root / "state", RECORDED_SCRIPT, history={"record_frames": True},
                                  service={"audit_log": str(root / "audit.jsonl")})
    asyncio.run(_record(settings, camera=True))
    return root


async def _record(settings: Any, **kwargs: Any) -> None:
    recorder = await record_household(settings, **kwargs)
    recorder.close()


def test_every_window_is_recorded_in_day_files_with_what_the_model_saw(week_with_frames: Path) -> None:
    """Each assessed window is one v1 record in its UTC day's file: the audit keys, the prompt as sent (images
    by sha256, the system prompt by sha256), every call with its reply, the settings and timings."""
    history = week_with_frames / "state" / "history"
    found = records(history)
    assert len(found) == 185  # every entry of the week is its own window
    assert sorted(p.name for p in history.glob("*.jsonl")) == [f"{utc_day(START + d * DAY)}.jsonl" for d in range(7)]
    for record in found:
        assert set(record) >= AUDIT_KEYS and record["version"] == RECORD_VERSION
        assert utc_day(record["at"]) in {p.stem for p in history.glob("*.jsonl")}
        assert record["model"]["model"] == "scripted-home" and "api_key" not in json.dumps(record["model"])
        assert record["strategy_label"] == "single" and record["windows"]["max_entries"] == 3
        call = record["calls"][0]
        assert len(record["calls"]) == 1 and len(call["system_sha256"]) == 64
        assert call["reply"] is None and call["reply_is_raw"] and record["raw"]  # the reply, written once
        assert "base64" not in json.dumps(record)
        parse_record(json.dumps(record))  # what a replay reads back
    hob = next(r for r in found if any("hob on low" in o["text"] for o in r["observations"]))
    prompt = hob["prompts"][hob["calls"][0]["prompt"]]
    assert "Sam sets the hob on low" in prompt and prompt.startswith('<observations zone="kitchen">')
    assert hob["verdict"]["hazard"] == "unattended hob" and hob["alert"]["type"] in ("new", "update")
    garage = next(r for r in found if r["zone"] == "garage")
    image = next(part for part in garage["prompts"][0] if part["type"] == "image_url")["image_url"]
    assert image["recorded"] is True and garage["camera"][0]["image"] == image["sha256"]


def test_frames_are_kept_as_sent_and_everything_is_private(week_with_frames: Path) -> None:
    """With record_frames on, the keyframes sent are JPEG files named by their sha256; folders 0700, files 0600."""
    history = week_with_frames / "state" / "history"
    frames = sorted((history / "frames").rglob("*.jpg"))
    sent = {c["image"] for r in records(history) for c in r["camera"]}
    assert frames and {f.stem for f in frames} == sent
    assert all(f.read_bytes()[:2] == b"\xff\xd8" for f in frames)
    assert modes(history) == {("dir", 0o700), ("file", 0o600)}
    assert stat.S_IMODE((week_with_frames / "state" / "feedback.sqlite3").stat().st_mode) == 0o600


def test_the_audit_log_is_the_same_format(week_with_frames: Path) -> None:
    """service.audit_log gets the very records the history gets (one format), created 0600."""
    audit = week_with_frames / "audit.jsonl"
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    def key(record: dict[str, Any]) -> tuple[float, str]:
        return record["at"], record["window"]

    assert sorted(lines, key=key) == sorted(records(week_with_frames / "state" / "history"), key=key)
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600


async def test_without_record_frames_no_image_is_kept(tmp_path: Path) -> None:
    """By default (privacy) the images sent are only named by their sha256: no frames folder, recorded false."""
    settings = household_settings(tmp_path / "state", RECORDED_SCRIPT)
    assert settings.history.record_frames is False
    recorder = await record_household(settings, days=2, camera=True)
    recorder.close()
    history = tmp_path / "state" / "history"
    assert not (history / "frames").exists()
    garage = [r for r in records(history) if r["zone"] == "garage"]
    assert garage and all(c["image"] for r in garage for c in r["camera"])
    images = [p["image_url"] for r in garage for p in r["prompts"][0] if p["type"] == "image_url"]
    assert images and not any(i["recorded"] for i in images)


async def test_history_off_records_nothing_but_the_audit_log(tmp_path: Path) -> None:
    """history.enabled = false writes no history folder; service.audit_log still gets its records."""
    settings = household_settings(tmp_path / "state", RECORDED_SCRIPT, history={"enabled": False},
                                  service={"audit_log": str(tmp_path / "audit.jsonl")})
    recorder = await record_household(settings, days=1)
    recorder.close()
    assert not (tmp_path / "state" / "history").exists()
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 25


async def test_an_unusable_history_or_store_is_said_and_the_monitor_runs_on(tmp_path: Path) -> None:
    """Monitoring matters more than its records: a history folder that cannot be created and a feedback store
    that is not a database are logged as errors (a failing write once, not once per window), and every window
    is still assessed."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "feedback.sqlite3").write_text("this is not a database, it is a shopping list" * 50)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    settings = household_settings(state, RECORDED_SCRIPT, history={"path": str(blocker / "history")})
    with capture_logs() as logs:
        recorder = await record_household(settings, days=1)
        recorder.close()
    events = [e["event"] for e in logs]
    assert recorder.desk is None and "running without feedback on alerts" in events
    assert "history folder unusable" in events and events.count("history record not written") == 1
    assert events.count("window assessed") == 25


def test_a_reload_applies_at_the_next_record(tmp_path: Path) -> None:
    """configure() (what SIGHUP calls) takes effect with the next window: a new audit log path, and with the
    history turned off no more records in the folder."""
    from monitor.assess.verdict import Assessment, Verdict
    from monitor.backends import Usage
    from monitor.history.recorder import HistoryRecorder
    from monitor.observer import Settled
    from monitor.windows import Window
    from sensors.types import LogEntry

    def settled(n: int) -> Settled:
        window = Window(f"kitchen-{n}", "kitchen", (LogEntry("kitchen", START + n, f"entry {n}"),), 1, START + n)
        return Settled(window, Verdict(Assessment(danger=False), "m", Usage()), None, None, 0.01)

    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    settings = household_settings(tmp_path / "state", RECORDED_SCRIPT, service={"audit_log": str(first)})
    recorder = HistoryRecorder(settings, clock=lambda: START)
    recorder.window_settled(settled(1))
    recorder.configure(household_settings(tmp_path / "state", RECORDED_SCRIPT, history={"enabled": False},
                                          service={"audit_log": str(second)}))
    recorder.window_settled(settled(2))
    recorder.close()
    assert [json.loads(line)["window"] for line in first.read_text().splitlines()] == ["kitchen-1"]
    assert [json.loads(line)["window"] for line in second.read_text().splitlines()] == ["kitchen-2"]
    assert [r["window"] for r in records(tmp_path / "state" / "history")] == ["kitchen-1"]


def test_a_writer_that_hangs_never_queues_more_than_its_bound(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that hangs (the first append never returns): at most MAX_QUEUED_RECORDS records wait for the
    writer; the ones after are dropped and counted as failures of the history and of the audit log, so
    the queue (and the windows and replies it holds) cannot grow until memory runs out."""
    from monitor.assess.verdict import Assessment, Verdict
    from monitor.backends import Usage
    from monitor.history import recorder as recorder_module
    from monitor.observer import Settled
    from monitor.windows import Window
    from sensors.types import LogEntry

    monkeypatch.setattr(recorder_module, "MAX_QUEUED_RECORDS", 5)
    settings = household_settings(tmp_path / "state", RECORDED_SCRIPT,
                                  service={"audit_log": str(tmp_path / "audit.jsonl")})
    recorder = recorder_module.HistoryRecorder(settings, clock=lambda: START)
    release = threading.Event()
    append = recorder.files.append
    recorder.files.append = lambda day, line: (release.wait(10), append(day, line))[1]  # type: ignore[method-assign]
    for n in range(12):
        window = Window(f"kitchen-{n}", "kitchen", (LogEntry("kitchen", START + n, f"entry {n}"),), 1, START + n)
        recorder.window_settled(Settled(window, Verdict(Assessment(danger=False), "m", Usage()), None, None, 0.01))
    assert recorder.failures == {"history": 7, "audit_log": 7}
    release.set()
    recorder.close()
    assert len(records(tmp_path / "state" / "history")) == 5


# --------------------------------------------------------------------------- retention


def _fill(files: HistoryFiles, days: list[str], *, frame_bytes: int = 0) -> None:
    for day in days:
        files.append(day, json.dumps({"type": "window", "at": 0, "zone": "kitchen"}) + "\n")
        if frame_bytes:
            files.keep_frame(day, "garage", f"{day}-a", b"\xff\xd8" + b"x" * frame_bytes)


def test_retention_by_age_then_size(tmp_path: Path) -> None:
    """Days older than max_age go, frames older than frames_max_age go; over max_bytes the oldest frames go first,
    then the oldest days; today's records stay whatever the size."""
    files = HistoryFiles(tmp_path / "history")
    days = [utc_day(START + d * DAY) for d in range(10)]
    _fill(files, days, frame_bytes=1000)
    now = START + 9.5 * DAY
    # A day goes once all of it is older than the limit: day 4 ends 4.5 days before now, so it stays.
    purged = files.enforce(max_age_s=5 * DAY, frames_max_age_s=2 * DAY, max_bytes=1e9, now=now)
    assert files.days() == days[4:] and files.frame_days() == days[7:]
    assert purged.records == 4 and purged.frames == 7
    files.enforce(max_age_s=5 * DAY, frames_max_age_s=2 * DAY, max_bytes=files.size() - 1, now=now)
    assert files.frame_days() == days[8:] and files.days() == days[4:]  # the oldest frame day freed enough
    files.enforce(max_age_s=5 * DAY, frames_max_age_s=2 * DAY, max_bytes=1, now=now)
    assert files.frame_days() == [] and files.days() == days[9:]  # today is kept even over the limit


async def test_the_recorder_applies_retention_as_it_writes(tmp_path: Path) -> None:
    """A monitor running for a week with max_age_days = 2 keeps only the last days' records (its clock)."""
    settings = household_settings(tmp_path / "state", RECORDED_SCRIPT, history={
        "max_age_days": 2, "frames_max_age_days": 1, "record_frames": True})
    recorder = await record_household(settings, days=7, camera=True)
    recorder.close()
    files = HistoryFiles(tmp_path / "state" / "history")
    last = START + 6 * DAY + 21 * 3600
    assert set(files.days()) <= {utc_day(last - d * DAY) for d in range(3)}
    assert set(files.frame_days()) <= {utc_day(last - d * DAY) for d in range(2)}


# --------------------------------------------------------------------------- purge


def _purge(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor", "history", "purge", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_purge_by_zone_age_and_all_while_records_are_appended(tmp_path: Path) -> None:
    """`monitor history purge` rewrites day files under the folder's lock: lines appended meanwhile survive."""
    state = tmp_path / "state"
    files = HistoryFiles(state / "history")
    today = utc_day(START)
    for n in range(200):
        files.append(today, json.dumps({"type": "window", "at": START + n, "zone": "kitchen" if n % 2 else "garage"})
                     + "\n")
    files.keep_frame(today, "garage", "abc", b"\xff\xd8jpeg")
    files.keep_frame(today, "kitchen", "def", b"\xff\xd8jpeg")
    stop = threading.Event()
    appended: list[int] = []

    def writer() -> None:  # the daemon, appending kitchen records all along
        n = 1000
        while not stop.is_set():
            files.append(today, json.dumps({"type": "window", "at": START + n, "zone": "kitchen"}) + "\n")
            appended.append(n)
            n += 1
            stop.wait(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = _purge(state, "--zone", "garage", "--yes")
    finally:
        stop.set()
        thread.join()
    assert result.returncode == 0, result.stderr
    assert "100 records and 1 frames removed" in result.stdout
    kept = records(state / "history")
    assert {r["zone"] for r in kept} == {"kitchen"}
    assert {r["at"] - START for r in kept if r["at"] - START >= 1000} == set(appended)  # nothing lost
    assert not (state / "history" / "frames" / today / "garage").exists()

    result = _purge(state, "--older-than", "30d", "--yes")  # the records are from January, long ago
    assert result.returncode == 0 and f"{len(kept)} records" in result.stdout
    assert records(state / "history") == []
    files.append(today, "{}\n")
    assert _purge(state, "--all", "--yes").returncode == 0 and files.days() == []


def test_purge_needs_exactly_one_rule(tmp_path: Path) -> None:
    """No rule, or a bad duration, is a usage error that says so."""
    assert _purge(tmp_path, "--zone", "a", "--all").returncode == 2
    bad = _purge(tmp_path, "--older-than", "a month")
    assert bad.returncode == 1 and "'a month' is not a duration" in bad.stderr


def _history_with(state: Path, count: int) -> HistoryFiles:
    files = HistoryFiles(state / "history")
    now = time.time()
    for n in range(count):
        files.append(utc_day(now), json.dumps({"type": "window", "at": now - n, "zone": "kitchen"}) + "\n")
    return files


@pytest.mark.parametrize("duration", ["1m", "1M", "2mo", "1month", "3y", "10"])
def test_purge_refuses_a_duration_whose_unit_is_ambiguous_or_missing(tmp_path: Path, duration: str) -> None:
    """`--older-than 1m` deleted everything (a minute, to the monitor; a month, to the person)."""
    state = tmp_path / "state"
    _history_with(state, 5)
    result = _purge(state, "--older-than", duration, "--yes")
    assert result.returncode == 1
    assert f"{duration!r} is not a duration" in result.stderr and "min" in result.stderr
    assert len(records(state / "history")) == 5


def test_purge_minutes_are_spelled_min(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _history_with(state, 5)
    result = _purge(state, "--older-than", "90min", "--yes")
    assert result.returncode == 0, result.stderr
    assert "0 records" in result.stdout or "nothing to delete" in result.stdout
    assert len(records(state / "history")) == 5


def test_purge_dry_run_says_what_would_go_and_deletes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _history_with(state, 7)
    result = _purge(state, "--all", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "7 records and 0 frames would be removed" in result.stdout and "dry run: nothing deleted" in result.stdout
    assert len(records(state / "history")) == 7


def test_purge_without_yes_refuses_when_nobody_can_answer(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _history_with(state, 3)
    result = _purge(state, "--all")  # standard input is not a terminal
    assert result.returncode == 1
    assert "3 records and 0 frames would be removed" in result.stdout and "--yes" in result.stderr
    assert len(records(state / "history")) == 3


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("typed", "deleted"), [("y\n", True), ("yes\n", True), ("\n", False), ("n\n", False)])
def test_purge_asks_a_person_at_a_terminal(tmp_path: Path, typed: str, deleted: bool) -> None:
    from monitor.history.cli import history_command
    from monitor.history.parser import add_parsers

    state = tmp_path / "state"
    _history_with(state, 4)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["history", "purge", "--all", "--state-dir", str(state)])
    out = io.StringIO()
    code = history_command(args, out, answer=_Terminal(typed))
    assert "Delete them? [y/N]" in out.getvalue()
    assert (code, len(records(state / "history"))) == ((0, 0) if deleted else (1, 4))
