"""The history folder: one JSON-lines file per UTC day, recorded frames beside them, retention and purge.

```
<history>/2026-01-03.jsonl                       records of that day, one per line, appended
<history>/frames/2026-01-03/<zone>/<sha256>.jpg  keyframes sent that day (history.record_frames)
<history>/.lock                                  appends share it; purges and retention take it alone
```

Folders are 0700 and files 0600: the history holds what happened in a home. Every
append opens the day file, writes one line and closes it under a shared lock, so
`monitor history purge` (run by a person while the daemon writes) can rewrite a
file under the exclusive lock without losing a line appended meanwhile. No
symlink is followed: the folder must be the monitor's own, and a link planted in
place of a day file or the lock is moved aside (logged) before anything is written.

`history.max_mb` bounds the whole folder, today included: when older days and
frames are gone and today's records alone exceed it, today's oldest records are
cut from the head of its file (whole lines, rewritten atomically) down to
`_TRIM_TO` of the limit, so the newest records stay and a trim is rare.

Methods block (file I/O); the daemon calls them from its recorder's writer thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from monitor.core.errors import MonitorError
from monitor.core.files import (
    UnsafePathError,
    after_last_newline,
    append_whole,
    create_exclusive,
    open_append,
    open_nofollow,
    refuse_link,
    repair_torn_tail,
    replace_file,
    trusted_dir,
)
from monitor.core.files import private_dir as _private_dir
from monitor.core.jsonio import MAX_LINE_BYTES, loads_bounded
from monitor.core.statefile import move_aside
from monitor.history.times import utc_day

log = structlog.get_logger("monitor.history")

DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")
FRAMES = "frames"
_LOCK = ".lock"
_DAY_S = 86400.0
_TRIM_TO = 0.8  # a trim of today's file keeps this share of history.max_mb: room for the next records
_COPY_CHUNK = 1024 * 1024
# Selects the records a rewrite drops.
_Predicate = Callable[[dict[str, Any]], bool]


class HistoryError(MonitorError):
    """The history folder cannot be read or written; names the path."""


@dataclass
class Purged:
    """What a purge or a retention pass removed."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    frames: int = 0
    bytes: int = 0
    unreadable_kept: int = 0
    remaining: int = 0  # bytes of the folder after a retention pass

    def summary(self, *, dry_run: bool = False) -> str:
        verb = "would be removed" if dry_run else "removed"
        text = (f"{self.records} records and {self.frames} frames {verb} ({self.bytes / 1e6:.1f} MB, "
                f"{len(self.files)} files or folders)")
        if self.unreadable_kept:
            text += f"; {self.unreadable_kept} unreadable lines kept (their zone and time cannot be read)"
        return text


