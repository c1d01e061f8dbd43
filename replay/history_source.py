"""The home's recorded history as a replay reads it: the records, the lines it could not read, the labels,
and the windows rebuilt as observations, grouped into segments (one zone on one UTC day).

A line that is not a record is a problem naming its file and line, never an exception:
the rest of the history is still replayed. Frames come back only when their images were
recorded (history.record_frames) and not purged since.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.history.feedback import FeedbackEntry, FeedbackStore
from monitor.history.files import DAY_FILE, FRAMES, day_start
from monitor.history.record import RecordError, WindowRecord, parse_record
from monitor.history.settings import FEEDBACK_FILE, HISTORY_DIR
from monitor.history.times import utc_day
from replay.errors import ReplayError
from sensors.image_header import DEFAULT_MAX_PIXELS, max_file_bytes
from sensors.types import Frame, LogEntry, Observation

_DAY_S = 86400.0


# --------------------------------------------------------------------------- reading the history


@dataclass
class History:
    """The records a replay reads, the lines it could not read, and where frames and labels are."""

    source: Path
    records: list[WindowRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    folder: Path | None = None
    feedback: Path | None = None

    def frame(self, record: WindowRecord, digest: str) -> bytes | None:
        """A recorded keyframe's JPEG, if it was kept (history.record_frames) and not purged."""
        if self.folder is None:
            return None
        path = self.folder / FRAMES / utc_day(record.at) / record.zone / f"{digest}.jpg"
        try:
            if path.stat().st_size > max_file_bytes(DEFAULT_MAX_PIXELS):
                return None  # no keyframe the monitor kept is this large: not read, counted as missing
            return path.read_bytes()
        except OSError:
            return None


def feedback_candidates(path: Path) -> list[Path]:
    """Where the feedback store of the history at `path` is looked for, in order."""
    if path.is_file():
        return [path.parent.parent / FEEDBACK_FILE]
    folder = path / HISTORY_DIR if (path / HISTORY_DIR).is_dir() else path
    return list(dict.fromkeys((path / FEEDBACK_FILE, folder.parent / FEEDBACK_FILE)))


def locate(path: Path) -> tuple[list[Path], Path | None, Path | None]:
    """The history files at `path` (a state dir, a history folder or one file), their folder, the feedback store."""
    store = next((p for p in feedback_candidates(path) if p.is_file()), None) if path.exists() else None
    if path.is_file():
        return [path], path.parent, store
    if not path.is_dir():
        raise ReplayError(f"{path}: no such file or folder (give a state dir, a history folder or a history file)")
    folder = path / HISTORY_DIR if (path / HISTORY_DIR).is_dir() else path
    files = sorted(p for p in folder.iterdir() if DAY_FILE.match(p.name))
    if not files:
        raise ReplayError(f"{folder}: no history files (YYYY-MM-DD.jsonl); is history.enabled on in the "
                          "monitor that ran there?")
    return files, folder, store


def load_history(path: Path, *, since: float | None = None, until: float | None = None,
                 zones: Sequence[str] = ()) -> History:
    """Read every record in range; unreadable lines become problems naming their file and line."""
    files, folder, store = locate(path)
    history = History(path, folder=folder, feedback=store)
    for file in files:
        match = DAY_FILE.match(file.name)
        if match is not None and not _day_in_range(match.group(1), since, until):
            continue
        _read_file(file, history)
    history.records = sorted(
        (r for r in history.records if (since is None or r.at >= since) and (until is None or r.at < until)
         and (not zones or r.zone in zones)),
        key=lambda r: (r.zone, r.at, r.created_at or r.at))
    return history


def _day_in_range(day: str, since: float | None, until: float | None) -> bool:
    start = day_start(day)
    return (since is None or start + _DAY_S > since) and (until is None or start < until)


def _read_file(file: Path, history: History) -> None:
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        history.problems.append(f"{file}: cannot read: {exc.strerror or exc}")
        return
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            history.records.append(parse_record(line))
        except RecordError as exc:
            torn = number == len(lines) and not text.endswith("\n")
            reason = f"truncated last line (a write cut short?): {exc}" if torn else str(exc)
            history.problems.append(f"{file}:{number}: {reason}")


def load_labels(store: Path | None) -> list[FeedbackEntry]:
    """Every feedback entry of a store, oldest given first (none without a store)."""
    if store is None:
        return []
    with FeedbackStore(store) as opened:
        return opened.entries()


# --------------------------------------------------------------------------- segments


@dataclass
class Segment:
    """One zone's recorded windows of one UTC day, in order."""

    zone: str
    day: str
    records: list[WindowRecord]

    @property
    def id(self) -> str:
        return f"{self.zone}/{self.day}"


def segments(records: Sequence[WindowRecord]) -> list[Segment]:
    """Records grouped by zone and UTC day, in time order."""
    grouped: dict[tuple[str, str], list[WindowRecord]] = defaultdict(list)
    for record in records:
        grouped[(record.zone, utc_day(record.at))].append(record)
    return [Segment(zone, day, grouped[(zone, day)]) for zone, day in sorted(grouped)]


def observation_key(observation: Observation) -> tuple[Any, ...]:
    if isinstance(observation, LogEntry):
        return observation.source, observation.ts, observation.text
    return observation.source, observation.ts


@dataclass
class Replayed:
    """A recorded window as the replay rebuilds it: its observations, and the frames it could not."""

    record: WindowRecord
    observations: list[Observation]
    frames_missing: int

    @property
    def keys(self) -> set[tuple[Any, ...]]:
        return {observation_key(o) for o in self.observations}


def rebuild(record: WindowRecord, history: History) -> Replayed:
    """The observations of a recorded window: its log entries and the frames whose images were kept."""
    observations: list[Observation] = [entry.entry() for entry in record.observations]
    missing = 0
    for frame in record.camera:
        jpeg = history.frame(record, frame.image) if frame.image else None
        size = jpeg_size(jpeg) if jpeg else None
        if jpeg is None or size is None or size[0] * size[1] > DEFAULT_MAX_PIXELS:  # not decoded, only counted
            missing += 1
            continue
        observations.append(Frame(source=frame.source, ts=frame.ts, jpeg=jpeg, width=size[0], height=size[1],
                                  change=frame.change, facts=tuple(frame.facts)))
    missing += max(0, record.frames - len(record.camera))  # audit lines of before carry only the count
    observations.sort(key=lambda o: o.ts)
    return Replayed(record, observations, missing)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's frame header (no decoding); None if it is not a JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        length = struct.unpack(">H", data[index + 2:index + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[index + 5:index + 9])
            return width, height
        index += 2 + length
    return None
