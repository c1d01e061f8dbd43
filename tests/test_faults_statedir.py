"""Fault injection (issue 20, section 4): the state dir is trusted ground.

A symlink planted where the monitor keeps a file (the open-alerts journal and its temporary file,
the controls, the record of published topics, the history day file and its lock, the feedback and
outbox databases and their side files, the acknowledgement spool, the JSONL sink, the audit log)
is never followed: the file it points to keeps its content and mode, and the link is moved aside
(named in a log line) or the write is refused with a message naming it. A state dir another user
owns or can write stops the start with one line naming it and the fix. And `history.max_mb`
holds within one day: today's oldest records go when today's alone exceed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from monitor.alerts import OPEN_ALERTS_FILE, OpenAlertJournal
from monitor.control import CONTROLS_FILE, ZoneControls
from monitor.core.files import UnsafePathError, check_private_dir, repair_torn_tail
from monitor.core.statefile import JsonStateFile
from monitor.daemon.statedir import StateDirError, open_state_dir
from monitor.escalation.engine import AckResult
from monitor.escalation.spool import SPOOL_DIR, AckSpool, AckSpoolError, request_ack
from monitor.history.feedback import FeedbackStore
from monitor.history.files import HistoryError, HistoryFiles, append_private
from monitor.history.settings import FEEDBACK_FILE
from monitor.history.times import utc_day
from monitor.mqtt.settings import MqttSettings
from monitor.settings import load_settings
from monitor.sinks.local import JsonlSink
from monitor.sinks.mqtt import MqttSink
from monitor.sinks.notify_queue import NOTIFY_QUEUE_FILE, Note, NotifyQueue, NotifyQueueError
from monitor.sinks.outbox import Outbox
from tests.support.daemon import Daemon, responder
from tests.support.faults import Rig, fill, small_disk, still_watching, stops_cleanly, tail
from tests.support.household import START
from tests.support.openai_server import ScriptedOpenAIServer

ORIGINAL = b"someone else's file\n"
NOBODY = 65534


class Victim:
    """A 0644 file outside the state dir that a planted link points to: it must never change."""

    def __init__(self, folder: Path, name: str = "victim.txt", content: bytes = ORIGINAL) -> None:
        folder.mkdir(exist_ok=True)
        self.path = folder / name
        self.content = content
        self.path.write_bytes(content)
        os.chmod(self.path, 0o644)
        self.before = set(folder.iterdir())

    def plant(self, link: Path) -> Path:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(self.path)
        return link

    def untouched(self) -> None:
        assert self.path.read_bytes() == self.content, "written through the planted link"
        assert stat.S_IMODE(self.path.stat().st_mode) == 0o644, "chmod followed the planted link"
        assert set(self.path.parent.iterdir()) == self.before, "a file was created beside the target"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    return folder


@pytest.fixture
def victim(tmp_path: Path) -> Victim:
    return Victim(tmp_path / "elsewhere")


def _regular(path: Path) -> os.stat_result:
    info = path.lstat()
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600, f"{path}: {info}"
    return info


def _moved_aside(logs: list[dict[str, object]], path: Path) -> dict[str, object]:
    [line] = [e for e in logs if e.get("path") == str(path) and "moved aside" in str(e["event"])]
    assert "is a symbolic link" in str(line["problem"]), line
    aside = Path(str(line["moved_to"]))
    assert aside.is_symlink(), "the link itself is kept aside, for a person to look at"
    return line


# --------------------------------------------------------------------------- JSON state files


def _controls(state: Path) -> None:
    controls = ZoneControls.persistent(state)
    assert controls.is_monitoring("kitchen"), "the planted file switched the kitchen off"
    controls.set_monitoring("garage", False)


def _journal(state: Path) -> None:
    journal = OpenAlertJournal.in_state_dir(state)
    assert not journal.load(), "alerts were read from the planted file"
    journal.file.save({"alerts": []})


# Documents of the right shape: read through a link, they would switch a zone off or end foreign alerts.
_FOREIGN = {CONTROLS_FILE: {"version": 1, "zones": {"kitchen": {"monitoring": False, "sensitivity": 0.5}}},
            OPEN_ALERTS_FILE: {"alerts": []}}


@pytest.mark.parametrize(("name", "use"), [(CONTROLS_FILE, _controls), (OPEN_ALERTS_FILE, _journal)],
                         ids=["controls", "open-alerts"])
def test_a_link_in_place_of_a_state_file_is_moved_aside_never_read_or_written_through(
        state: Path, tmp_path: Path, name: str, use: Callable[[Path], None]) -> None:
    """Before the fix the document was read through the link (a planted file switched a zone off)."""
    victim = Victim(tmp_path / "elsewhere", content=json.dumps(_FOREIGN[name]).encode())
    victim.plant(state / name)
    with capture_logs() as logs:
        use(state)
    _moved_aside(logs, state / name)
    _regular(state / name)
    victim.untouched()


@pytest.mark.parametrize("name", [CONTROLS_FILE, OPEN_ALERTS_FILE])
def test_a_link_in_place_of_the_temporary_file_is_replaced_not_written_through(
        state: Path, victim: Victim, name: str) -> None:
    victim.plant(state / f".{name}.tmp")
    JsonStateFile(state / name, what="state file").save({"zones": {}})
    assert json.loads((state / name).read_text()) == {"zones": {}}
    _regular(state / name)
    assert not os.path.lexists(state / f".{name}.tmp")
    victim.untouched()


def test_the_record_of_published_topics_never_follows_a_link(state: Path, victim: Victim) -> None:
    sink = MqttSink(MqttSettings(topic_prefix="links"), zones=["kitchen"], state_dir=state)
    victim.plant(state / "mqtt-published.json")
    victim.plant(state / ".mqtt-published.json.tmp")
    with capture_logs() as logs:
        assert sink._load_published() == set()
    _moved_aside(logs, state / "mqtt-published.json")
    sink._save_published({"links/kitchen/state"})
    assert json.loads((state / "mqtt-published.json").read_text()) == {"topics": ["links/kitchen/state"]}
    _regular(state / "mqtt-published.json")
    victim.untouched()


# --------------------------------------------------------------------------- appended files


def test_history_day_file_and_lock_links_are_moved_aside(state: Path, victim: Victim) -> None:
    """Before the fix the record (quoting observations) was appended to the 0644 file the link named."""
    files = HistoryFiles(state / "history")
    files.ensure()
    day = utc_day(START)
    victim.plant(files.day_file(day))
    victim.plant(state / "history" / ".lock")
    with capture_logs() as logs:
        files.append(day, '{"zone": "kitchen"}\n')
    _moved_aside(logs, files.day_file(day))
    _moved_aside(logs, state / "history" / ".lock")
    assert files.day_file(day).read_text() == '{"zone": "kitchen"}\n'
    _regular(files.day_file(day))
    victim.untouched()


def test_a_history_folder_that_is_a_link_is_refused(state: Path, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir(mode=0o700)
    (state / "history").symlink_to(tmp_path / "other")
    with pytest.raises(HistoryError, match=r"history folder unsafe: .*symbolic link"):
        HistoryFiles(state / "history").ensure()
    assert list((tmp_path / "other").iterdir()) == []


def test_the_jsonl_sink_and_the_audit_log_refuse_a_link(state: Path, victim: Victim) -> None:
    victim.plant(state / "alerts.jsonl")
    victim.plant(state / "audit.jsonl")
    with pytest.raises(Exception, match=r"alerts\.jsonl: is a symbolic link"):
        asyncio.run(JsonlSink(state / "alerts.jsonl").start())
    with pytest.raises(UnsafePathError, match=r"audit\.jsonl: is a symbolic link"):
        append_private(state / "audit.jsonl", '{"zone": "kitchen"}\n')
    victim.untouched()


def test_torn_tail_repair_never_cuts_through_a_link(tmp_path: Path) -> None:
    torn = Victim(tmp_path / "elsewhere", content=b'{"whole": 1}\n{"torn')
    link = torn.plant(tmp_path / "state" / "alerts.jsonl")
    with pytest.raises(UnsafePathError):
        repair_torn_tail(link)
    torn.untouched()


# --------------------------------------------------------------------------- SQLite


@pytest.mark.parametrize("side", ["", "-wal", "-shm", "-journal"])
def test_the_outbox_never_opens_a_link(state: Path, tmp_path: Path, side: str) -> None:
    """Before the fix an empty file the link named became a SQLite database, and chmod followed the link."""
    empty = Victim(tmp_path / "elsewhere", content=b"")
    path = state / "mqtt-outbox.sqlite3"
    empty.plant(path.with_name(path.name + side))
    outbox = Outbox(path, max_messages=10)
    with capture_logs() as logs:
        outbox.open()
    [warning] = [e for e in logs if e["event"].startswith("mqtt outbox is not a healthy outbox; moved aside")]
    assert "symbolic link" in warning["reason"]
    outbox.put("t", b"p", qos=1, retain=False, message_id="m", created_at=0.0)
    outbox.close()
    _regular(path)
    empty.untouched()


def _note(key: str) -> Note:
    return Note(seq=0, key=key, target="phone", url_index=0, alert_id="a1", zone="kitchen", severity="critical",
                kind="alert", title="t", body="b", attachment=None, attempts=0, next_at=0.0, state="pending",
                created_at=0.0)


def _queue_moved_aside(logs: list[dict[str, object]], path: Path) -> dict[str, object]:
    event = "notify queue is not a healthy queue; moved aside, starting a fresh one"
    [warning] = [e for e in logs if e["event"] == event]
    assert warning["queue"] == str(path) and Path(str(warning["moved_to"])).name.startswith(f"{path.name}.corrupt-")
    return warning


@pytest.mark.parametrize("side", ["", "-wal", "-shm", "-journal"])
def test_the_notify_queue_never_opens_a_link(state: Path, tmp_path: Path, side: str) -> None:
    empty = Victim(tmp_path / "elsewhere", content=b"")
    path = state / NOTIFY_QUEUE_FILE
    empty.plant(path.with_name(path.name + side))
    queue = NotifyQueue(path)
    with capture_logs() as logs:
        queue.open()
    assert "symbolic link" in str(_queue_moved_aside(logs, path)["reason"])
    assert queue.put([_note("k1")]) == 1
    queue.close()
    _regular(path)
    empty.untouched()


def _foreign_database(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (id INTEGER)")  # the queue's table name, not its columns
        db.commit()


@pytest.mark.parametrize(("content", "reason"), [
    (lambda path: path.write_bytes(b"not a database at all, " * 200), "not a database"),
    (_foreign_database, "not a queue: no such column"),
], ids=["garbage", "foreign"])
def test_a_notify_queue_that_is_not_one_is_moved_aside_and_a_fresh_one_works(
        state: Path, content: Callable[[Path], None], reason: str) -> None:
    path = state / NOTIFY_QUEUE_FILE
    content(path)
    queue = NotifyQueue(path)
    with capture_logs() as logs:
        queue.open()
    warning = _queue_moved_aside(logs, path)
    assert reason in str(warning["reason"]) and Path(str(warning["moved_to"])).exists()
    assert queue.put([_note("k1")]) == 1 and len(queue) == 1
    queue.close()


def test_a_notify_queue_that_cannot_open_for_want_of_space_is_left_where_it_is(tmp_path: Path) -> None:
    """Only a damaged or foreign file is moved aside. Before the fix any SQLite error did it (a full disk, a
    lock): a queue still holding notifications was renamed away, and a `.corrupt-` file was left per attempt."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        state = disk / "state"
        state.mkdir(mode=0o700)
        fill(disk)
        queue = NotifyQueue(state / NOTIFY_QUEUE_FILE)
        with capture_logs() as logs, pytest.raises(NotifyQueueError, match=r"notify queue .*: cannot open: .*full"):
            queue.open()
        assert not [e for e in logs if "moved aside" in str(e["event"])]
        assert not list(state.glob("*.corrupt-*"))


