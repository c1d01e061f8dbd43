"""Feedback on alerts: the labels, the MQTT message, and the durable store in the state dir.

A person marks an alert `helpful`, `false_alarm` or `unclear`, or reports a `missed`
hazard for a zone and a time range, with an optional note. The store is one SQLite
file, `<state_dir>/feedback.sqlite3` (WAL, a busy timeout): the daemon writes the
index of the alerts it publishes and the feedback it receives over MQTT, and
`monitor feedback` writes to the same file while the daemon runs. Each feedback row
is linked to its alert and to the windows that raised or confirmed that alert.

Methods block (short SQLite transactions); async callers run them off the event loop.
One lock serialises them, so any thread may call.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitor.alerts import AlertEvent
from monitor.core.config import Identifier
from monitor.core.errors import JsonInputError, MonitorError
from monitor.core.files import SQLITE_SIDE_FILES, UnsafePathError, prepare_sqlite, private_dir, refuse_link
from monitor.core.jsonio import loads_bounded
from monitor.core.statefile import move_aside
from monitor.history.labels import LABELS, Label
from monitor.history.times import parse_time

log = structlog.get_logger("monitor.history.feedback")

Via = Literal["mqtt", "home_assistant", "cli"]
LATEST = "latest"
MAX_NOTE = 500
MAX_PAYLOAD = 4096
_MAX_DEPTH = 4  # a flat object of labels, notes and times
MAX_MISSED_S = 7 * 86400.0
# A reported range may end a little in the future: clocks of phones and servers differ.
_CLOCK_SLACK_S = 120.0
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    hazard TEXT NOT NULL,
    severity TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ended_at REAL,
    windows TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_zone ON alerts (zone, created_at);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    given_at REAL NOT NULL,
    label TEXT NOT NULL,
    alert_id TEXT,
    zone TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    note TEXT NOT NULL,
    via TEXT NOT NULL,
    windows TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_zone ON feedback (zone, end);
"""


class FeedbackError(MonitorError):
    """Feedback that cannot be taken (unknown alert, bad range) or a store that cannot be used."""


@dataclass(frozen=True, slots=True)
class Feedback:
    """One piece of feedback as given: on an alert (`alert_id`) or a missed hazard (`zone`, `start`..`end`)."""

    label: Label
    alert_id: str | None = None
    zone: str | None = None
    start: float | None = None
    end: float | None = None
    note: str = ""
    via: Via = "cli"
    given_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert the monitor published, as the store indexes it."""

    id: str
    zone: str
    hazard: str
    severity: str
    created_at: float
    updated_at: float
    ended_at: float | None
    windows: tuple[str, ...]
    label: str | None = None  # the latest feedback on it, when listed


@dataclass(frozen=True, slots=True)
class FeedbackEntry:
    """A stored piece of feedback with what it is about: the alert's hazard and the time the event spans."""

    id: int
    label: Label
    zone: str
    alert_id: str | None
    hazard: str
    note: str
    start: float
    end: float
    given_at: float
    via: str
    windows: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "zone": self.zone, "alert_id": self.alert_id,
                "hazard": self.hazard, "note": self.note, "start": self.start, "end": self.end,
                "given_at": self.given_at, "via": self.via, "windows": list(self.windows)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeedbackEntry:
        return cls(id=int(data["id"]), label=data["label"], zone=str(data["zone"]), alert_id=data.get("alert_id"),
                   hazard=str(data.get("hazard", "")), note=str(data.get("note", "")), start=float(data["start"]),
                   end=float(data["end"]), given_at=float(data["given_at"]), via=str(data.get("via", "")),
                   windows=tuple(data.get("windows", [])))


# --------------------------------------------------------------------------- the MQTT message


