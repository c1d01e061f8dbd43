"""Fault injection, issue 20 section 6: optional parts never blind a zone, and model answers are never lost.

The feedback notes in the prompt, the history, the audit log and the speaker are extras: each test breaks
one (a feedback store of garbage bytes, a history day file and an audit log that cannot be written, a speech
engine that fails or hangs) under the real daemon, with the scripted OpenAI-compatible server on 127.0.0.1,
and checks that every hazard still becomes an alert, that the failure is counted (`optional_failures` in the
stats, `monitor_optional_failures_total` on /metrics) and logged, and that the daemon still exits 0. The
others send the model's answers that are broken (a 100 KB hazard, a 30 MB reply, a verify answer without
candidates) and check each is a kept verdict or a counted error. docs/reliability.md lists them.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.history.feedback import FeedbackStore, missed
from tests.support.daemon import DANGER_LADDER, DANGER_STOVE, Daemon, alert_lines, responder, wait_until
from tests.support.faults import (
    Rig,
    append_lines,
    entry,
    jsonl_whole,
    metric,
    still_watching,
    stops_cleanly,
    tail,
    wait_alerts,
)
from tests.support.openai_server import Action, ScriptedOpenAIServer, reply

STOVE = "Sam leaves the stove on with oil in the pan and walks away"
FEEDBACK_CONTEXT = "\n[assessment.feedback_context]\nenabled = true\n"


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    """The scripted model: ladder, stove and knife are dangers, anything else is safe."""
    with ScriptedOpenAIServer(responder=responder()) as running:
        yield running


def _stove_hazards(daemon: Daemon, log: Path, count: int) -> list[dict[str, object]]:
    """Feed `count` stove windows one after the other; the summary line of each (every one assessed)."""
    before = len(daemon.find("window assessed", zone="kitchen"))
    for n in range(count):
        append_lines(log, entry(f"{STOVE} ({n})"))
        daemon.wait_log("window assessed", count=before + n + 1, zone="kitchen")
    assessed = daemon.find("window assessed", zone="kitchen")[before:]
    return assessed


def _optional_failures(daemon: Daemon, part: str) -> float:
    return metric(daemon, "monitor_optional_failures_total", part=part)


# -- the feedback notes ------------------------------------------------------------------------------
def _damaged_feedback_store(state_dir: Path) -> Path:
    """A feedback store with notes for the kitchen whose feedback table is garbage bytes (the header and
    the alerts are intact, so the daemon opens it; every read of the notes fails)."""
    path = state_dir / "feedback.sqlite3"
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = time.time()
    with FeedbackStore(path) as store:
        for n in range(5):
            store.add(missed("kitchen", now - 3600 - n * 60, now - 3000 - n * 60, note=f"the pan smoked ({n})"))
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'feedback'").fetchone()[0]
    db.close()
    with path.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(os.urandom(page_size))
    return path


def test_a_corrupt_feedback_store_with_feedback_context_never_blinds_a_zone(
        tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """Feedback context on, the feedback store garbage: first its notes table, then (while running) the
    whole file. Every stove window is still assessed and alerts, without notes; each failed lookup is
    counted and logged. Before the fix every assessment failed (`internal`): the zone went blind and the
    six stove hazards gave no alert."""
    log, alerts = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    log.write_text("")
    store = _damaged_feedback_store(tmp_path / "state")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], jsonl=alerts, extra=FEEDBACK_CONTEXT)
    with Daemon(rig.write(), tmp_path) as daemon:
        assessed = _stove_hazards(daemon, log, 6)
        assert [a["verdict"] for a in assessed] == ["danger"] * 6
        assert [a["alert"] for a in assessed] == ["new"] + ["update"] * 5
        assert wait_alerts(alerts, 1)[0]["hazard"] == DANGER_STOVE["hazard"]
        said = daemon.wait_log("feedback notes unavailable; assessing without them", zone="kitchen")
        assert "malformed" in said[0]["error"]
        assert _optional_failures(daemon, "feedback_context") == 6
        assert metric(daemon, "monitor_model_errors_total", kind="internal") == 0
        store.write_bytes(os.urandom(store.stat().st_size))  # now the whole file, under the running daemon
        assert [a["verdict"] for a in _stove_hazards(daemon, log, 2)] == ["danger"] * 2
        assert _optional_failures(daemon, "feedback_context") == 8
        assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
        stops_cleanly(daemon)
    final = daemon.logs()[-1]
    assert final["optional_failures"]["feedback_context"] == 9 and final["model_errors"] == {}


def test_a_feedback_store_with_rows_this_monitor_never_wrote_still_starts_with_its_feedback(
        tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """An alert row whose windows are not JSON (a store edited by hand, or damaged): the daemon starts with
    its feedback, the row's windows read as none, said once (the bounded reader counts the rejection).
    Before the fix it did not start."""
    log, alerts = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    log.write_text("")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with FeedbackStore(state / "feedback.sqlite3") as store:
        store.add(missed("kitchen", time.time() - 600, time.time() - 300))
    with sqlite3.connect(state / "feedback.sqlite3") as db:
        db.execute("INSERT INTO alerts VALUES ('a1', 'kitchen', 'fire', 'critical', 1, 2, NULL, '{not json')")
    db.close()
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], jsonl=alerts, extra=FEEDBACK_CONTEXT)
    with Daemon(rig.write(), tmp_path) as daemon:
        said = daemon.wait_log("feedback store: a list of windows unreadable; taken as none")
        assert "not valid JSON" in said[0]["error"]
        assert [a["alert"] for a in _stove_hazards(daemon, log, 1)] == ["new"]
        assert not daemon.find("running without feedback on alerts")
        stops_cleanly(daemon)


# -- the history and the audit log --------------------------------------------------------------------
def test_an_unwritable_history_and_audit_log_never_blind_a_zone_and_each_is_kept_without_the_other(
        tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """The history folder replaced by a file (nothing can be appended, even by root): alerts go on, the
    audit log still gets every record, the failures are counted under `history`. Then the audit log too:
    alerts go on, counted under `audit_log`. Before the fix a history that could not be written cost the
    audit log its records too, and neither failure was counted anywhere but in a log line."""
    log, alerts, audit = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl", tmp_path / "audit.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], jsonl=alerts, audit=audit)
    with Daemon(rig.write(), tmp_path) as daemon:
        assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
        history = tmp_path / "state" / "history"
        wait_until(lambda: list(history.glob("*.jsonl")), what="the first history record")
        # The history folder replaced by a regular file: nothing can be appended under it, even by root (a
        # folder in place of today's file is not enough: it is moved aside and a fresh file written).
        history.rename(history.with_name("history.gone"))
        history.write_text("not a folder")
        audited = len(jsonl_whole(audit))
        assert [a["verdict"] for a in _stove_hazards(daemon, log, 3)] == ["danger"] * 3
        wait_until(lambda: len(jsonl_whole(audit)) == audited + 3, what="the audit log still written")
        wait_until(lambda: _optional_failures(daemon, "history") == 3, what="history failures counted")
        assert daemon.find("history record not written", part="history")
        audit.unlink()
        audit.mkdir()
        assert [a["verdict"] for a in _stove_hazards(daemon, log, 2)] == ["danger"] * 2
        wait_until(lambda: _optional_failures(daemon, "audit_log") == 2, what="audit failures counted")
        assert daemon.find("history record not written", part="audit_log")
        assert len(wait_alerts(alerts, 6)) == 6  # the ladder's new, the stove's new and 4 updates
        stops_cleanly(daemon)
    assert daemon.logs()[-1]["optional_failures"] == {
        "feedback_context": 0, "feedback": 0, "history": 5, "audit_log": 2, "speaker": 0, "notify": 0, "evidence": 0}


# -- the speaker -------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["fails", "hangs"])
def test_a_speaker_whose_command_fails_or_hangs_never_delays_or_blinds_a_zone(
        tmp_path: Path, server: ScriptedOpenAIServer, engine: str) -> None:
    """A speech engine that exits 3, or one that never finishes (killed after its timeout): every alert
    still reaches the JSONL sink at once, each failed message is counted (`speaker`) and logged."""
    log, alerts = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    log.write_text("")
    sh = shutil.which("sh")
    assert sh is not None
    script = "echo the sound card is gone >&2; exit 3" if engine == "fails" else "exec sleep 60"
    speaker = (f'\n[sinks.speaker]\nenabled = true\ncommand = ["{sh}", "-c", "{script}"]\n'
               "require_audio_device = false\ntimeout_s = 0.5\nmin_interval_s = 0\n")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], jsonl=alerts, extra=speaker)
    with Daemon(rig.write(), tmp_path) as daemon:
        for text in (STOVE, "Sam climbs the ladder and leans out", "Sam cuts towards his hand with a knife"):
            started = time.monotonic()
            count = len(alert_lines(alerts))
            append_lines(log, entry(text))
            wait_alerts(alerts, count + 1)
            assert time.monotonic() - started < 5.0  # not held up by the speaker's 0.5 s timeouts
        failed = daemon.wait_log("speaker command failed", count=2)
        expected = "exit status 3: the sound card is gone" if engine == "fails" else "did not finish within"
        assert expected in failed[0]["reason"]
        wait_until(lambda: _optional_failures(daemon, "speaker") >= 2, what="speaker failures counted")
        assert still_watching(daemon, log, zone="kitchen")["alert"] in ("new", "update")
        stops_cleanly(daemon)


# -- huge answers ----------------------------------------------------------------------------------------
def _peak_rss_mb(daemon: Daemon) -> float:
    """The daemon's peak resident memory so far (VmHWM), in MB."""
    assert daemon.process is not None
    for line in Path(f"/proc/{daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc: not Linux?")