@pytest.mark.parametrize("side", ["", "-wal", "-shm"])
def test_the_feedback_store_never_opens_a_link(state: Path, tmp_path: Path, side: str) -> None:
    empty = Victim(tmp_path / "elsewhere", content=b"")
    path = state / FEEDBACK_FILE
    empty.plant(path.with_name(path.name + side))
    with capture_logs() as logs:
        store = FeedbackStore(path).open()
    _moved_aside(logs, path.with_name(path.name + side))
    store.close()
    _regular(path)
    empty.untouched()


# --------------------------------------------------------------------------- the ack spool


def test_the_ack_spool_never_writes_a_reply_through_a_link(state: Path, victim: Victim) -> None:
    spool = AckSpool(state)
    spool.open()
    victim.plant(state / SPOOL_DIR / "abc.reply")
    victim.plant(state / SPOOL_DIR / ".abc.reply.tmp")
    victim.plant(state / SPOOL_DIR / f".abc.reply.{os.getpid()}.tmp")  # the name before the fix
    spool.answer("abc", AckResult("acknowledged", "ok"))
    assert json.loads((state / SPOOL_DIR / "abc.reply").read_text())["status"] == "acknowledged"
    victim.untouched()


def test_an_ack_spool_folder_that_is_a_link_is_refused(state: Path, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir(mode=0o700)
    (state / SPOOL_DIR).symlink_to(tmp_path / "other")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        AckSpool(state).open()
    with pytest.raises(AckSpoolError, match="symbolic link"):
        request_ack(state, alert_id="a", zone=None, by="test", timeout_s=0.1)
    assert list((tmp_path / "other").iterdir()) == []


# --------------------------------------------------------------------------- the state dir itself


def _settings(state: Path, **history: object) -> object:
    return load_settings(None, service={"state_dir": str(state)}, history=history or {"enabled": True})


@pytest.mark.parametrize(("mode", "owner", "message"), [
    (0o777, None, r"can be written by other users \(mode 0777\); fix: chmod 700"),
    (0o1777, None, r"can be written by other users \(mode 1777\)"),
    (0o770, None, r"can be written by other users \(mode 0770\)"),
    (0o700, NOBODY, rf"belongs to uid {NOBODY}, not to the monitor's user .*fix: chown"),
], ids=["0777", "1777", "0770", "nobody"])
def test_a_state_dir_others_can_write_or_own_is_refused(tmp_path: Path, mode: int, owner: int | None,
                                                        message: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, mode)
    if owner is not None:
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(state, owner, owner)
    with pytest.raises(StateDirError, match=rf"service\.state_dir: {state}: the state dir {message}"):
        open_state_dir(_settings(state))  # type: ignore[arg-type]


def test_a_history_folder_in_the_state_dir_that_is_a_link_or_shared_is_refused(state: Path, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir(mode=0o700)
    (state / "history").symlink_to(tmp_path / "other")
    with pytest.raises(StateDirError, match=r"history: is a symbolic link"):
        open_state_dir(_settings(state))  # type: ignore[arg-type]
    (state / "history").unlink()
    (state / "history").mkdir(mode=0o777)
    os.chmod(state / "history", 0o777)  # noqa: S103 - the hostile folder under test
    with pytest.raises(StateDirError, match=r"history: a folder the monitor keeps its state in can be written"):
        open_state_dir(_settings(state))  # type: ignore[arg-type]


def test_the_daemon_refuses_another_users_history_folder_but_a_purge_by_root_may_use_it(state: Path) -> None:
    """`monitor history purge` runs as root on the service user's folder (docs/daemon.md): allowed there."""
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    (state / "history").mkdir(mode=0o700)
    os.chown(state / "history", NOBODY, NOBODY)
    refused = rf"history: a folder the monitor keeps its state in belongs to uid {NOBODY},"
    with pytest.raises(StateDirError, match=refused):
        open_state_dir(_settings(state))  # type: ignore[arg-type]
    files = HistoryFiles(state / "history")
    files.append(utc_day(START), '{"zone": "kitchen"}\n')
    assert files.purge(everything=True).records == 1


def test_a_good_state_dir_is_created_private_and_a_link_to_one_is_accepted(tmp_path: Path) -> None:
    """systemd's DynamicUser= makes /var/lib/<name> a link to private/<name>: the folder it names is checked."""
    created = open_state_dir(_settings(tmp_path / "new" / "state"))  # type: ignore[arg-type]
    assert stat.S_IMODE(created.stat().st_mode) == 0o700
    (tmp_path / "link").symlink_to(created)
    assert open_state_dir(_settings(tmp_path / "link")) == created  # type: ignore[arg-type]
    check_private_dir(created, what="x", setting="y")


def test_the_default_state_dir_is_systemds_or_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd StateDirectory= sets $STATE_DIRECTORY; elsewhere ./state, made absolute at load."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert load_settings(None).service.state_dir == tmp_path / "state"
    assert load_settings(None, service={"state_dir": "here"}).service.state_dir == tmp_path / "here"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/proactive-monitor:/var/lib/other")
    assert load_settings(None).service.state_dir == Path("/var/lib/proactive-monitor")


# --------------------------------------------------------------------------- the real daemon


@pytest.fixture
def server() -> ScriptedOpenAIServer:
    with ScriptedOpenAIServer(responder=responder()) as running:
        yield running  # type: ignore[misc]


def test_the_daemon_refuses_to_start_on_a_state_dir_others_can_write(tmp_path: Path) -> None:
    """Before the fix a 0777 state dir was used silently."""
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o777)  # noqa: S103 - the hostile folder under test
    config = Rig(tmp_path, "http://127.0.0.1:9/v1", sources=[tail("kitchen", tmp_path / "kitchen.jsonl")],
                 state_dir=state).write()
    done = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MONITOR_HEALTH__PORT": "0"})
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"error: service.state_dir: {state}: the state dir can be written by other users (mode 0777); " \
           f"fix: chmod 700 {state}" in done.stderr
    assert sorted(p.name for p in state.iterdir()) == []  # nothing read or written there


def test_the_daemon_moves_a_planted_journal_link_aside_and_never_writes_through_it(
        tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """A link in place of the open-alerts journal: moved aside at start (logged), alerts journaled in a fresh
    file, the file the link named unchanged. Before the fix the journal was written into it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = Victim(tmp_path / "elsewhere")
    victim.plant(state / OPEN_ALERTS_FILE)
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], state_dir=state,
              jsonl=tmp_path / "alerts.jsonl")
    with Daemon(rig.write(), tmp_path) as daemon:
        [moved] = daemon.find("open alerts file unusable; moved aside, starting fresh")
        assert moved["path"] == str(state / OPEN_ALERTS_FILE) and "symbolic link" in moved["problem"]
        assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
        stops_cleanly(daemon)
    _regular(state / OPEN_ALERTS_FILE)
    victim.untouched()


# --------------------------------------------------------------------------- history.max_mb within one day


def test_history_max_mb_holds_within_one_day_and_keeps_the_newest_records(tmp_path: Path) -> None:
    """Before the fix today's file was never trimmed: 12.4 MB against 5 under load. Windows go through the
    recorder as in the daemon; its clock stays within one day and one retention period."""
    from monitor.assess.verdict import Assessment, Verdict
    from monitor.backends import Usage
    from monitor.history.recorder import HistoryRecorder
    from monitor.observer import Settled
    from monitor.windows import Window
    from sensors.types import LogEntry
    from tests.support.household import RECORDED_SCRIPT, household_settings

    def settled(n: int) -> Settled:
        text = f"entry {n} " + "x" * (300 + n % 700)
        window = Window(f"kitchen-{n}", "kitchen", (LogEntry("kitchen", START + n, text),), 1, START + n)
        return Settled(window, Verdict(Assessment(danger=False), "m", Usage()), None, None, 0.01)

    max_bytes = 0.2 * 1e6
    settings = household_settings(tmp_path / "state", RECORDED_SCRIPT, history={"max_mb": 0.2})
    recorder = HistoryRecorder(settings, clock=lambda: START + 3600)
    files, day = recorder.files, utc_day(START + 3600)
    biggest, peak = 0, 0
    for n in range(1000):
        recorder.window_settled(settled(n))
        recorder.flush()
        biggest = max(biggest, len(files.day_file(day).read_text().splitlines()[-1]) + 1)
        peak = max(peak, files.size())
    recorder.close()
    assert peak <= max_bytes + biggest, f"{peak} bytes against {max_bytes:.0f}"
    kept = [json.loads(line)["window"] for line in files.day_file(day).read_text().splitlines()]
    numbers = [int(window.split("-")[1]) for window in kept]
    assert numbers == list(range(numbers[0], 1000)), "the newest records, whole and in order"
    assert 300 < numbers[0] < 1000


def test_a_day_file_is_trimmed_to_whole_lines_and_a_record_bigger_than_the_limit_stays(tmp_path: Path) -> None:
    files = HistoryFiles(tmp_path / "history")
    day = utc_day(START)
    for n in range(50):
        files.append(day, json.dumps({"n": n, "pad": "y" * 1000}) + "\n")
    purged = files.enforce(max_age_s=1e9, frames_max_age_s=1e9, max_bytes=10_000, now=START + 60)
    kept = [json.loads(line)["n"] for line in files.day_file(day).read_text().splitlines()]
    assert kept == list(range(50 - len(kept), 50)) and files.size() <= 10_000
    assert purged.records == 50 - len(kept) and purged.remaining == files.size()
    files.append(day, json.dumps({"n": "huge", "pad": "z" * 50_000}) + "\n")
    files.enforce(max_age_s=1e9, frames_max_age_s=1e9, max_bytes=10_000, now=START + 60)
    assert [json.loads(line)["n"] for line in files.day_file(day).read_text().splitlines()] == ["huge"]
