"""Log sources against real files and pipes: tail (appends, partial lines, rotation, truncation), stdin, replay."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.core.errors import SensorError
from sensors.logs import FileTailSource, ReplayFileSource, StdinSource
from sensors.types import LogEntry

POLL = 0.01
PASBENCH_LOG = """[LOG START]
[Time] 06:45 AM
[Location] Kitchen
[Environmental Observation] Gas stove on.
[Behavioral Observation] She fills the kettle.
[Time] 07:00 AM
[Location] Hall
[Environmental Observation] Wet floor.
[Behavioral Observation] She runs.
[LOG END]
"""


class Collector:
    """An `emit` callback that records entries and lets a test wait for a count."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    async def __call__(self, entry: LogEntry) -> None:
        self.entries.append(entry)

    @property
    def texts(self) -> list[str]:
        return [entry.text for entry in self.entries]

    async def wait_for(self, count: int, timeout: float = 3.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.entries) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout} s for {count} entries, got {self.texts}")
            await asyncio.sleep(POLL)
        return self.texts

    async def wait_for_entries(self, count: int, timeout: float = 3.0) -> list[LogEntry]:
        await self.wait_for(count, timeout)
        return self.entries


@contextlib.asynccontextmanager
async def running(source: FileTailSource) -> AsyncIterator[Collector]:
    collector = Collector()
    task = asyncio.create_task(source.run(collector))
    try:
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert source.ended


