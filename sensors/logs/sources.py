"""Async activity-log sources: tail a file, read stdin, replay a whole file.

Every source has one method, `async run(emit)`, which awaits `emit(entry)` for
each parsed entry in order. Bad lines are logged with the source id and line
number and counted in `bad_lines`; they never stop a source. Every text field
of an entry is cut to `max_entry_chars` (marked, logged, counted in
`truncated`), and a line is never held in memory beyond `_MAX_LINE_BYTES`.
Each source exposes `id`, `ended` (True once `run` has returned, failed or was
cancelled: no more entries will come until it is run again), `entries_emitted`,
`bad_lines`, `truncated` and `last_error` (why its last run failed).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal, TypeVar, cast

import structlog

from monitor.core.errors import LogParseError, SensorError
from monitor.core.text import redact_credentials
from sensors.logs.parsers import DEFAULT_MAX_ENTRY_CHARS, Clock, Format, FormatChoice, LogParser, cap_entry
from sensors.logs.position import CHECK_BYTES, Position, PositionStore, fingerprint
from sensors.types import Emit, InputHealth, LogEntry

_READ_CHUNK = 64 * 1024
# A writer that never sends a newline (binary junk, a runaway line) must not grow memory without bound.
_MAX_LINE_BYTES = 1024 * 1024
_STDIN_QUEUE_LINES = 1024
DEFAULT_RESUME_MAX_BYTES = 4 * 1024 * 1024
_T = TypeVar("_T")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").rstrip("\r")


class _LogSource:
    """What the three sources share: the parser, the counters and bad-line handling."""

    def __init__(self, source_id: str, parser_format: FormatChoice, clock: Clock,
                 max_entry_chars: int = DEFAULT_MAX_ENTRY_CHARS) -> None:
        self.id = source_id
        self.ended = False
        self.entries_emitted = 0
        self.bad_lines = 0
        self.truncated = 0
        # A followed file's backlog after a restart: bytes read back, and bytes skipped over resume_max_bytes.
        self.resumed_bytes = 0
        self.skipped_bytes = 0
        self.last_error: str | None = None
        self.max_entry_chars = max_entry_chars
        self._failing = False  # its last run failed, and it has not worked since
        self._format_choice: FormatChoice = parser_format
        self._parser_clock = clock
        self._parser = LogParser(source_id, parser_format, clock=clock)
        self._log: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(source=source_id)

    def _started(self) -> None:
        self.ended = False  # run again after a failure (the pipeline restarts a failed source)

    def _failed(self, exc: Exception) -> None:
        self.last_error = redact_credentials(str(exc))
        self._failing = True

    def _working(self) -> None:
        self._failing = False  # its input opened or loaded again; last_error stays as history

    def _parse(self, line: str, lineno: int) -> list[LogEntry]:
        try:
            return self._parser.feed(line, lineno=lineno)
        except LogParseError as exc:
            self.bad_lines += 1
            self._log.warning("bad log line", line=lineno, error=str(exc))
            return []

    async def _emit_all(self, entries: list[LogEntry], emit: Emit) -> None:
        for entry in entries:
            await emit(self._bounded(entry))
            self.entries_emitted += 1

    def _bounded(self, entry: LogEntry) -> LogEntry:
        capped, cut = cap_entry(entry, self.max_entry_chars)
        if cut:
            self.truncated += 1
            self._log.warning("log entry cut to max_entry_chars", chars_cut=cut, max_entry_chars=self.max_entry_chars,
                              truncated_total=self.truncated)
        return capped

    def health(self) -> InputHealth:
        """Online until the source ends or fails (and until it works again); with its counters and last error."""
        offline = self.ended or self._failing
        return InputHealth(self.id, "offline" if offline else "online", entries=self.entries_emitted,
                           bad_input=self.bad_lines, last_error=self.last_error, truncated=self.truncated,
                           resumed_bytes=self.resumed_bytes, skipped_bytes=self.skipped_bytes)


class _Chunk:
    """One poll of a followed file: new bytes and what happened to the path."""

    __slots__ = ("data", "status")

    def __init__(self, data: bytes, status: Literal["same", "rotated", "truncated", "missing"]) -> None:
        self.data = data
        self.status = status


class FileTailSource(_LogSource):
    """Follow a growing log file like `tail -F`.

    Reads only appends unless `from_start`; waits for the file to appear;
    survives rotation (the path points at a new inode: the old file is read to
    its end, then the new path from its start) and truncation (read again from
    0). Partial lines wait for their newline. When no byte arrives for
    `idle_flush_s`, the pending PaSBench block is emitted, because the last
    block of a live log has no next time line to close it. Runs until cancelled.

    With a `state_dir` (and `resume`), the read position is kept there
    (`sensors.logs.position`) and a start continues where the last run stopped,
    if the file is still the one read there (its identity, its length, the bytes
    before the offset; else it is read from its start), with a fresh parser:
    the lines written while the monitor was down are read, at most the last
    `resume_max_bytes` of them (the older part is skipped, logged and counted in
    `skipped_bytes`; what is read back is counted in `resumed_bytes`).
    """

    def __init__(
        self,
        source_id: str,
        path: Path | str,
        parser_format: FormatChoice = "auto",
        *,
        from_start: bool = False,
        poll_interval_s: float = 0.25,
        idle_flush_s: float | None = 3.0,
        clock: Clock = time.time,
        max_entry_chars: int = DEFAULT_MAX_ENTRY_CHARS,
        state_dir: Path | None = None,
        resume: bool = True,
        resume_max_bytes: int = DEFAULT_RESUME_MAX_BYTES,
    ) -> None:
        super().__init__(source_id, parser_format, clock, max_entry_chars)
        self.path = Path(path)
        self._from_start = from_start
        self._poll_s = poll_interval_s
        self._idle_flush_s = idle_flush_s
        self._partial = b""
        self._skipping = False
        self._lineno = 0
        self._reading: asyncio.Future[Any] | None = None  # a worker thread's read of the open file, until done
        self.resume_max_bytes = resume_max_bytes
        self._store = PositionStore(state_dir, source_id) if state_dir is not None and resume else None
        self._position: Position | None = None  # where the last run stopped (the stored record, then this process's)
        self._loaded = False
        self._identity = (0, 0)  # (st_dev, st_ino) of the open file
        self._read_to = 0  # offset after the last complete line handed to the parser
        self._safe = 0  # offset after the last line nothing waits on in the parser: where a restart resumes
        # The last CHECK_BYTES bytes before _read_to and before _safe: a kept offset's check against the file.
        self._read_tail = self._safe_tail = b""

    async def run(self, emit: Emit) -> None:
        """Emit entries as lines are appended; returns only by cancellation, raises SensorError on a bad path."""
        self._started()
        try:
            await self._follow(emit)
        except Exception as exc:
            self._failed(exc)
            raise
        finally:
            self.ended = True
            if self._store is not None:
                self._note()  # lines handed on since the last chunk ended (a stop or a failure mid-chunk)
                await self._store.close()

    async def _follow(self, emit: Emit) -> None:
        handle = await self._first_open()
        try:
            idle_since = time.monotonic()
            while True:
                chunk = await self._off_loop(self._poll, handle)
                if chunk.data:
                    await self._consume(chunk.data, emit)
                    self._note()
                    idle_since = time.monotonic()
                    continue
                if self._store is not None:
                    self._store.tick()  # the last lines of a burst are written once the throttle allows
                if chunk.status in ("rotated", "truncated"):
                    if chunk.status == "rotated":
                        handle = await self._reopen(handle, emit)
                    else:
                        self._restart(handle)
                    self._note(opened=True)  # kept at once: a crash before the next line must not use the old one
                    continue
                if self._idle_flush_s is not None and time.monotonic() - idle_since >= self._idle_flush_s:
                    await self._emit_all(self._parser.flush(), emit)
                    self._mark_safe()  # nothing waits in the parser any more
                    self._note()
                    idle_since = float("inf")  # once per quiet spell
                await asyncio.sleep(self._poll_s)
        finally:
            _close_when_read(handle, self._reading)

    async def _off_loop(self, work: Callable[[IO[bytes]], _T], handle: IO[bytes]) -> _T:
        """`work(handle)` in a worker thread, remembered until it is done: a run stopped meanwhile must not close
        the handle under the thread (its descriptor could be reused by another open and read from)."""
        job = asyncio.ensure_future(asyncio.to_thread(work, handle))
        self._reading = job
        result = await asyncio.shield(job)
        self._reading = None
        return result

    async def _first_open(self) -> IO[bytes]:
        """Open the file where the last run stopped, if a position is kept for this path; else as always."""
        if self._store is not None and not self._loaded:
            self._position = await asyncio.to_thread(self._store.load)
            self._loaded = True  # only once loaded: a run stopped during the load loads it again
            if self._position is not None and self._position.path != str(self.path):
                self._log.info("log position was kept for another path; not resuming", path=str(self.path),
                               kept_for=self._position.path)
        saved = self._position if self._store is not None else None
        if saved is None or saved.path != str(self.path):
            handle = await self._open(at_end=not self._from_start)
        else:
            handle = await self._open(at_end=False, kept=saved)
        self._note(opened=True)  # kept at once: a quiet log must resume from here too
        return handle

    def _place(self, handle: IO[bytes], at_end: bool, kept: Position | None) -> _Placed:
        """Runs in a worker thread: where to read from (the kept position, the end or the start). Changes
        nothing of the source: a run stopped meanwhile must leave the position as it was."""
        info = os.fstat(handle.fileno())
        placed = _Placed((info.st_dev, info.st_ino), info.st_size if at_end else 0)
        if kept is not None:
            resumed = self._resume(handle, info, kept)
            start = placed.offset = resumed if resumed is not None else 0
            placed.continued = resumed is not None
            if info.st_size - start > self.resume_max_bytes:
                placed.offset, placed.skipping = self._skip_backlog(handle, start, info.st_size)
                placed.skipped = placed.offset - start
            placed.backlog = info.st_size - placed.offset
        placed.before = _bytes_before(handle, placed.offset)
        handle.seek(placed.offset)
        return placed

    def _resume(self, handle: IO[bytes], info: os.stat_result, kept: Position) -> int | None:
        """Runs in a worker thread: the kept offset, or None (read from the start) when the file is not the one
        it was kept in."""
        if (info.st_dev, info.st_ino) != (kept.dev, kept.ino):
            self._log.warning("log file replaced while the monitor was down; reading the new file from its start "
                              "(the old file's tail may have been missed)", path=str(self.path))
            return None
        if info.st_size < kept.offset:
            self._log.warning("log file truncated while the monitor was down; reading it from its start",
                              path=str(self.path), offset_kept=kept.offset, size=info.st_size)
            return None
        if not kept.matches(_bytes_before(handle, kept.offset)):
            # Truncated and written past the offset (copytruncate), or a new file with the old inode number.
            self._log.warning("log file rewritten while the monitor was down (the bytes before the kept offset are "
                              "not the ones read); reading it from its start", path=str(self.path),
                              offset_kept=kept.offset, checked="fingerprint" if kept.check else "line end only")
            return None
        return kept.offset

    def _skip_backlog(self, handle: IO[bytes], start: int, size: int) -> tuple[int, bool]:
        """Where the last `resume_max_bytes` of the backlog begin, at a line boundary, and whether that is inside
        a line longer than the read limit (its rest is then skipped as always)."""
        cut = size - self.resume_max_bytes
        handle.seek(cut - 1)
        newline = handle.read(_MAX_LINE_BYTES).find(b"\n")
        if newline >= 0:
            cut += newline  # just after the newline at cut - 1 + newline
        self._log.warning("log backlog larger than resume_max_bytes; its oldest part skipped", path=str(self.path),
                          skipped_bytes=cut - start, resume_max_bytes=self.resume_max_bytes,
                          skipped_total=self.skipped_bytes + cut - start)
        return cut, newline < 0

    def _fresh_parser(self, decided: Format | None) -> LogParser:
        """A parser for reading from a kept position: with `auto`, in the format decided before, if any (a resume
        can start inside a block, whose stray line would decide anew, wrongly)."""
        fmt = decided if self._format_choice == "auto" and decided is not None else self._format_choice
        return LogParser(self.id, fmt, clock=self._parser_clock)

    def _note(self, *, opened: bool = False) -> None:
        """Remember (and, throttled, keep) the position a restart would resume from."""
        if self._store is None or self._identity == (0, 0):
            return  # no file opened yet: nothing read, nothing to keep
        self._position = Position(str(self.path), self._identity[0], self._identity[1], self._safe,
                                  fingerprint(self._safe_tail), self._parser.format)
        if opened:
            self._store.opened(self._position)
        else:
            self._store.note(self._position)

    async def _open(self, *, at_end: bool, kept: Position | None = None) -> IO[bytes]:
        """Open the path, waiting for it to exist; then read from `kept` (or what is left of it), from the end
        (`at_end`: skip what is already there) or from the start. The source's position changes only once
        that is done; a handle whose run was stopped or failed meanwhile is closed."""
        waiting_logged = False
        while True:
            try:
                handle = await _in_thread(_close_opened, _open_unbuffered, self.path)
            except FileNotFoundError:
                if not waiting_logged:
                    self._log.info("waiting for log file", path=str(self.path))
                    waiting_logged = True
                at_end = False  # a file that appears later is new: read all of it
                await asyncio.sleep(self._poll_s)
                continue
            except OSError as exc:
                # A folder, a symlink loop, no permission: the pipeline marks the source failed and retries.
                raise SensorError(f"log source '{self.id}': cannot open {self.path}: {exc.strerror or exc}") from exc
            placed = await _in_thread(_closing(handle), self._place, handle, at_end, kept)
            self._identity = placed.identity
            self._read_to = self._safe = placed.offset
            self._read_tail = self._safe_tail = placed.before
            self._lineno = 0
            if kept is not None:
                self._partial, self._skipping = b"", placed.skipping  # what a failed run held is read again
                # ...and so are the lines its parser held: a parser still holding them would emit them twice
                self._parser = self._fresh_parser(kept.format if placed.continued else None)
                self.resumed_bytes += placed.backlog
                self.skipped_bytes += placed.skipped
                self._log.info("resuming log", path=str(self.path), offset=placed.offset,
                               backlog_bytes=placed.backlog)
            self._working()
            return handle

    def _poll(self, handle: IO[bytes]) -> _Chunk:
        """Runs in a worker thread: one read, and a look at the path when there is nothing new."""
        data = handle.read(_READ_CHUNK)
        if data:
            return _Chunk(data, "same")
        try:
            on_path = os.stat(self.path)
        except FileNotFoundError:
            return _Chunk(b"", "missing")  # renamed away, the new file not created yet
        mine = os.fstat(handle.fileno())
        if (on_path.st_ino, on_path.st_dev) != (mine.st_ino, mine.st_dev):
            return _Chunk(b"", "rotated")
        if mine.st_size < handle.tell():
            return _Chunk(b"", "truncated")
        return _Chunk(b"", "same")

    async def _reopen(self, old: IO[bytes], emit: Emit) -> IO[bytes]:
        # Whatever the writer appended before it switched files still belongs to the stream.
        while data := await self._off_loop(_read_chunk, old):
            await self._consume(data, emit)
        if self._partial:
            # The old file is finished: its last line is complete.
            await self._line(self._partial, emit, consumed=len(self._partial), last=self._partial[-CHECK_BYTES:])
            self._partial = b""
        old.close()
        self._log.info("log file rotated", path=str(self.path))
        return await self._open(at_end=False)

    def _restart(self, handle: IO[bytes]) -> None:
        self._log.info("log file truncated", path=str(self.path))
        handle.seek(0)
        self._partial = b""  # the half line it belonged to has been overwritten
        self._skipping = False
        self._lineno = 0
        self._read_to = self._safe = 0
        self._read_tail = self._safe_tail = b""

    async def _consume(self, data: bytes, emit: Emit) -> None:
        if self._skipping:  # the rest of a line longer than _MAX_LINE_BYTES
            newline = data.find(b"\n")
            if newline < 0:
                self._advance(len(data), data[-CHECK_BYTES:])
                return
            self._advance(newline + 1, data[max(0, newline + 1 - CHECK_BYTES) : newline + 1])
            data, self._skipping = data[newline + 1 :], False
            if not self._parser.holding:
                self._mark_safe()
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            await self._line(line, emit, consumed=len(line) + 1, last=line[-CHECK_BYTES:] + b"\n")
        if len(self._partial) > _MAX_LINE_BYTES:
            self._log.warning("log line longer than the read limit; its start is used, the rest skipped",
                              path=str(self.path), line=self._lineno + 1, limit_bytes=_MAX_LINE_BYTES)
            safe = self._safe, self._safe_tail  # a restart reads the cut line again rather than its rest alone
            await self._line(self._partial[:_MAX_LINE_BYTES], emit, consumed=len(self._partial),
                             last=self._partial[-CHECK_BYTES:])
            self._safe, self._safe_tail = safe
            self._partial, self._skipping = b"", True

    async def _line(self, data: bytes, emit: Emit, *, consumed: int, last: bytes) -> None:
        """Hand one line (`consumed` bytes of the file ending in `last`, its newline included) to the parser and
        emit what it made."""
        self._lineno += 1
        entries = self._parse(_decode(data), self._lineno)
        await self._emit_all(entries, emit)
        before = self._read_to, self._read_tail
        self._advance(consumed, last)
        if not self._parser.holding:
            self._mark_safe()
        elif entries:
            self._safe, self._safe_tail = before  # this line closed the held entry and opened the next: read again

    def _advance(self, consumed: int, last: bytes) -> None:
        """`consumed` more bytes were read, ending in `last` (at least their last CHECK_BYTES bytes)."""
        self._read_to += consumed
        self._read_tail = (self._read_tail + last)[-CHECK_BYTES:]

    def _mark_safe(self) -> None:
        self._safe, self._safe_tail = self._read_to, self._read_tail


def _open_unbuffered(path: Path) -> IO[bytes]:
    # Unbuffered, so a read at EOF asks the OS again next time instead of trusting a cached EOF.
    return open(path, "rb", buffering=0)


@dataclass(slots=True)
class _Placed:
    """Where a file just opened is read from: its identity and offset, and the backlog a resume found."""

    identity: tuple[int, int]
    offset: int
    backlog: int = 0
    skipped: int = 0
    skipping: bool = False  # the offset is inside a line longer than the read limit
    before: bytes = b""  # the (up to) CHECK_BYTES bytes before the offset
    continued: bool = False  # in the file the position was kept in (not read again from its start)


def _bytes_before(handle: IO[bytes], offset: int) -> bytes:
    """The (up to) CHECK_BYTES bytes of the file just before `offset`; the handle's position is not moved."""
    size = min(CHECK_BYTES, offset)
    return os.pread(handle.fileno(), size, offset - size) if size else b""


