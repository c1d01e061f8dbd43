"""The run log, ``OUT/runs.jsonl``: what a replay did, one JSON object per line.

Three kinds of line, told apart by ``type``:

- ``run``: a header, written each time a run starts or resumes (protocol, trials,
  model identity, judge, assessment strategy, planned sample ids);
- ``skipped``: a sample that could not run (an absent PNG, a text-only model), so
  it is reported rather than silently left out;
- ``trial``: one finished trial with its windows, model calls (request, reply,
  tokens, latency), alerts, first warning, judged response and timings.

A trial is finished when its status is ``ok``. ``error`` (the model failed) and
``unjudged`` (the judge failed) lines are kept for the record, and a resumed run
does those trials again (their model answers come from the cache). When a pair
(sample, trial) has several lines, the last ``ok`` one counts.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from monitor.assess.settings import AssessmentSettings
from monitor.core.errors import JsonInputError
from monitor.core.jsonio import MAX_LINE_BYTES, check_bounds
from replay.appendfile import AppendFile, private_folder
from replay.errors import RunLogError

Parsed = TypeVar("Parsed")

log = structlog.get_logger(__name__)
RUN_LOG_VERSION = 1
TrialStatus = Literal["ok", "error", "unjudged"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunHeader(_Record):
    """What a run was asked to do."""

    type: Literal["run"] = "run"
    version: int = RUN_LOG_VERSION
    benchmark: str = "pasbench"
    protocol: Literal["paper", "stream"]
    modality: Literal["text", "image", "all"]
    trials: int
    speed: float = 0.0
    interval_s: float = 2.0
    safe_controls: bool = True
    model: dict[str, Any]
    judge: dict[str, Any]
    # The [assessment] settings (model_dump) and a short label such as "vote(2/3)";
    # empty in run logs written before strategies were recorded.
    strategy: dict[str, Any] = {}
    strategy_label: str = ""
    planned: list[str]
    notes: list[str] = []
    data: str = ""
    started_at: float = 0.0
    resumed: bool = False
    limit: int | None = None
    # What the run measures (see replay.fingerprint); a resumed run must match it exactly.
    # Empty in run logs written before fingerprints, which therefore cannot be resumed.
    fingerprint: dict[str, Any] = {}
    # Position id -> content id of every planned sample (what the ids meant in this run).
    records: dict[str, str] = {}
    # Planned text samples that were cut off (no [LOG END]).
    truncated: list[str] = []


class SkippedRecord(_Record):
    """A sample that was not run, and why."""

    type: Literal["skipped"] = "skipped"
    sample: str
    record: str = ""
    modality: Literal["text", "image"]
    severity: str | None = None
    reason: str


class JudgementRecord(_Record):
    """A trial's grade: correct or not, by whom (``rule`` for a trial without a warning)."""

    correct: bool
    reason: str
    judge: str
    kind: Literal["llm", "offline", "rule"]
    approximate: bool
    cached: bool = False
    scores: dict[str, float] | None = None
    usage: dict[str, Any] | None = None


class FirstAlert(_Record):
    """When the first warning of a trial came, in stream position and time."""

    window: int
    entry_index: int
    entries: int
    offset_s: float
    clock: str | None = None
    wall_s: float | None = None
    severity: str = "info"
    hazard: str = ""


class TrialRecord(_Record):
    """One trial of one sample."""

    type: Literal["trial"] = "trial"
    sample: str
    # The sample's content id: what `sample` (a position) meant in this run.
    record: str = ""
    modality: Literal["text", "image"]
    severity: str | None = None
    kind: Literal["risk", "safe"] = "risk"
    trial: int
    protocol: Literal["paper", "stream"]
    status: TrialStatus
    strategy: str = ""
    entries: int
    windows: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    first_alert: FirstAlert | None = None
    response: str = ""
    judgement: JudgementRecord | None = None
    calls: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    timings: dict[str, float] = {}
    error: str | None = None

    @property
    def pair(self) -> tuple[str, int]:
        return self.sample, self.trial

    @property
    def warned(self) -> bool:
        return self.first_alert is not None


Record = RunHeader | SkippedRecord | TrialRecord


def strategy_label(settings: AssessmentSettings) -> str:
    """A short name for an assessment strategy: single, vote(2/3), verify, temporal(verify)."""
    return settings.label
_KINDS: dict[str, type[_Record]] = {"run": RunHeader, "skipped": SkippedRecord, "trial": TrialRecord}
_RECORD: TypeAdapter[Record] = TypeAdapter(Annotated[RunHeader | SkippedRecord | TrialRecord,
                                                     Field(discriminator="type")])


