"""Where a followed log file was read to, kept in the state dir across restarts.

A tail that started at the end of its file after every restart never read what was written
while the monitor was down (a crash, `kill -9` and systemd's restart delay, an upgrade), and
nothing said so. So each file source keeps one small JSON record,
`<state_dir>/log-position-<source id>.json`: its path, the file's identity (`st_dev`,
`st_ino`) and the byte offset just after the last complete line it handed on. It is written
atomically through `monitor.core.statefile` (0600, never through a link), at most once a
`SAVE_EVERY_S` while data flows, and when the source stops.

The record also holds `check`, the SHA-256 of the (up to) `CHECK_BYTES` bytes just before the offset:
a file truncated while the monitor was down and written past the old offset (logrotate's
`copytruncate`, or a deleted file whose inode number came back) has the same identity and is long
enough, but not those bytes, and is read from its start instead of from the middle of a line.
A record written before `check` was kept still loads; its offset must at least follow a newline.
`format` is the format a source set to `auto` had decided on: a resume that starts inside a block
(the backlog cut at `resume_max_bytes`) keeps it instead of deciding again from a stray line.

A record that cannot be used (garbage, too large, too deep, a link, the wrong shape) is moved
aside with a log line and the source starts as if there were none: it can never stop a source.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from monitor.core.statefile import JsonStateFile
from sensors.logs.parsers import Format

FILE_PREFIX = "log-position-"
SAVE_EVERY_S = 1.0
# A record is about 200 bytes; anything much larger is not one the monitor wrote.
_MAX_RECORD_BYTES = 64 * 1024
CHECK_BYTES = 64
_SHAPE = ('{"source": str, "path": str, "dev": int, "ino": int, "offset": int >= 0, "check": 64 hex digits '
          '(optional), "format": "jsonl" | "text" | "pasbench" | null (optional)}')
_CHECK_RE = re.compile(r"[0-9a-f]{64}")


def fingerprint(before: bytes) -> str:
    """The check of an offset: the SHA-256 of the (up to) `CHECK_BYTES` bytes just before it."""
    return hashlib.sha256(before[-CHECK_BYTES:]).hexdigest()


def position_file(state_dir: Path, source_id: str) -> Path:
    """The record of one source (source ids are `[A-Za-z0-9_-]`, so the name is a plain file name)."""
    return state_dir / f"{FILE_PREFIX}{source_id}.json"


@dataclass(frozen=True, slots=True)
class Position:
    """A point in one file: which file (path and identity), and the offset after its last complete line read."""

    path: str
    dev: int
    ino: int
    offset: int
    check: str | None = None  # fingerprint() of the bytes before offset; None in a record from before it was kept
    format: Format | None = None  # the format the parser had decided on (None: not decided yet)

    def to_json(self, source_id: str) -> dict[str, Any]:
        return {"source": source_id, "path": self.path, "dev": self.dev, "ino": self.ino, "offset": self.offset,
                "check": self.check, "format": self.format}

    def matches(self, before: bytes) -> bool:
        """Whether `before`, the (up to) `CHECK_BYTES` bytes the file now has just before `offset`, are the ones
        that were read. Without a check (an older record) the offset must at least follow a newline."""
        if self.check is not None:
            return fingerprint(before) == self.check
        return self.offset == 0 or before.endswith(b"\n")


def _from_json(document: object, source_id: str) -> Position | None:
    """The position in `document`, or None when it does not have the record's shape."""
    if not isinstance(document, dict) or document.get("source") != source_id:
        return None
    path, numbers = document.get("path"), [document.get(key) for key in ("dev", "ino", "offset")]
    if not isinstance(path, str) or not all(type(n) is int and n >= 0 for n in numbers):
        return None  # `type(...) is int`: a JSON `true` is no offset
    check, fmt = document.get("check"), document.get("format")
    if check is not None and not (isinstance(check, str) and _CHECK_RE.fullmatch(check)):
        return None
    if fmt is not None and fmt not in get_args(Format):
        return None
    dev, ino, offset = (int(n) for n in numbers if isinstance(n, int))
    return Position(path, dev, ino, offset, check, fmt)


class PositionStore:
    """One source's record: `load()` once, `note()` as lines are consumed (throttled), `close()` at stop."""

    def __init__(self, state_dir: Path, source_id: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.source_id = source_id
        self.file = JsonStateFile(position_file(state_dir, source_id), what="log position file",
                                  max_bytes=_MAX_RECORD_BYTES)
        self._clock = clock
        self._saved: Position | None = None
        self._latest: Position | None = None
        self._saved_at = float("-inf")

    def load(self) -> Position | None:
        """The stored position, or None (none yet, or unusable: then moved aside and logged). Blocking: run it
        in a thread."""
        document = self.file.load()
        if document is None:
            return None
        position = _from_json(document, self.source_id)
        if position is None:
            self.file.corrupt(f"expected {_SHAPE} for source '{self.source_id}'")
        self._saved = self._latest = position
        return position

    def opened(self, position: Position) -> None:
        """The source opened its file at `position`: written now, without using up the throttle, so the first
        line after a start is kept at once too (a crash just after it must not read it again)."""
        saved_at = self._saved_at
        self._latest = position
        if position != self._saved:
            self._save()
        self._saved_at = saved_at

    def note(self, position: Position) -> None:
        """The source has consumed up to `position`: written if the last write is `SAVE_EVERY_S` old."""
        self._latest = position
        self.tick()

    def tick(self) -> None:
        """Write the latest position if it changed and the last write is `SAVE_EVERY_S` old (called each poll)."""
        if self._latest == self._saved or self._clock() - self._saved_at < SAVE_EVERY_S:
            return
        self._save()

    async def close(self) -> None:
        """Write the latest position now and wait for it (the source stops)."""
        await self.file.flush()
        if self._latest != self._saved:
            self._save()
        await self.file.flush()

    def _save(self) -> None:
        assert self._latest is not None
        self._saved, self._saved_at = self._latest, self._clock()
        self.file.save(self._latest.to_json(self.source_id))