async def _in_thread(abandoned: Callable[[asyncio.Future[_T]], None], work: Callable[..., _T], *args: object) -> _T:
    """`work(*args)` in a worker thread. A thread cannot be cancelled: when the run is stopped (or the work
    fails), `abandoned` gets the work's future once the thread is done, to close what it opened or used."""
    job = asyncio.ensure_future(asyncio.to_thread(work, *args))
    try:
        return await asyncio.shield(job)
    except BaseException:
        job.add_done_callback(abandoned)
        raise


def _read_chunk(handle: IO[bytes]) -> bytes:
    return handle.read(_READ_CHUNK) or b""


def _close_when_read(handle: IO[bytes], reading: asyncio.Future[Any] | None) -> None:
    """Close `handle` now, or once the worker thread still reading it is done."""
    if reading is None or reading.done():
        handle.close()
        return

    def close(job: asyncio.Future[Any]) -> None:
        if not job.cancelled():
            job.exception()  # retrieved: the run that wanted it has already stopped
        handle.close()
    reading.add_done_callback(close)


def _close_opened(job: asyncio.Future[IO[bytes]]) -> None:
    if not job.cancelled() and job.exception() is None:
        job.result().close()


def _closing(handle: IO[bytes]) -> Callable[[asyncio.Future[_Placed]], None]:
    def close(job: asyncio.Future[_Placed]) -> None:
        if not job.cancelled():
            job.exception()  # retrieved: the run that wanted it has already failed or stopped
        handle.close()
    return close


