"""A followed log file's read position kept in the state dir: what a restart reads back, and what it refuses.

Before, every start of a tail began at the end of its file: lines written while the monitor was down
(a crash, `kill -9` and systemd's restart delay, an upgrade) were never read, and nothing said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.stats import Stats
from sensors.logs.position import position_file
from sensors.logs.sources import FileTailSource
from tests.support import faults
from tests.support.daemon import Daemon, responder, wait_until
from tests.support.faults import Rig, append_lines, entry, metric, stops_cleanly
from tests.support.openai_server import ScriptedOpenAIServer
from tests.test_log_sources import PASBENCH_LOG, Collector, append, running, settle, tail


def record(state: Path) -> dict[str, Any]:
    return dict(json.loads(position_file(state, "tail").read_text()))


async def read_then_stop(log: Path, state: Path, text: str) -> None:
    """A first run on an empty `log` that reads the lines of `text` appended to it, then stops: its read position
    is kept in `state` for the run a test starts next."""
    log.write_bytes(b"")
    async with running(tail(log, state_dir=state)) as got:
        await settle()
        append(log, text)
        await got.wait_for(text.count("\n"))


async def test_a_restart_reads_the_lines_written_while_it_was_stopped_exactly_once(tmp_path: Path) -> None:
    log, state = tmp_path / "a.log", tmp_path / "state"
    log.write_text("before the first start\n")
    async with running(tail(log, state_dir=state)) as got:
        await settle()
        append(log, "one\n")
        await got.wait_for(1)
        append(log, "two\n")  # within the save throttle: only the stop writes this position
        assert await got.wait_for(2) == ["one", "two"]
    append(log, "the stove was turned on\nwhile down\n")
    source = tail(log, state_dir=state)
    async with running(source) as got:
        assert await got.wait_for(2) == ["the stove was turned on", "while down"]
        append(log, "after\n")
        assert await got.wait_for(3) == ["the stove was turned on", "while down", "after"]
    assert source.health().resumed_bytes == len("the stove was turned on\nwhile down\n")
    assert source.health().skipped_bytes == 0
    assert record(state)["offset"] == log.stat().st_size
    assert stat.S_IMODE(position_file(state, "tail").stat().st_mode) == 0o600


async def test_a_restart_after_a_run_that_read_nothing_still_reads_what_came_while_down(tmp_path: Path) -> None:
    log, state = tmp_path / "a.log", tmp_path / "state"
    log.write_text("before the first start\n")
    async with running(tail(log, state_dir=state)):
        await settle()  # a quiet log: not one line while the monitor ran
    append(log, "the stove was turned on\n")
    async with running(tail(log, state_dir=state)) as got:
        assert await got.wait_for(1) == ["the stove was turned on"]
        await settle()
        assert got.texts == ["the stove was turned on"]


async def test_a_source_run_again_after_a_failure_continues_where_it_stopped(tmp_path: Path) -> None:
    # The pipeline runs a failed source again: before, the new run opened the file at its end.
    log, state = tmp_path / "a.log", tmp_path / "state"
    log.write_bytes(b"")
    source, seen = tail(log, state_dir=state), []

    async def emit(entry: Any) -> None:
        seen.append(entry.text)
        if seen == ["one", "boom"]:
            raise RuntimeError("the window refused it")

    first = asyncio.create_task(source.run(emit))
    await settle()
    append(log, "one\nboom\ntwo\n")
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(first, 5)
    append(log, "three\n")
    async with running(source) as got:
        assert await got.wait_for(3) == ["boom", "two", "three"]


async def test_a_partial_line_at_the_stop_is_read_whole_after_the_restart(tmp_path: Path) -> None:
    log, state = tmp_path / "a.log", tmp_path / "state"
    log.write_bytes(b"")
    async with running(tail(log, state_dir=state)) as got:
        await settle()
        append(log, "whole\nthe stove was tur")
        await got.wait_for(1)
        await settle()
    assert record(state)["offset"] == len("whole\n")
    append(log, "ned on\n")
    async with running(tail(log, state_dir=state)) as got:
        assert await got.wait_for(1) == ["the stove was turned on"]


async def test_a_file_rotated_while_down_is_read_from_its_start(tmp_path: Path) -> None:
    log, state = tmp_path / "a.log", tmp_path / "state"
    await read_then_stop(log, state, "old file\n")
    log.rename(tmp_path / "a.log.1")
    log.write_text("new one\nnew two\n")
    with capture_logs() as logs:
        async with running(tail(log, state_dir=state)) as got:
            assert await got.wait_for(2) == ["new one", "new two"]
    assert any("replaced while the monitor was down" in e["event"] and "missed" in e["event"] for e in logs)


async def test_a_file_truncated_while_down_is_read_from_its_start(tmp_path: Path) -> None:
    log, state = tmp_path / "a.log", tmp_path / "state"
    await read_then_stop(log, state, "a fairly long line, longer than what replaces it\n")
    with log.open("r+b") as handle:  # same inode, as copytruncate leaves it
        handle.truncate(0)
    append(log, "short\n")
    with capture_logs() as logs:
        async with running(tail(log, state_dir=state)) as got:
            assert await got.wait_for(1) == ["short"]
    assert any("truncated while the monitor was down" in e["event"] for e in logs)


async def test_a_backlog_over_resume_max_bytes_is_skipped_to_a_line_boundary_and_counted(tmp_path: Path) -> None:
    log, state = tmp_path / "a.log", tmp_path / "state"
    await read_then_stop(log, state, "first\n")
    lines = [f"line {n:04d}" for n in range(100)]  # 10 bytes each with the newline
    append(log, "".join(f"{line}\n" for line in lines))
    source = tail(log, state_dir=state, resume_max_bytes=95)
    with capture_logs() as logs:
        async with running(source) as got:
            assert await got.wait_for(9) == lines[-9:]  # 95 bytes hold the last 9 whole lines
            await settle()
            assert len(got.texts) == 9
    health = source.health()
    assert health.skipped_bytes == 910 and health.resumed_bytes == 90
    assert health.to_json()["skipped_bytes"] == 910
    assert any("oldest part skipped" in e["event"] and e["skipped_bytes"] == 910 for e in logs)


async def test_an_entry_the_parser_held_at_the_stop_is_read_again(tmp_path: Path) -> None:
    # A PaSBench block is complete only when the next one starts: the position stays before the open block.
    log, state = tmp_path / "p.log", tmp_path / "state"
    log.write_bytes(b"")
    first, second = PASBENCH_LOG.replace("[LOG END]\n", "").split("[Time] 07:00 AM\n")
    async with running(tail(log, "pasbench", state_dir=state, idle_flush_s=None)) as got:
        await settle()
        append(log, first + "[Time] 07:00 AM\n" + second)
        assert [e.behaviour for e in await got.wait_for_entries(1)] == ["She fills the kettle."]
        await settle()
    append(log, "[Time] 07:15 AM\n")
    async with running(tail(log, "pasbench", state_dir=state, idle_flush_s=None)) as got:
        assert [e.behaviour for e in await got.wait_for_entries(1)] == ["She runs."]


async def test_resume_off_starts_at_the_end_as_before(tmp_path: Path) -> None:
    log, state = tmp_path / "a.log", tmp_path / "state"
    await read_then_stop(log, state, "one\n")
    append(log, "while down\n")
    async with running(tail(log, state_dir=state, resume=False)) as got:
        await settle()
        append(log, "after\n")
        assert await got.wait_for(1) == ["after"]


def _plant(kind: str, target: Path, tmp_path: Path) -> None:
    if kind == "garbage":
        target.write_bytes(b"\x00\xffnot json{")
    elif kind == "huge":
        target.write_text(json.dumps({"source": "tail", "pad": "x" * 200_000}))
    elif kind == "nested":
        target.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "wrong-shape":
        target.write_text(json.dumps({"source": "tail", "path": "a.log", "dev": 1, "ino": True, "offset": -5}))
    elif kind == "bad-check":
        target.write_text(json.dumps({"source": "tail", "path": "a.log", "dev": 1, "ino": 1, "offset": 3,
                                      "check": "not a sha-256"}))
    elif kind == "bad-format":
        target.write_text(json.dumps({"source": "tail", "path": "a.log", "dev": 1, "ino": 1, "offset": 0,
                                      "format": "auto"}))
    elif kind == "symlink":
        elsewhere = tmp_path / "elsewhere.json"
        elsewhere.write_text(json.dumps({"source": "tail", "path": "x", "dev": 0, "ino": 0, "offset": 0}))
        target.symlink_to(elsewhere)
    elif kind == "folder":
        target.mkdir()


@pytest.mark.parametrize("kind", ["garbage", "huge", "nested", "wrong-shape", "bad-check", "bad-format",
                                  "symlink", "folder"])
async def test_an_unusable_position_file_is_moved_aside_and_the_tail_works(tmp_path: Path, kind: str) -> None:
    log, state = tmp_path / "a.log", tmp_path / "state"
    log.write_text("old line\n")
    state.mkdir(mode=0o700)
    target = position_file(state, "tail")
    _plant(kind, target, tmp_path)
    source = tail(log, state_dir=state)
    with capture_logs() as logs:
        async with running(source) as got:
            await settle()
            append(log, "new\n")
            assert await got.wait_for(1) == ["new"]  # as with no position: from the end
    assert any("log position file unusable" in e["event"] for e in logs), logs
    assert [p.name for p in state.iterdir() if ".corrupt-" in p.name]
    assert not os.path.islink(target) and record(state)["offset"] == log.stat().st_size
    if kind == "symlink":
        assert json.loads((tmp_path / "elsewhere.json").read_text())["path"] == "x"  # never written through


# -- through the real daemon -------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(responder=responder()) as running_server:
        yield running_server


def _prompts_with(server: ScriptedOpenAIServer, marker: str) -> int:
    return sum(marker in str(request["messages"][-1]["content"]) for request in list(server.requests))


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_a_hazard_written_while_the_daemon_was_down_reaches_the_model_after_the_restart(
        tmp_path: Path, server: ScriptedOpenAIServer, stop: str) -> None:
    """The real daemon tails the kitchen log, is stopped (an ordered SIGTERM, or SIGKILL as a crash), the stove
    line is written while no monitor runs, and the daemon is started again: the line reaches a prompt the
    model server received, the line read before the stop does not come again, and the backlog is counted."""
    log, state = tmp_path / "kitchen.jsonl", tmp_path / "state"
    log.write_text("")
    config = Rig(tmp_path, server.base_url, state_dir=state, sources=[faults.tail("kitchen", log)]).write()
    with Daemon(config, tmp_path) as daemon:
        append_lines(log, entry("Sam stirs the soup"))
        wait_until(lambda: _prompts_with(server, "stirs the soup") == 1, what="the first line in a prompt")
        if stop == "SIGTERM":
            stops_cleanly(daemon)
        else:
            # A crash keeps what was written last: wait for the throttled write, then kill without warning.
            wait_until(lambda: record_of(state, "kitchen").get("offset") == log.stat().st_size,
                       what="the position on disk")
            daemon.kill()
    hazard = entry("Sam turned the stove on and left the house")
    append_lines(log, hazard)
    with Daemon(config, tmp_path) as daemon:
        wait_until(lambda: _prompts_with(server, "stove on and left") == 1, what="the stove line in a prompt")
        resumed = daemon.wait_log("resuming log", source="kitchen")[0]
        assert resumed["backlog_bytes"] == len(hazard) + 1
        assert metric(daemon, "monitor_source_log_resumed_bytes_total", source="kitchen") == len(hazard) + 1
        assert metric(daemon, "monitor_source_log_skipped_bytes_total", source="kitchen") == 0
        stops_cleanly(daemon)
    assert _prompts_with(server, "stirs the soup") == 1
    final = daemon.logs()[-1]["source_observations"]["kitchen"]
    assert final["resumed_bytes"] == len(hazard) + 1 and final["skipped_bytes"] == 0


def record_of(state: Path, source_id: str) -> dict[str, Any]:
    try:
        return dict(json.loads(position_file(state, source_id).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_skipped_backlog_bytes_are_a_readyz_note_and_both_counts_are_in_the_stats() -> None:
    stats = Stats()
    stats.log_backlog = {"kitchen": {"resumed_bytes": 90, "skipped_bytes": 910},
                         "hall": {"resumed_bytes": 5, "skipped_bytes": 0}}
    assert stats.source_notes() == {
        "kitchen": "log written while the monitor was down not read: 910 bytes over resume_max_bytes"}
    body = stats.to_json()["source_observations"]
    assert body["kitchen"]["skipped_bytes"] == 910 and body["hall"] == {**body["hall"], "resumed_bytes": 5}


# -- a stop or a failure while the kept position is being resumed ----------------------------------------


def _open_on(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


@pytest.mark.parametrize("how", ["stopped", "failed"])
async def test_a_stop_or_failure_during_the_resume_keeps_the_position_and_closes_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    # Before: offset 0 was written, the next start replayed the whole file as new observations, the file stayed open.
    log, state = tmp_path / "a.log", tmp_path / "state"
    log.write_text("".join(f"old event {n}\n" for n in range(5)))
    async with running(tail(log, state_dir=state, from_start=True)) as got:
        await got.wait_for(5)
    kept = record(state)
    entered, release = threading.Event(), threading.Event()
    resume = FileTailSource._resume

    def slow_resume(self: FileTailSource, *args: Any, **kwargs: Any) -> Any:
        entered.set()  # a slow disk: the stop comes while the resume runs in its thread
        release.wait(5)
        if how == "failed":
            raise OSError(5, "Input/output error")
        return resume(self, *args, **kwargs)

    monkeypatch.setattr(FileTailSource, "_resume", slow_resume)
    source = tail(log, state_dir=state)
    task = asyncio.create_task(source.run(Collector()))
    assert await asyncio.to_thread(entered.wait, 5)
    if how == "stopped":
        task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError if how == "stopped" else OSError):
        await task
    for _ in range(100):
        if not _open_on(log):
            break
        await asyncio.sleep(0.02)
    assert _open_on(log) == 0
    assert record(state) == kept
    monkeypatch.setattr(FileTailSource, "_resume", resume)
    async with running(tail(log, state_dir=state)) as got:
        await settle()
        append(log, "new\n")
        assert await got.wait_for(1) == ["new"]


# -- the kept offset checked against the file (copytruncate, an inode number used again) ---------------


async def test_a_file_truncated_while_down_and_written_past_the_kept_offset_is_read_from_its_start(
        tmp_path: Path) -> None:
    # Before: the tail resumed at the old offset in the new content, lost its first line and emitted "it".
    log, state = tmp_path / "a.log", tmp_path / "state"
    await read_then_stop(log, state, "kitchen: kettle on\nhall: door opened\n")
    os.truncate(log, 0)  # logrotate's copytruncate: the same inode, then the writer goes on
    append(log, "kitchen: stove turned on, pan left on it\nhall: front door opened, nobody home\n")
    source = tail(log, state_dir=state)
    with capture_logs() as logs:
        async with running(source) as got:
            assert await got.wait_for(2) == ["kitchen: stove turned on, pan left on it",
                                              "hall: front door opened, nobody home"]
            await settle()
            assert len(got.texts) == 2
    assert any("rewritten while the monitor was down" in e["event"] for e in logs), logs
    assert source.health().resumed_bytes == log.stat().st_size
    assert record(state)["offset"] == log.stat().st_size


@pytest.mark.parametrize("at", ["a line end", "mid-line"])
async def test_a_record_without_a_fingerprint_resumes_only_at_a_line_end(tmp_path: Path, at: str) -> None:
    # Records written before the fingerprint was kept still load; their offset must at least follow a newline.
    log, state = tmp_path / "a.log", tmp_path / "state"
    log.write_text("kitchen: kettle on\nhall: door opened\n")
    state.mkdir(mode=0o700)
    info = log.stat()
    offset = len("kitchen: kettle on\n") if at == "a line end" else len("kitchen: kettle")
    position_file(state, "tail").write_text(json.dumps(
        {"source": "tail", "path": str(log), "dev": info.st_dev, "ino": info.st_ino, "offset": offset}))
    with capture_logs() as logs:
        async with running(tail(log, state_dir=state)) as got:
            if at == "a line end":
                assert await got.wait_for(1) == ["hall: door opened"]
            else:
                assert await got.wait_for(2) == ["kitchen: kettle on", "hall: door opened"]
            await settle()
            assert len(got.texts) == (1 if at == "a line end" else 2)
    assert any("rewritten while the monitor was down" in e["event"] for e in logs) == (at == "mid-line")
    assert len(record(state)["check"]) == 64


async def test_a_source_run_again_reads_from_its_position_with_a_fresh_parser(tmp_path: Path) -> None:
    # Before: the open 07:00 block the failed run's parser held was closed by the re-read 06:45 line: a block
    # without an observation was emitted, and 07:00's lines were fed twice.
    log, state = tmp_path / "p.log", tmp_path / "state"
    log.write_bytes(b"")
    source, seen = tail(log, "pasbench", state_dir=state, idle_flush_s=None), []

    async def emit(entry: Any) -> None:
        seen.append(entry.behaviour)
        if len(seen) == 1:
            raise RuntimeError("the window refused it")  # while the 07:00 block is held

    first = asyncio.create_task(source.run(emit))
    await settle()
    append(log, "[Time] 06:45 AM\n[Location] Kitchen\n[Behavioral Observation] She fills the kettle.\n"
                "[Time] 07:00 AM\n[Location] Hall\n[Behavioral Observation] She runs.\n")
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(first, 5)
    again = asyncio.create_task(source.run(emit))
    try:
        for _ in range(250):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.02)
        append(log, "[Time] 07:15 AM\n")
        for _ in range(250):
            if len(seen) >= 3:
                break
            await asyncio.sleep(0.02)
        await settle()
    finally:
        again.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await again
    assert seen == ["She fills the kettle.", "She fills the kettle.", "She runs."]


async def test_an_auto_source_resumed_mid_block_keeps_the_format_it_decided(tmp_path: Path) -> None:
    # The backlog cut lands on a block's plain continuation line: before, `auto` decided anew and took the
    # PaSBench log for plain text, for this run and every line after.
    log, state = tmp_path / "p.log", tmp_path / "state"
    log.write_bytes(b"")
    async with running(tail(log, "auto", state_dir=state, idle_flush_s=None)) as got:
        await settle()
        append(log, "[Time] 06:45 AM\n[Location] Kitchen\n[Behavioral Observation] She fills the kettle.\n"
                    "[Time] 06:50 AM\n")
        assert [e.behaviour for e in await got.wait_for_entries(1)] == ["She fills the kettle."]
    assert record(state)["format"] == "pasbench"
    append(log, "[Location] Hall\n[Behavioral Observation]\n")
    tail_part = ("She runs towards the stairs.\n[Time] 07:15 AM\n[Location] Stairs\n"
                 "[Behavioral Observation] She sits on the top step.\n[Time] 07:30 AM\n")
    append(log, tail_part)
    async with running(tail(log, "auto", state_dir=state, idle_flush_s=None,
                            resume_max_bytes=len(tail_part))) as got:
        await settle()
        append(log, "[Location] Landing\n[Behavioral Observation] She stands up.\n[Time] 07:45 AM\n")
        for _ in range(150):
            if "She stands up." in [e.behaviour for e in got.entries]:
                break
            await asyncio.sleep(0.02)
        behaviours = [(e.location, e.behaviour) for e in got.entries]
    assert ("Stairs", "She sits on the top step.") in behaviours, behaviours
    assert ("Landing", "She stands up.") in behaviours, behaviours


async def _record_shows(state: Path, want: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    for _ in range(100):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            if want(found := record(state)):
                return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"the position record never showed it: {record(state)}")


@pytest.mark.parametrize("change", ["rotated", "truncated"])
async def test_a_rotation_or_truncation_in_the_run_is_kept_at_once(tmp_path: Path, change: str) -> None:
    # Before: the old file's position stayed on disk until the next line arrived; a crash meanwhile resumed
    # from it (a truncated file's new content then mid-line, a rotated one's read from its start again).
    log, state = tmp_path / "a.log", tmp_path / "state"
    log.write_bytes(b"")
    async with running(tail(log, state_dir=state)) as got:
        await settle()
        append(log, "a line before the change\n")
        await got.wait_for(1)
        await _record_shows(state, lambda r: r["offset"] == log.stat().st_size)
        if change == "rotated":
            log.rename(tmp_path / "a.log.1")
            log.write_bytes(b"")
        else:
            os.truncate(log, 0)
        ino = log.stat().st_ino
        kept = await _record_shows(state, lambda r: r["offset"] == 0)
        assert kept["ino"] == ino