class FeedbackMessage(BaseModel):
    """The JSON on `<prefix>/feedback` (docs/mqtt.md). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    label: Label
    alert_id: str | None = Field(default=None, pattern=r"^([0-9A-Za-z_-]{1,64})$")
    zone: Identifier | None = None
    start: float | str | None = Field(default=None, alias="from")
    end: float | str | None = Field(default=None, alias="to")
    minutes: float | None = Field(default=None, gt=0.0, le=MAX_MISSED_S / 60)
    note: str = Field(default="", max_length=MAX_NOTE)
    via: Literal["mqtt", "home_assistant"] = "mqtt"

    @model_validator(mode="after")
    def _complete(self) -> FeedbackMessage:
        if self.label == "missed":
            if self.alert_id is not None:
                raise ValueError("'missed' is about a zone and a time range, not an alert: drop alert_id")
            if self.zone is None:
                raise ValueError("'missed' needs the zone")
            if self.minutes is None and (self.start is None or self.end is None):
                raise ValueError("'missed' needs 'from' and 'to', or 'minutes' (the last N minutes)")
            if self.minutes is not None and (self.start is not None or self.end is not None):
                raise ValueError("give either 'minutes' or 'from' and 'to', not both")
        else:
            if self.alert_id is None:
                raise ValueError(f"'{self.label}' needs alert_id (or \"latest\" with the zone)")
            if self.alert_id == LATEST and self.zone is None:
                raise ValueError('alert_id "latest" needs the zone')
            if self.start is not None or self.end is not None or self.minutes is not None:
                raise ValueError(f"'{self.label}' is about an alert: 'from', 'to' and 'minutes' are for 'missed'")
        return self


def parse_feedback_message(payload: bytes, *, now: float | None = None) -> Feedback:
    """A feedback message as Feedback (`alert_id` may still be "latest"); FeedbackError with the reason otherwise."""
    now = time.time() if now is None else now
    if len(payload) > MAX_PAYLOAD:
        raise FeedbackError(f"message of {len(payload)} bytes, more than {MAX_PAYLOAD}")
    try:
        data = loads_bounded(payload, what="mqtt feedback message", max_bytes=MAX_PAYLOAD, max_depth=_MAX_DEPTH)
    except JsonInputError as exc:  # too deep, not UTF-8, not JSON: named and counted by the reader
        raise FeedbackError(exc.detail) from None
    if not isinstance(data, dict):
        raise FeedbackError("not a JSON object")
    try:
        message = FeedbackMessage.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FeedbackError(f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from None
    if message.label != "missed":
        return Feedback(message.label, alert_id=message.alert_id, zone=message.zone, note=message.note.strip(),
                        via=message.via, given_at=now)
    if message.minutes is not None:
        start, end = now - message.minutes * 60.0, now
    else:
        start, end = _when(message.start, "from", now), _when(message.end, "to", now)
    return missed(message.zone or "", start, end, note=message.note, via=message.via, now=now)


def _when(value: float | str | None, name: str, now: float) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_time(str(value), now=now)
    except ValueError as exc:
        raise FeedbackError(f"{name}: {exc}") from None


def missed(zone: str, start: float, end: float, *, note: str = "", via: Via = "cli",
           now: float | None = None) -> Feedback:
    """A `missed` report, its range checked: start before end, at most seven days, not in the future."""
    now = time.time() if now is None else now
    if not start < end:
        raise FeedbackError(f"missed hazard in zone '{zone}': 'from' must be before 'to'")
    if end - start > MAX_MISSED_S:
        raise FeedbackError(f"missed hazard in zone '{zone}': a range of at most 7 days, please")
    if end > now + _CLOCK_SLACK_S:
        raise FeedbackError(f"missed hazard in zone '{zone}': the range ends in the future")
    return Feedback("missed", zone=zone, start=start, end=end, note=note.strip()[:MAX_NOTE], via=via, given_at=now)


# --------------------------------------------------------------------------- the store


class FeedbackStore:
    """The SQLite file of alerts and feedback in a state dir."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> FeedbackStore:
        """Open (or create, 0600) the file; FeedbackError naming it if it cannot be used."""
        with self._lock:
            if self._db is not None:
                return self
            try:
                private_dir(self.path.parent)
                self._refuse_links()
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=self.busy_timeout_s)
                db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
                db.execute("PRAGMA synchronous=FULL")
                _schema(db, self.path)
            except (sqlite3.Error, OSError) as exc:
                raise FeedbackError(f"feedback store {self.path}: cannot open: {exc} (check that the state dir "
                                    "is writable, or set history.feedback = false)") from None
            self._db = db
        return self

    def _refuse_links(self) -> None:
        """Create the file 0600 when missing (SQLite gives its -wal and -shm files the same mode); a symlink
        in its place or in a side file's is moved aside, logged, and a fresh store is started."""
        for candidate in (self.path, *(self.path.with_name(self.path.name + s) for s in SQLITE_SIDE_FILES)):
            try:
                refuse_link(candidate)
            except UnsafePathError as exc:
                move_aside(candidate, exc.problem, what="feedback store")
        prepare_sqlite(self.path)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> FeedbackStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._db is None:
                raise FeedbackError(f"feedback store {self.path}: not open")
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise FeedbackError(f"feedback store {self.path}: {exc}") from None

    # -- alerts ---------------------------------------------------------------------------------
    def index_alert(self, event: AlertEvent) -> None:
        """Record an alert event: `new` adds the alert, `update` adds its window, `end` closes it."""
        alert = event.alert
        if event.type == "end":
            self._run("UPDATE alerts SET ended_at = ? WHERE id = ?", (event.at, alert.id))
            return
        if event.type not in ("new", "update"):
            return  # an escalation raises the severity it is told at, not the alert's: the index keeps the model's
        row = self.alert(alert.id)
        windows = [*(row.windows if row else ()), alert.window_id]
        self._run(
            "INSERT INTO alerts (id, zone, hazard, severity, created_at, updated_at, ended_at, windows) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL, ?) ON CONFLICT(id) DO UPDATE SET severity = excluded.severity, "
            "updated_at = excluded.updated_at, windows = excluded.windows",
            (alert.id, alert.zone, alert.hazard, alert.severity, alert.created_at, alert.updated_at,
             json.dumps(list(dict.fromkeys(windows)))))

    def alert(self, alert_id: str) -> AlertRow | None:
        rows = self._run(_SELECT_ALERTS + " WHERE id = ?", (alert_id,))
        return _alert_row(rows[0]) if rows else None

    def latest_alerts(self) -> dict[str, AlertRow]:
        """The newest alert of each zone."""
        rows = self._run(_SELECT_LATEST_ALERTS)
        return {row.zone: row for row in map(_alert_row, rows)}

    def alert_ids(self) -> set[str]:
        return {str(row[0]) for row in self._run("SELECT id FROM alerts")}

    def alerts(self, *, since: float | None = None, zone: str | None = None) -> list[AlertRow]:
        """Alerts created since `since` (all zones, or one), oldest first, each with its latest label."""
        rows = self._run(
            "SELECT id, zone, hazard, severity, created_at, updated_at, ended_at, windows, (SELECT label FROM "
            "feedback f WHERE f.alert_id = a.id ORDER BY f.id DESC LIMIT 1) FROM alerts a "
            "WHERE created_at >= ? AND (? IS NULL OR zone = ?) ORDER BY created_at",
            (since if since is not None else float("-inf"), zone, zone))
        return [_alert_row(row[:-1], label=row[-1]) for row in rows]

    # -- feedback -------------------------------------------------------------------------------
    def add(self, feedback: Feedback) -> FeedbackEntry:
        """Store feedback, linked to its alert's windows; FeedbackError for an unknown alert."""
        windows: tuple[str, ...] = ()
        if feedback.label == "missed":
            assert feedback.zone is not None and feedback.start is not None and feedback.end is not None
            zone, start, end, alert_id, hazard = feedback.zone, feedback.start, feedback.end, None, ""
        else:
            row = self.alert(feedback.alert_id or "")
            if row is None:
                raise FeedbackError(f"alert '{feedback.alert_id}' is not in {self.path}: the monitor records the "
                                    "alerts it publishes there (see `monitor feedback --list`)")
            zone, start, end, windows, alert_id, hazard = (row.zone, row.created_at, row.updated_at, row.windows,
                                                           row.id, row.hazard)
        rows = self._run(
            "INSERT INTO feedback (given_at, label, alert_id, zone, start, end, note, via, windows) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (feedback.given_at, feedback.label, alert_id, zone, start, end, feedback.note, feedback.via,
             json.dumps(list(windows))))
        return FeedbackEntry(int(rows[0][0]), feedback.label, zone, alert_id, hazard, feedback.note, start, end,
                             feedback.given_at, feedback.via, tuple(windows))

    def entries(self, *, zone: str | None = None, since: float | None = None) -> list[FeedbackEntry]:
        """Feedback (about events ending at or after `since`), oldest given first, with the alerts' hazards."""
        rows = self._run(
            "SELECT f.id, f.label, f.zone, f.alert_id, COALESCE(a.hazard, ''), f.note, f.start, f.end, f.given_at, "
            "f.via, f.windows FROM feedback f LEFT JOIN alerts a ON a.id = f.alert_id "
            "WHERE (? IS NULL OR f.zone = ?) AND f.end >= ? ORDER BY f.id",
            (zone, zone, since if since is not None else float("-inf")))
        return [FeedbackEntry(int(r[0]), r[1], r[2], r[3], r[4], r[5], float(r[6]), float(r[7]), float(r[8]), r[9],
                              _windows(r[10])) for r in rows]

    def counts(self) -> dict[str, int]:
        """Stored feedback by label (every label, zeros included)."""
        counted = dict(self._run("SELECT label, COUNT(*) FROM feedback GROUP BY label"))
        return {label: int(counted.get(label, 0)) for label in LABELS}

    def purge(self, *, before: float | None = None, zone: str | None = None, everything: bool = False,
              dry_run: bool = False) -> int:
        """Delete feedback and indexed alerts by age (events ended before `before`), zone, or all; the rows gone
        (with `dry_run`, the rows that would go, and nothing is deleted)."""
        if everything:
            where: tuple[tuple[str, str, tuple[Any, ...]], ...] = (("feedback", "1", ()), ("alerts", "1", ()))
        elif zone is not None:
            where = (("feedback", "zone = ?", (zone,)), ("alerts", "zone = ?", (zone,)))
        elif before is not None:
            where = (("feedback", "end < ?", (before,)), ("alerts", "updated_at < ?", (before,)))
        else:
            return 0
        verb = "SELECT id FROM" if dry_run else "DELETE FROM"
        returning = "" if dry_run else " RETURNING id"
        # Table names and conditions are the fixed strings above; values go as parameters.
        return sum(len(self._run(f"{verb} {table} WHERE {condition}{returning}", params))
                   for table, condition, params in where)


