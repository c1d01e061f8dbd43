"""The run log of `monitor replay history`, ``OUT/runs.jsonl``: one JSON object per line.

- ``run``: a header, written each time a run starts or resumes (the history read, its
  range and zones, the candidate's model identity, strategy and alert settings, the
  lines of the history that could not be read);
- ``segment``: the windows of one zone on one UTC day, re-assessed by the candidate
  in order through the pipeline, each beside what the recorded model did.

A segment is finished when its status is ``ok``; a resumed run skips finished segments
and does ``error`` ones again (their model answers come from the cache). The last
``ok`` line of a segment counts. Scoring (replay/history_score.py) reads only this
file and the labels snapshot beside it: re-scoring never calls a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from monitor.core.errors import JsonInputError
from monitor.core.jsonio import MAX_LINE_BYTES, loads_bounded
from replay.appendfile import AppendFile
from replay.errors import RunLogError
from replay.runlog import latest_per_key, read_log_lines

log = structlog.get_logger(__name__)
HISTORY_LOG_VERSION = 1
BENCHMARK: Literal["history"] = "history"
SegmentStatus = Literal["ok", "error"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryHeader(_Record):
    """What a replay of the home's history was asked to do."""

    type: Literal["run"] = "run"
    version: int = HISTORY_LOG_VERSION
    benchmark: Literal["history"] = BENCHMARK
    source: str
    since: float | None = None
    until: float | None = None
    # --since / --until as typed (`7d`): a re-run with the same text resumes the window resolved
    # the first time, instead of a window that moved with the clock.
    since_text: str | None = None
    until_text: str | None = None
    zones: list[str] = []
    model: dict[str, Any]
    strategy: dict[str, Any] = {}
    strategy_label: str = ""
    alerts: dict[str, Any] = {}
    # Every setting that reaches the pipeline (replay.fingerprint.settings_fingerprint with [[zones]]);
    # empty in run logs written before it was recorded, which therefore cannot be resumed.
    settings: dict[str, Any] = {}
    planned: list[str] = []
    labels: int = 0
    problems: list[str] = []
    notes: list[str] = []
    started_at: float = 0.0
    resumed: bool = False


class SegmentRecord(_Record):
    """One zone's windows of one day: the recorded and the candidate outcome of each, and the cost."""

    type: Literal["segment"] = "segment"
    id: str
    zone: str
    day: str
    status: SegmentStatus
    windows: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    timings: dict[str, float] = {}
    error: str | None = None


Record = HistoryHeader | SegmentRecord
_KINDS: dict[str, type[_Record]] = {"run": HistoryHeader, "segment": SegmentRecord}


@dataclass
class HistoryRun:
    """Everything a run log holds, with the counting line per segment."""

    headers: list[HistoryHeader] = field(default_factory=list)
    lines: list[SegmentRecord] = field(default_factory=list)
    torn_lines: int = 0

    @property
    def segments(self) -> list[SegmentRecord]:
        """One record per segment: the last ``ok`` one, else the last one."""
        return latest_per_key(self.lines, lambda record: record.id)

    @property
    def finished(self) -> set[str]:
        return {record.id for record in self.lines if record.status == "ok"}


def is_history_log(path: Path) -> bool:
    """True when the first line of `path` is a header of a history replay."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
        return bool(loads_bounded(first, what="history run log line", max_bytes=MAX_LINE_BYTES).get("benchmark")
                    == BENCHMARK)
    except (OSError, ValueError, AttributeError):
        return False


def read_history_log(path: Path, *, missing_ok: bool = False) -> HistoryRun:
    """Read a run log; a torn LAST line (a run killed mid-write) is ignored, any other bad line is an error."""
    run = HistoryRun()
    records, run.torn_lines = read_log_lines(path, _parse, missing_ok=missing_ok)
    for record in records:
        if isinstance(record, HistoryHeader):
            run.headers.append(record)
        else:
            run.lines.append(record)
    return run


def _parse(line: str, *, where: str) -> Record:
    try:
        data = loads_bounded(line, what="history run log line", max_bytes=MAX_LINE_BYTES)
    except JsonInputError as exc:  # too large, nested too deep, not JSON: named and counted by the reader
        raise RunLogError(f"{where}: {exc.detail}") from None
    if not isinstance(data, dict) or data.get("type") not in _KINDS:
        raise RunLogError(f"{where}: not a history run-log record (type must be one of {', '.join(_KINDS)})")
    try:
        record = _KINDS[data["type"]].model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise RunLogError(f"{where}: invalid {data['type']} record: {place}: {first['msg']}") from None
    assert isinstance(record, HistoryHeader | SegmentRecord)
    return record


class HistoryLogWriter:
    """Appends records to the run log, one line each; a torn last line left by a kill is dropped first."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                log.warning("dropping a torn last line of the run log", path=str(path))
                with path.open("r+b") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
        self._file = AppendFile(path)  # 0600 in a 0700 folder: it quotes the home's observations

    def append(self, record: Record) -> None:
        self._file.append(record.model_dump_json())