def _history_lines(state: Path) -> list[str]:
    return [line for day in sorted((state / "history").glob("*.jsonl")) for line in day.read_text().splitlines()]


def test_a_100_kb_hazard_is_cut_with_a_marker_and_still_alerts(tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """A danger verdict whose hazard is 100 KB (reason, advice and evidence huge too) is an alert with each
    field cut to its bound and marked, never a malformed reply. Before the fix it was discarded."""
    log, alerts = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    log.write_text("")
    huge = "hot oil left on the burner " * 3800
    server.push(reply({**DANGER_STOVE, "hazard": huge, "reason": huge, "advice": huge, "evidence": [huge] * 30}))
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], jsonl=alerts)
    with Daemon(rig.write(), tmp_path) as daemon:
        append_lines(log, entry(STOVE))
        alert = wait_alerts(alerts, 1)[0]
        assert str(alert["hazard"]).startswith("hot oil left on the burner")
        assert len(str(alert["hazard"])) == 300 and str(alert["hazard"]).endswith("characters cut]")
        assert len(str(alert["advice"])) <= 1000 and alert["severity"] == "critical"
        assert metric(daemon, "monitor_model_errors_total", kind="malformed") == 0
        stops_cleanly(daemon)


@pytest.mark.parametrize("megabytes", [3, 30])
def test_a_huge_reply_is_stored_once_bounded_and_memory_stays_low(
        tmp_path: Path, server: ScriptedOpenAIServer, megabytes: int) -> None:
    """A reply of 3 MB (a danger with a huge hazard) is an alert; one of 30 MB is refused after the first
    4 MB as a counted `bad_response`. Either way the history line and the audit record stay small, the raw
    answer is in them once (cut, marked), and the daemon's peak memory grows by far less than the reply.
    Before the fix a 30 MB reply was written twice into one 60 MB history line and RSS rose to 294 MB."""
    log, alerts, audit = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl", tmp_path / "audit.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], jsonl=alerts, audit=audit)
    with Daemon(rig.write(), tmp_path) as daemon:
        assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
        before = _peak_rss_mb(daemon)
        marker = "flames reach the cupboard "
        server.push(reply({**DANGER_STOVE, "hazard": marker * (megabytes * 1024 * 1024 // len(marker))}))
        append_lines(log, entry(STOVE))
        if megabytes < 4:
            assert wait_alerts(alerts, 2)[-1]["hazard"].startswith(marker)
        else:
            failed = daemon.wait_log("assessment failed", kind="bad_response")
            assert "too big" in failed[0]["error"]
            assert metric(daemon, "monitor_model_errors_total", kind="bad_response") == 1
        assert still_watching(daemon, log, zone="kitchen", text="Sam cuts towards his hand with a knife")
        peak = _peak_rss_mb(daemon)
        stops_cleanly(daemon)
    lines = _history_lines(tmp_path / "state")
    audited = audit.read_text().splitlines()
    assert len(lines) == len(audited) == 3 and lines == audited
    big = json.loads(lines[1])
    assert max(len(line) for line in lines) < 64 * 1024
    call = big["calls"][0]
    if megabytes < 4:  # kept: the raw answer cut and marked in `raw`, the call's reply not written again
        assert big["raw"].startswith('{"danger": true') and big["raw"].endswith("characters cut]")
        assert len(big["raw"]) == 16 * 1024 and call["reply"] is None and call["reply_is_raw"] is True
        assert len(big["verdict"]["hazard"]) == 300
    else:  # refused: the start of the body kept as the raw answer, the error named
        assert big["raw"].startswith('{"id": "chatcmpl-') and len(big["raw"]) == 2000
        assert call["reply"] is None and big["error"]["kind"] == "bad_response"
    print(f"\n{megabytes} MB reply: peak RSS {before:.0f} MB before, {peak:.0f} MB after; "
          f"history line {len(lines[1])} characters")
    assert peak - before < 4 * megabytes + 40


# -- every strategy, broken answers -------------------------------------------------------------------------
PROPOSED = {"candidates": [{"hazard": "fall from ladder", "behaviour": "leans out", "why": "a fall"}]}
VERIFIED = {"supported": True, "severity": "warning", "reason": "leans far out", "advice": "climb down",
            "evidence": ["leans out"], "confidence": 0.9}
# (more of the strategy's config, what a broken model answers to the stove window's calls)
BROKEN_ANSWERS = {
    "single": ("", "{}"),
    "vote": ("", '{"danger": "perhaps"}'),
    "verify": ("", "{}"),  # the found instance: `{}` (no candidates key) read as "no risks"
    "temporal": ("[assessment.temporal]\nthreshold = 0.5\n", "null"),
}


def _strategy_responder(broken: str) -> Any:
    """Ladder windows answered well by call kind (assess, propose, verify); stove windows broken."""
    def answer(body: dict[str, Any]) -> Action:
        system = str(body["messages"][0]["content"])
        if "stove" in json.dumps(body["messages"][-1]).lower():
            return Action(text=broken)
        if "list every way" in system:
            return reply(PROPOSED)
        if "checking ONE candidate" in system:
            return reply(VERIFIED)
        return reply(DANGER_LADDER)
    return answer


@pytest.mark.parametrize("strategy", list(BROKEN_ANSWERS))
def test_every_strategy_counts_a_broken_answer_as_an_error_never_a_silent_safe(tmp_path: Path, strategy: str) -> None:
    """Each strategy, under the real daemon, with its model answering a stove window broken (`{}`, a wrong
    type, null): the window is a counted `malformed` error and the zone says so, never "window assessed:
    safe"; the next window warns. Before the fix `verify` read `{}` as "no risks" and reported the window safe."""
    log, alerts = tmp_path / "kitchen.jsonl", tmp_path / "alerts.jsonl"
    log.write_text("")
    options, broken = BROKEN_ANSWERS[strategy]
    extra = f'\n[assessment]\nstrategy = "{strategy}"\n{options}'
    with ScriptedOpenAIServer(responder=_strategy_responder(broken)) as model:
        rig = Rig(tmp_path, model.base_url, sources=[tail("kitchen", log)], jsonl=alerts, extra=extra)
        with Daemon(rig.write(), tmp_path) as daemon:
            append_lines(log, entry(STOVE))
            failed = daemon.wait_log("assessment failed", zone="kitchen")
            assert failed[0]["kind"] == "malformed"
            assert metric(daemon, "monitor_model_errors_total", kind="malformed") == 1
            assert not daemon.find("window assessed", zone="kitchen")  # no verdict at all, let alone "safe"
            assessed = still_watching(daemon, log, zone="kitchen")
            assert assessed["alert"] == "new" and assessed["strategy"].startswith(strategy)
            stops_cleanly(daemon)