def append(path: Path, data: str | bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def tail(path: Path, fmt: str = "text", **kwargs: object) -> FileTailSource:
    return FileTailSource("tail", path, fmt, poll_interval_s=POLL, **kwargs)  # type: ignore[arg-type]


async def settle() -> None:
    """Long enough for a few polls, so the source has seen the current state of the file."""
    await asyncio.sleep(POLL * 8)


# --------------------------------------------------------------------------- FileTailSource


async def test_tail_follows_appends_and_skips_old_content(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("old line\n")
    source = tail(log)
    async with running(source) as got:
        await settle()
        append(log, "one\ntwo\n")
        assert await got.wait_for(2) == ["one", "two"]
        append(log, "three\n")
        assert await got.wait_for(3) == ["one", "two", "three"]
    assert source.entries_emitted == 3 and source.bad_lines == 0 and source.id == "tail"


async def test_a_stopped_tail_closes_its_file_only_once_the_read_in_its_thread_is_done(tmp_path: Path) -> None:
    """A thread cannot be cancelled: closing the file under its read frees the descriptor for another open,
    and the late read would then take bytes from whatever file got that number."""
    import threading

    log = tmp_path / "a.log"
    log.write_text("old line\n")
    source = tail(log)
    in_read, release = threading.Event(), threading.Event()
    closed_during_read: list[bool] = []
    poll = source._poll

    def slow_poll(handle: Any) -> Any:
        in_read.set()
        release.wait(5)
        closed_during_read.append(handle.closed)
        return poll(handle)

    source._poll = slow_poll  # type: ignore[method-assign]
    task = asyncio.create_task(source.run(Collector()))
    await asyncio.to_thread(in_read.wait, 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    release.set()
    deadline = time.monotonic() + 5
    while not closed_during_read and time.monotonic() < deadline:
        await asyncio.sleep(POLL)
    assert closed_during_read == [False]
    await asyncio.sleep(POLL)  # the done callback runs on the loop once the thread has finished
    assert source.ended and not [fd for fd in os.listdir("/proc/self/fd")
                                 if os.path.realpath(f"/proc/self/fd/{fd}") == str(log.resolve())]


async def test_tail_from_start_reads_existing_content(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("old line\n")
    async with running(tail(log, from_start=True)) as got:
        assert await got.wait_for(1) == ["old line"]


async def test_tail_buffers_a_partial_line_until_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    async with running(tail(log)) as got:
        await settle()
        # The UTF-8 sequence of "é" is cut in two, as a writer flushing mid-character would.
        append(log, b"caf\xc3")
        await settle()
        assert got.texts == []
        append(log, b"\xa9 au lait\nbad \xff byte\n")
        assert await got.wait_for(2) == ["café au lait", "bad \ufffd byte"]


async def test_tail_survives_rotation(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    async with running(tail(log)) as got:
        await settle()
        append(log, "before\n")
        await got.wait_for(1)
        log.rename(tmp_path / "a.log.1")
        # The writer still holds the old file and finishes its last line there; the partial last
        # line counts as complete once the old file is left behind.
        append(tmp_path / "a.log.1", "late in old\nno newline")
        log.write_text("new file\n")
        assert await got.wait_for(4) == ["before", "late in old", "no newline", "new file"]
        append(log, "more\n")
        assert await got.wait_for(5) == ["before", "late in old", "no newline", "new file", "more"]


async def test_tail_waits_while_the_rotated_path_is_missing(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    async with running(tail(log)) as got:
        await settle()
        log.rename(tmp_path / "a.log.1")
        await settle()
        append(tmp_path / "a.log.1", "still old\n")
        assert await got.wait_for(1) == ["still old"]
        log.write_text("new\n")
        assert await got.wait_for(2) == ["still old", "new"]


async def test_tail_rereads_a_truncated_file(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    async with running(tail(log)) as got:
        await settle()
        append(log, "a fairly long first line\nsecond\n")
        await got.wait_for(2)
        with log.open("wb") as handle:  # truncate in place (same inode), as copytruncate does
            handle.truncate(0)
        await settle()
        append(log, "after\n")
        assert await got.wait_for(3) == ["a fairly long first line", "second", "after"]


async def test_tail_waits_for_the_file_to_appear(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    async with running(tail(log)) as got:
        await settle()
        # A file that appears after the start is new: all of it is read, even without from_start.
        log.write_text("first\n")
        assert await got.wait_for(1) == ["first"]
        append(log, "second\n")
        assert await got.wait_for(2) == ["first", "second"]


async def test_tail_counts_bad_jsonl_lines_and_carries_on(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    log.write_bytes(b"")
    source = tail(log, "jsonl")
    async with running(source) as got:
        await settle()
        append(log, json.dumps({"text": "one"}) + "\n{oops\n" + json.dumps({"text": "three"}) + "\n")
        assert await got.wait_for(2) == ["one", "three"]
    assert source.bad_lines == 1 and source.entries_emitted == 2


async def test_tail_emits_the_last_pasbench_block_when_the_writer_goes_quiet(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    log.write_bytes(b"")
    async with running(tail(log, "pasbench", idle_flush_s=0.1)) as got:
        await settle()
        append(log, PASBENCH_LOG.replace("[LOG END]\n", ""))
        await got.wait_for(1)
        await got.wait_for(2)  # no next block, no [LOG END]: only the quiet spell closes it
        assert [entry.behaviour for entry in got.entries] == ["She fills the kettle.", "She runs."]


async def test_tail_of_a_directory_is_a_sensor_error(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="tail"):
        await tail(tmp_path).run(Collector())


# --------------------------------------------------------------------------- StdinSource


async def test_stdin_source_reads_a_pipe_until_eof() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as stream:
        source = StdinSource("stdin", "auto", stream=stream)
        collector = Collector()
        task = asyncio.create_task(source.run(collector))
        with os.fdopen(write_fd, "wb") as writer:
            writer.write(PASBENCH_LOG.replace("[LOG END]\n", "").encode())
            writer.flush()
            await collector.wait_for(1)
            assert not source.ended
        await asyncio.wait_for(task, 3.0)  # EOF flushes the last block and ends the source
    assert [entry.clock for entry in collector.entries] == ["06:45 AM", "07:00 AM"]
    assert source.ended and source.entries_emitted == 2 and source.bad_lines == 0


async def test_stdin_source_run_again_after_a_failure_gets_every_later_line() -> None:
    # The first run's reader thread is blocked in a read when the run fails; the pipeline runs the
    # source again. A second reader thread on the same stream took every other line into a dead queue.
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as stream, os.fdopen(write_fd, "wb") as writer:
        source = StdinSource("stdin", "jsonl", stream=stream)

        async def fail(entry: LogEntry) -> None:
            raise RuntimeError("emit failed")

        writer.write(b'{"text": "line 0", "ts": 1}\n')
        writer.flush()
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(source.run(fail), 3.0)
        collector = Collector()
        task = asyncio.create_task(source.run(collector))
        for i in range(1, 11):
            writer.write(f'{{"text": "line {i}", "ts": 1}}\n'.encode())
            writer.flush()
            await collector.wait_for(i)
        writer.close()
        await asyncio.wait_for(task, 3.0)
    assert collector.texts == [f"line {i}" for i in range(1, 11)] and source.ended


# --------------------------------------------------------------------------- ReplayFileSource


def write_log(tmp_path: Path, lines: int) -> Path:
    log = tmp_path / "r.jsonl"
    log.write_text("".join(json.dumps({"text": f"line {i}", "ts": 1}) + "\n" for i in range(lines)) + "{bad\n")
    return log


def ticking_clock() -> Callable[[], float]:
    ticks = iter(range(1000))
    return lambda: float(next(ticks))


async def test_replay_as_fast_as_possible(tmp_path: Path) -> None:
    source = ReplayFileSource("r", write_log(tmp_path, 200), "auto", speed=0, clock=ticking_clock())
    collector = Collector()
    started = time.monotonic()
    await source.run(collector)
    assert time.monotonic() - started < 2.0
    assert collector.texts == [f"line {i}" for i in range(200)]
    # Replay stamps each entry when it is emitted, not with the time recorded in the file.
    assert [entry.ts for entry in collector.entries[:3]] == [0.0, 1.0, 2.0]
    assert source.ended and source.entries_emitted == 200 and source.bad_lines == 1


@pytest.mark.parametrize(("interval", "speed"), [(0.05, 1.0), (0.1, 2.0)])
async def test_replay_paces_entries(tmp_path: Path, interval: float, speed: float) -> None:
    source = ReplayFileSource("r", write_log(tmp_path, 4), "jsonl", interval_s=interval, speed=speed)
    arrivals: list[float] = []

    async def emit(entry: LogEntry) -> None:
        arrivals.append(time.monotonic())

    await source.run(emit)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert len(gaps) == 3
    assert all(0.04 <= gap < 0.5 for gap in gaps), gaps


async def test_replay_of_a_missing_file_is_a_sensor_error(tmp_path: Path) -> None:
    source = ReplayFileSource("r", tmp_path / "nope.log", "auto", speed=0)
    with pytest.raises(SensorError, match=r"nope\.log"):
        await source.run(Collector())
    assert source.ended


def test_replay_rejects_negative_speed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="speed"):
        ReplayFileSource("r", tmp_path / "x", "auto", speed=-1)