class StdinSource(_LogSource):
    """Read log lines from standard input (or any binary stream) until EOF.

    A daemon thread does the blocking reads, so a stdin that never closes
    cannot hold up shutdown; a bounded queue gives the writer back-pressure.
    At EOF the parser is flushed and `run` returns. The thread outlives a failed
    run: the run after it goes on from its queue (a second thread on the same
    stream would take lines into a queue nobody reads).
    """

    def __init__(
        self,
        source_id: str,
        parser_format: FormatChoice = "auto",
        *,
        stream: IO[bytes] | None = None,
        clock: Clock = time.time,
        max_entry_chars: int = DEFAULT_MAX_ENTRY_CHARS,
    ) -> None:
        super().__init__(source_id, parser_format, clock, max_entry_chars)
        self._stream = stream
        self._feed: _StdinFeed | None = None
        self._lineno = 0

    async def run(self, emit: Emit) -> None:
        """Emit entries for each line read; return at end of input."""
        self._started()
        try:
            await self._read(emit)
        except Exception as exc:
            self._failed(exc)
            raise
        finally:
            self.ended = True

    async def _read(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        if self._feed is None or self._feed.loop is not loop:
            stream = self._stream if self._stream is not None else sys.stdin.buffer
            self._feed = _StdinFeed(stream, loop, f"stdin-{self.id}")
        feed = self._feed
        while (data := await feed.queue.get()) is not None:
            feed.room.release()
            self._lineno += 1
            await self._emit_all(self._parse(_decode(data.rstrip(b"\n")), self._lineno), emit)
        self._feed = None  # its thread has ended at EOF
        await self._emit_all(self._parser.flush(), emit)


class _StdinFeed:
    """A stdin source's reader thread and the queue it fills, kept across the source's runs on one loop."""

    def __init__(self, stream: IO[bytes], loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        # Bounded by `room`, taken by the reader thread before each line: the queue itself never blocks.
        self.room = threading.Semaphore(_STDIN_QUEUE_LINES)
        threading.Thread(target=_pump, args=(stream, self.queue, self.room, loop), name=name, daemon=True).start()


def _bounded_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream's lines, each at most _MAX_LINE_BYTES: of a longer line only its start, the rest skipped."""
    read = _chunk_reader(stream)
    partial, skipping = b"", False
    while chunk := read(_READ_CHUNK):
        *lines, partial = (partial + chunk).split(b"\n")
        for line in lines:
            if skipping:  # the end of a line already cut
                skipping = False
                continue
            yield line + b"\n"
        if len(partial) > _MAX_LINE_BYTES:
            if not skipping:
                yield partial[:_MAX_LINE_BYTES]
            partial, skipping = b"", True
    if partial and not skipping:
        yield partial


def _chunk_reader(stream: IO[bytes]) -> Callable[[int], bytes | None]:
    # The raw file under sys.stdin.buffer: a thread blocked in a buffered read holds the buffer's lock,
    # and the interpreter aborts at exit ("could not acquire lock ... at interpreter shutdown").
    raw = getattr(stream, "raw", None)
    if raw is not None:
        return cast(Callable[[int], bytes | None], raw.read)
    return cast(Callable[[int], bytes | None], getattr(stream, "read1", stream.read))


def _pump(stream: IO[bytes], queue: asyncio.Queue[bytes | None], room: threading.Semaphore,
          loop: asyncio.AbstractEventLoop) -> None:
    """Thread body: move lines from a blocking stream into the loop's queue; None marks EOF.

    A line is handed over with `call_soon_threadsafe` and not waited for: waiting on the loop
    for every line woke this thread in the middle of the loop's work on that very line.
    `room` holds the thread back while the queue is full.
    """
    try:
        for line in _bounded_lines(stream):
            while not room.acquire(timeout=1.0):
                if loop.is_closed():
                    return  # nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, line)
    except (OSError, ValueError) as exc:  # closed or broken stream: treat as the end
        structlog.get_logger().warning("stdin read failed", error=str(exc))
    except RuntimeError:
        return  # the loop is gone: nobody is listening any more
    try:
        loop.call_soon_threadsafe(queue.put_nowait, None)
    except RuntimeError:
        return


def _no_clock() -> float:
    return 0.0


class ReplayFileSource(_LogSource):
    """Replay a recorded log file as a live stream.

    Parses the whole file first, then emits the entries one by one,
    `interval_s / speed` seconds apart (speed 0: as fast as possible), each
    stamped with the clock at the moment it is emitted. Returns when done.
    """

    def __init__(
        self,
        source_id: str,
        path: Path | str,
        parser_format: FormatChoice = "auto",
        *,
        interval_s: float = 2.0,
        speed: float = 1.0,
        clock: Clock = time.time,
        max_entry_chars: int = DEFAULT_MAX_ENTRY_CHARS,
    ) -> None:
        if speed < 0 or interval_s < 0:
            raise ValueError(f"replay source '{source_id}': speed and interval_s must be >= 0")
        # Parse-time stamps are replaced at emission, so the caller's clock is read once per entry.
        super().__init__(source_id, parser_format, _no_clock, max_entry_chars)
        self.path = Path(path)
        self._delay = interval_s / speed if speed > 0 else 0.0
        self._clock = clock

    async def run(self, emit: Emit) -> None:
        """Emit every entry of the file, paced; raises SensorError if it cannot be read."""
        self._started()
        try:
            entries = await asyncio.to_thread(self._load)
            self._working()
            for index, entry in enumerate(entries):
                await self._pause(first=index == 0)
                await self._emit_all([replace(entry, ts=self._clock())], emit)
        except Exception as exc:
            self._failed(exc)
            raise
        finally:
            self.ended = True

    async def _pause(self, *, first: bool) -> None:
        if self._delay > 0 and not first:
            await asyncio.sleep(self._delay)
        else:
            await asyncio.sleep(0)  # as fast as possible, but let the rest of the loop run

    def _load(self) -> list[LogEntry]:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise SensorError(f"replay source '{self.id}': cannot read {self.path}: {exc.strerror or exc}") from exc
        entries: list[LogEntry] = []
        for lineno, line in enumerate(data.split(b"\n"), start=1):
            entries.extend(self._parse(_decode(line[:_MAX_LINE_BYTES]), lineno))
        return entries + self._parser.flush()
