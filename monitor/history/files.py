"""The history folder: one JSON-lines file per UTC day, recorded frames beside them, retention and purge.

```
<history>/2026-01-03.jsonl                       records of that day, one per line, appended
<history>/frames/2026-01-03/<zone>/<sha256>.jpg  keyframes sent that day (history.record_frames)
<history>/.lock                                  appends share it; purges and retention take it alone
```

Folders are 0700 and files 0600: the history holds what happened in a home. Every
append opens the day file, writes one line and closes it under a shared lock, so
`monitor history purge` (run by a person while the daemon writes) can rewrite a
file under the exclusive lock without losing a line appended meanwhile.

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
from typing import Any

import structlog

from monitor.core.errors import MonitorError
from monitor.core.files import append_whole, open_append, repair_torn_tail
from monitor.core.jsonio import MAX_LINE_BYTES, loads_bounded
from monitor.history.times import utc_day

log = structlog.get_logger("monitor.history")

DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")
FRAMES = "frames"
_LOCK = ".lock"
_DAY_S = 86400.0
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

    def summary(self) -> str:
        text = (f"{self.records} records and {self.frames} frames removed ({self.bytes / 1e6:.1f} MB, "
                f"{len(self.files)} files or folders)")
        if self.unreadable_kept:
            text += f"; {self.unreadable_kept} unreadable lines kept (their zone and time cannot be read)"
        return text


def day_start(day: str) -> float:
    """Seconds since the epoch at 00:00 UTC of a `YYYY-MM-DD` day."""
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700; returns it."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
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

    # -- writing ---------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the folder (0700) if needed; HistoryError naming it if that fails."""
        try:
            private_dir(self.folder)
        except OSError as exc:
            raise HistoryError(f"history folder {self.folder}: cannot create: {exc.strerror or exc} (check "
                               "service.state_dir and history.path, or set history.enabled = false)") from None

    def day_file(self, day: str) -> Path:
        return self.folder / f"{day}.jsonl"

    def append(self, day: str, line: str) -> None:
        """Append one record line to the day's file (under the shared lock)."""
        with self.locked(exclusive=False):
            append_private(self.day_file(day), line)

    def frame_path(self, day: str, zone: str, digest: str) -> Path:
        return self.folder / FRAMES / day / zone / f"{digest}.jpg"

    def keep_frame(self, day: str, zone: str, digest: str, jpeg: bytes) -> None:
        """Store one keyframe (content-addressed: a frame sent again is stored once per day and zone)."""
        path = self.frame_path(day, zone, digest)
        if path.exists():
            return
        for folder in (self.folder / FRAMES, path.parent.parent, path.parent):
            private_dir(folder)
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(jpeg)
        temporary.replace(path)

    @contextlib.contextmanager
    def locked(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the folder's lock: shared for appends, exclusive to rewrite or delete."""
        self.ensure()
        fd = os.open(self.folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

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
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(root, name)).st_size
        return total

    # -- retention --------------------------------------------------------------------------
    def enforce(self, *, max_age_s: float, frames_max_age_s: float, max_bytes: float,
                now: float | None = None) -> Purged:
        """Delete days older than the age limits, then the oldest frames and days while over `max_bytes`.

        Today's records are never deleted by size; if they alone exceed it, a warning says so.
        """
        now = time.time() if now is None else now
        purged = Purged()
        with self.locked(exclusive=True):
            for day in self.days():
                if day_start(day) + _DAY_S <= now - max_age_s:
                    self._remove_day(day, purged)
            for day in self.frame_days():
                if day_start(day) + _DAY_S <= now - frames_max_age_s:
                    self._remove_frames(day, purged)
            self._within_size(max_bytes, utc_day(now), purged)
        return purged

    def _within_size(self, max_bytes: float, today: str, purged: Purged) -> None:
        total = self.size()
        while total > max_bytes:
            frame_days, days = self.frame_days(), [d for d in self.days() if d != today]
            before = purged.bytes
            if frame_days:
                self._remove_frames(frame_days[0], purged)
            elif days:
                self._remove_day(days[0], purged)
            else:
                log.warning("history over its size limit with only today's records left; they are kept",
                            folder=str(self.folder), bytes=total, max_bytes=int(max_bytes))
                return
            total -= purged.bytes - before

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
        with path.open(encoding="utf-8", errors="replace") as handle:
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
            temporary = path.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.writelines(kept)
            temporary.replace(path)
        purged.records += removed
        purged.bytes += before - _size(path)
        purged.files.append(str(path))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return 0