def day_start(day: str) -> float:
    """Seconds since the epoch at 00:00 UTC of a `YYYY-MM-DD` day."""
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) 0700 when missing; UnsafePathError when it is a symlink or not a folder."""
    _private_dir(path)
    refuse_link(path, kind="folder")
    return path


_REPAIRED: set[Path] = set()


def append_private(path: Path, text: str) -> None:
    """Append `text` (one or more whole lines) to `path`, created 0600: whole or not at all.

    A line torn by an earlier crash or full disk is cut back once per file and process, so
    every line a reader meets is a complete record.
    """
    if path not in _REPAIRED:
        if removed := repair_torn_tail(path):
            log.warning("history: cut a torn last line left by an interrupted write", path=str(path),
                        bytes_removed=removed)
        _REPAIRED.add(path)
    fd = open_append(path)
    try:
        append_whole(fd, text.encode("utf-8", "replace"), fsync=False)
    finally:
        os.close(fd)


class HistoryFiles:
    """The files of one history folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._measured: int | None = None  # bytes of the folder at the last retention pass
        self._grown = 0  # bytes written since

    def over(self, max_bytes: float) -> bool:
        """True when what was written since the last retention pass may have taken the folder over `max_bytes`
        (or there was no pass yet)."""
        return self._measured is None or self._measured + self._grown > max_bytes

    # -- writing ---------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the folder (0700) if needed and check it is the monitor's own; HistoryError naming it if not."""
        try:
            # Any owner: `monitor history purge` runs as root on the service's folder; the daemon checks the
            # owner at start (monitor.daemon.statedir).
            trusted_dir(self.folder, what="the history folder", setting="history.path", any_owner=True)
        except UnsafePathError as exc:
            raise HistoryError(f"history folder unsafe: {exc}") from None
        except OSError as exc:
            raise HistoryError(f"history folder {self.folder}: cannot create: {exc.strerror or exc} (check "
                               "service.state_dir and history.path, or set history.enabled = false)") from None

    def day_file(self, day: str) -> Path:
        return self.folder / f"{day}.jsonl"

    def append(self, day: str, line: str) -> None:
        """Append one record line to the day's file (under the shared lock)."""
        path = self.day_file(day)
        with self.locked(exclusive=False):
            try:
                append_private(path, line)
            except UnsafePathError as exc:  # a planted link: moved aside, never written through
                move_aside(path, exc.problem, what="history day file")
                append_private(path, line)
        self._grown += len(line.encode("utf-8", "replace"))

    def frame_path(self, day: str, zone: str, digest: str) -> Path:
        return self.folder / FRAMES / day / zone / f"{digest}.jpg"

    def keep_frame(self, day: str, zone: str, digest: str, jpeg: bytes) -> None:
        """Store one keyframe (content-addressed: a frame sent again is stored once per day and zone)."""
        path = self.frame_path(day, zone, digest)
        if os.path.lexists(path):
            return
        for folder in (self.folder / FRAMES, path.parent.parent, path.parent):
            private_dir(folder)
        replace_file(path, jpeg, durable=False)
        self._grown += len(jpeg)

    @contextlib.contextmanager
    def locked(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the folder's lock: shared for appends, exclusive to rewrite or delete."""
        self.ensure()
        fd = self._open_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _open_lock(self) -> int:
        path = self.folder / _LOCK
        try:
            return open_nofollow(path, os.O_RDWR | os.O_CREAT)
        except UnsafePathError as exc:
            move_aside(path, exc.problem, what="history lock file")
            return open_nofollow(path, os.O_RDWR | os.O_CREAT)

    # -- reading ---------------------------------------------------------------------------
    def days(self) -> list[str]:
        """The days that have a record file, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(m.group(1) for p in self.folder.iterdir() if (m := DAY_FILE.match(p.name)))

    def frame_days(self) -> list[str]:
        folder = self.folder / FRAMES
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir())

    def size(self) -> int:
        """Bytes of every file in the folder."""
        total = 0
        for root, _dirs, names in os.walk(self.folder):
            for name in names:
                with contextlib.suppress(OSError):  # a link counts as itself, never as what it names
                    total += os.lstat(os.path.join(root, name)).st_size
        return total

    # -- retention --------------------------------------------------------------------------
    def enforce(self, *, max_age_s: float, frames_max_age_s: float, max_bytes: float,
                now: float | None = None) -> Purged:
        """Delete days older than the age limits, then the oldest frames and days while over `max_bytes`,
        then, if today's records alone exceed it, today's oldest records."""
        now = time.time() if now is None else now
        purged = Purged()
        with self.locked(exclusive=True):
            for day in self.days():
                if day_start(day) + _DAY_S <= now - max_age_s:
                    self._remove_day(day, purged)
            for day in self.frame_days():
                if day_start(day) + _DAY_S <= now - frames_max_age_s:
                    self._remove_frames(day, purged)
            purged.remaining = self._within_size(max_bytes, utc_day(now), purged)
        self._measured, self._grown = purged.remaining, 0
        return purged

    def _within_size(self, max_bytes: float, today: str, purged: Purged) -> int:
        """Remove the oldest until the folder fits `max_bytes`; returns its size then."""
        total = self.size()
        while total > max_bytes:
            frame_days, days = self.frame_days(), [d for d in self.days() if d != today]
            before = purged.bytes
            if frame_days:
                self._remove_frames(frame_days[0], purged)
            elif days:
                self._remove_day(days[0], purged)
            else:
                self._trim_head(today, total - max_bytes * _TRIM_TO, purged)
                if purged.bytes == before:
                    return total  # nothing more to remove (only the newest record is left)
            total -= purged.bytes - before
        return total

    def _trim_head(self, day: str, excess: float, purged: Purged) -> None:
        """Cut today's oldest records (whole lines) worth at least `excess` bytes; the newest record always stays."""
        path = self.day_file(day)
        try:
            fd = open_nofollow(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "rb") as source:
            size = source.seek(0, os.SEEK_END)
            cut, removed = _cut_point(source, excess, after_last_newline(source, size - 1))
            if cut <= 0:
                return
            temporary = path.with_name(f".{path.name}.tmp")
            with os.fdopen(create_exclusive(temporary), "wb") as target:
                source.seek(cut)
                while chunk := source.read(_COPY_CHUNK):
                    target.write(chunk)
        os.replace(temporary, path)
        purged.records += removed
        purged.bytes += cut
        purged.files.append(str(path))
        log.warning("history over its size limit within one day: today's oldest records removed",
                    path=str(path), records=removed, bytes_removed=cut, bytes_kept=size - cut)

    def _remove_day(self, day: str, purged: Purged) -> None:
        path = self.day_file(day)
        purged.records += _count_lines(path)
        purged.bytes += _size(path)
        path.unlink(missing_ok=True)
        purged.files.append(str(path))
        self._remove_frames(day, purged)

    def _remove_frames(self, day: str, purged: Purged, zone: str | None = None) -> None:
        folder = self.folder / FRAMES / day
        if zone is not None:
            folder = folder / zone
        if folder.is_symlink():  # not the monitor's: the link goes, what it names stays
            folder.unlink()
            purged.files.append(str(folder))
            return
        if not folder.is_dir():
            return
        for root, _dirs, names in os.walk(folder):
            for name in names:
                purged.frames += int(name.endswith(".jpg"))
                purged.bytes += _size(Path(root) / name)
        shutil.rmtree(folder)
        purged.files.append(str(folder))

    # -- purge ---------------------------------------------------------------------------------
    def purge(self, *, older_than_s: float | None = None, zone: str | None = None, everything: bool = False,
              now: float | None = None) -> Purged:
        """Delete records (and their frames) by age, by zone, or all of them."""
        now = time.time() if now is None else now
        purged = Purged()
        if not self.folder.is_dir():
            return purged
        with self.locked(exclusive=True):
            if everything:
                for day in self.days():
                    self._remove_day(day, purged)
                for day in self.frame_days():
                    self._remove_frames(day, purged)
            if zone is not None:
                for day in self.days():
                    self._rewrite(day, lambda record: record.get("zone") == zone, purged)
                for day in self.frame_days():
                    self._remove_frames(day, purged, zone)
            if older_than_s is not None:
                self._purge_older(now - older_than_s, purged)
        return purged

    def _purge_older(self, cutoff: float, purged: Purged) -> None:
        for day in self.days():
            if day_start(day) + _DAY_S <= cutoff:
                self._remove_day(day, purged)
            elif day_start(day) < cutoff:
                self._rewrite(day, lambda record: float(record.get("at", 0.0)) < cutoff, purged)
        for day in self.frame_days():
            if day_start(day) + _DAY_S <= cutoff:
                self._remove_frames(day, purged)
            elif day_start(day) < cutoff:
                self._remove_old_frames(day, cutoff, purged)

    def _remove_old_frames(self, day: str, cutoff: float, purged: Purged) -> None:
        for path in (self.folder / FRAMES / day).rglob("*.jpg"):
            if path.stat().st_mtime < cutoff:  # a frame is written when its record is
                purged.frames += 1
                purged.bytes += _size(path)
                path.unlink(missing_ok=True)

    def _rewrite(self, day: str, drop: _Predicate, purged: Purged) -> None:
        """Rewrite a day file without the records `drop` selects (atomically, 0600)."""
        path = self.day_file(day)
        kept: list[str] = []
        removed = 0
        with os.fdopen(open_nofollow(path, os.O_RDONLY), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = loads_bounded(line, what="history line", max_bytes=MAX_LINE_BYTES)
                    gone = isinstance(record, dict) and drop(record)
                except (ValueError, TypeError):  # JsonInputError too: the line is kept, unread
                    purged.unreadable_kept += int(bool(line.strip()))
                    gone = False
                if gone:
                    removed += 1
                else:
                    kept.append(line if line.endswith("\n") else line + "\n")
        if not removed:
            return
        before = _size(path)
        if not kept:
            path.unlink()
        else:
            replace_file(path, "".join(kept).encode("utf-8"), durable=False)
        purged.records += removed
        purged.bytes += before - _size(path)
        purged.files.append(str(path))


def _cut_point(handle: BinaryIO, excess: float, last: int) -> tuple[int, int]:
    """The first line start at or after `excess` bytes but not after `last`, and how many lines lie before it."""
    handle.seek(0)
    position, lines, at_start = 0, 0, True
    while position < last and (position < excess or not at_start):
        piece = handle.readline(_COPY_CHUNK)  # bounded: a huge record is read in pieces
        if not piece:
            break
        position += len(piece)
        at_start = piece.endswith(b"\n")
        lines += int(at_start)
    return position, lines


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _count_lines(path: Path) -> int:
    try:
        with os.fdopen(open_nofollow(path, os.O_RDONLY), "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return 0


class PurgePreview(HistoryFiles):
    """`monitor history purge --dry-run`: the same selection as `purge`, counted, with nothing removed."""

    def _remove_day(self, day: str, purged: Purged) -> None:
        path = self.day_file(day)
        purged.records += _count_lines(path)
        purged.bytes += _size(path)
        purged.files.append(str(path))
        self._remove_frames(day, purged)

    def _remove_frames(self, day: str, purged: Purged, zone: str | None = None) -> None:
        folder = self.folder / FRAMES / day / (zone or "")
        frames = [path for path in folder.rglob("*") if path.is_file()] if folder.is_dir() else []
        purged.frames += sum(path.suffix == ".jpg" for path in frames)
        purged.bytes += sum(_size(path) for path in frames)
        if frames:
            purged.files.append(str(folder))

    def _remove_old_frames(self, day: str, cutoff: float, purged: Purged) -> None:
        old = [path for path in (self.folder / FRAMES / day).rglob("*.jpg") if path.stat().st_mtime < cutoff]
        purged.frames += len(old)
        purged.bytes += sum(_size(path) for path in old)

    def _rewrite(self, day: str, drop: _Predicate, purged: Purged) -> None:
        with self.day_file(day).open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = loads_bounded(line, what="history line", max_bytes=MAX_LINE_BYTES)
                    purged.records += int(isinstance(record, dict) and bool(drop(record)))
                except (ValueError, TypeError):
                    purged.unreadable_kept += int(bool(line.strip()))