@dataclass
class RunData:
    """Everything a run log holds, with the counting trial per (sample, trial)."""

    headers: list[RunHeader] = field(default_factory=list)
    skipped: dict[str, SkippedRecord] = field(default_factory=dict)
    lines: list[TrialRecord] = field(default_factory=list)
    torn_lines: int = 0

    @property
    def trials(self) -> list[TrialRecord]:
        """One record per (sample, trial): the last ``ok`` one, else the last one."""
        return latest_per_key(self.lines, lambda record: record.pair)

    @property
    def finished(self) -> set[tuple[str, int]]:
        return {record.pair for record in self.lines if record.status == "ok"}

    @property
    def planned(self) -> list[str]:
        return list(dict.fromkeys(sample for header in self.headers for sample in header.planned))

    @property
    def records(self) -> dict[str, str]:
        """Position id -> content id, from the headers and the lines (older logs have none)."""
        known: dict[str, str] = {}
        for header in self.headers:
            known.update(header.records)
        for skipped in self.skipped.values():
            if skipped.record:
                known.setdefault(skipped.sample, skipped.record)
        for line in self.lines:
            if line.record:
                known.setdefault(line.sample, line.record)
        return known


def parse_line(line: str, *, where: str) -> Record:
    """One line of a run log as its record; RunLogError naming the line otherwise.

    pydantic parses and validates the JSON in one pass (a run log of 1,536 trials reads in
    a fifth of the time json.loads and then validation take).
    """
    try:
        check_bounds(line, what="run log line", max_bytes=MAX_LINE_BYTES)  # before pydantic's parser recurses
        record = _RECORD.validate_json(line)
    except JsonInputError as exc:
        raise RunLogError(f"{where}: {exc.detail}") from None
    except ValidationError as exc:
        raise RunLogError(f"{where}: {_problem(exc)}") from None
    assert isinstance(record, RunHeader | SkippedRecord | TrialRecord)
    return record


def _problem(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    kind, loc = first["type"], first["loc"]
    if kind == "json_invalid":
        return f"not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})"
    if not loc or kind.startswith("union_tag"):
        return f"not a run-log record (type must be one of {', '.join(_KINDS)})"
    place = ".".join(str(part) for part in loc[1:]) or "<root>"
    return f"invalid {loc[0]} record: {place}: {first['msg']}"


class _Attempt(Protocol):
    @property
    def status(self) -> str: ...


Attempt = TypeVar("Attempt", bound=_Attempt)


def latest_per_key(records: Iterable[Attempt], key: Callable[[Attempt], Hashable]) -> list[Attempt]:
    """One record per key, in first-seen order: the last ``ok`` one, else the last one (a resumed run's
    log holds every attempt of a trial or a segment)."""
    chosen: dict[Hashable, Attempt] = {}
    for record in records:
        name = key(record)
        current = chosen.get(name)
        if current is None or record.status == "ok" or current.status != "ok":
            chosen[name] = record
    return list(chosen.values())


def read_run_log(path: Path, *, missing_ok: bool = False) -> RunData:
    """Read a run log. A torn LAST line (a run killed mid-write) is ignored; any other bad line is an error."""
    data = RunData()
    records, data.torn_lines = read_log_lines(path, parse_line, missing_ok=missing_ok)
    for record in records:
        _add(data, record)
    return data


def read_log_lines(path: Path, parse: Callable[..., Parsed], *, missing_ok: bool) -> tuple[list[Parsed], int]:
    """The records of a JSON-lines run log, parsed by `parse(line, where=...)`, and how many torn lines it had.

    A torn LAST line (a run killed mid-write) is ignored and counted; any other bad line is a
    RunLogError naming the file and line. A missing file is an error unless `missing_ok`.
    """
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")  # a text-mode read is 4x slower
    except FileNotFoundError:
        if missing_ok:
            return [], 0
        raise RunLogError(f"{path}: run log not found") from None
    except OSError as exc:
        raise RunLogError(f"{path}: cannot read: {exc.strerror or exc}") from None
    lines = text.split("\n")
    records: list[Parsed] = []
    torn = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(parse(line, where=f"{path}:{number}"))
        except RunLogError:
            if number == len(lines) and not text.endswith("\n"):
                torn += 1
                log.warning("torn last line of the run log ignored", path=str(path), line=number)
                continue
            raise
    return records, torn


def _add(data: RunData, record: Record) -> None:
    if isinstance(record, RunHeader):
        data.headers.append(record)
    elif isinstance(record, SkippedRecord):
        data.skipped[record.sample] = record
    else:
        data.lines.append(record)


def records_data(records: Iterable[Record]) -> RunData:
    """A RunData from records in memory (tests, re-scoring)."""
    data = RunData()
    for record in records:
        _add(data, record)
    return data


class RunLogWriter:
    """Appends records to the run log, one line each, flushed as written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_folder(path.parent)
        self._repair_torn_end()
        self._file = AppendFile(path)

    def _repair_torn_end(self) -> None:
        # A kill mid-write can leave a partial last line: drop it, it was never a record.
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("dropping a torn last line of the run log", path=str(self.path), bytes=len(data) - keep)
            with self.path.open("r+b") as handle:
                handle.truncate(keep)

    def append(self, record: Record) -> None:
        self._file.append(record.model_dump_json(exclude_none=False))