def _schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables once (a store opened again only reads its version: no write, no wait)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > _SCHEMA_VERSION:
        raise FeedbackError(f"feedback store {path}: written by a newer monitor (schema {version}); upgrade")
    if version < _SCHEMA_VERSION:
        db.execute("PRAGMA journal_mode=WAL")  # kept in the file: every later connection uses it
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")


_SELECT_ALERTS = "SELECT id, zone, hazard, severity, created_at, updated_at, ended_at, windows FROM alerts a"
_SELECT_LATEST_ALERTS = (
    "SELECT id, zone, hazard, severity, created_at, updated_at, ended_at, windows FROM alerts a "
    "WHERE created_at = (SELECT MAX(created_at) FROM alerts b WHERE b.zone = a.zone)")


def _alert_row(row: tuple[Any, ...], label: str | None = None) -> AlertRow:
    return AlertRow(id=row[0], zone=row[1], hazard=row[2], severity=row[3], created_at=float(row[4]),
                    updated_at=float(row[5]), ended_at=None if row[6] is None else float(row[6]),
                    windows=_windows(row[7]), label=label)


_MAX_WINDOWS_BYTES = 1024 * 1024


def _windows(text: object) -> tuple[str, ...]:
    """A stored list of window ids; an unreadable one (a tampered file) is no windows, counted by the reader."""
    try:
        value = loads_bounded(text if isinstance(text, str | bytes) else "", what="feedback store windows",
                              max_bytes=_MAX_WINDOWS_BYTES, max_depth=2)
    except JsonInputError as exc:
        log.warning("feedback store: a list of windows unreadable; taken as none", error=str(exc))
        return ()
    return tuple(w for w in value if isinstance(w, str)) if isinstance(value, list) else ()
