"""The notify sink's durable queue: one SQLite file in the state dir, like the MQTT outbox.

One row per notification and service (a target's URL): `put` commits (WAL,
`synchronous=FULL`) before it returns, so an accepted notification survives a
crash or a power cut; a row leaves only when its service accepted it (`sent`), when
its retries are spent (`failed`, counted and logged by the sink), when an
acknowledgement takes it out, or when it became part of a summary. Each row has a
unique key (message id, target, URL number): the same event queued twice is one
notification. What was sent is remembered for an hour and a little more, for the
rate limits, which therefore hold across restarts too.

A file that is not a healthy queue is moved aside (both paths logged) and a fresh
one is made; methods are blocking and serialised by one lock: async callers run
them in a thread.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from monitor.core.errors import MonitorError
from monitor.core.sqlite import CorruptDatabase, open_durable_sqlite

log = structlog.get_logger("monitor.sinks.notify")

NOTIFY_QUEUE_FILE = "notify-queue.sqlite3"
_SENT_KEPT_S = 3900.0  # the rolling hour of the rate limits, and a margin
_COLUMNS = ("seq, key, target, url_index, alert_id, zone, severity, kind, title, body, attachment, attempts, "
            "next_at, state, created_at, last_error")

_SELECT = f"SELECT {_COLUMNS} FROM notes"  # noqa: S608 - constant column names, no input
_SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL,
    url_index INTEGER NOT NULL,
    alert_id TEXT NOT NULL,
    zone TEXT NOT NULL,
    severity TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    attachment BLOB,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS sent (
    target TEXT NOT NULL,
    url_index INTEGER NOT NULL,
    zone TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class NotifyQueueError(MonitorError):
    """The notify queue cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class Note:
    """One notification to one service."""

    seq: int
    key: str
    target: str
    url_index: int
    alert_id: str
    zone: str
    severity: str
    kind: str  # "alert" or "summary"
    title: str
    body: str
    attachment: bytes | None
    attempts: int
    next_at: float
    state: str  # "pending" or "held" (past a rate limit, waiting for the summary)
    created_at: float
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """How many notifications one service sent in the last hour: about a zone, in all, and its last summary."""

    zone: int
    total: int
    last_summary_at: float | None


class NotifyQueue:
    """A bounded, crash-safe queue of notifications in one SQLite file."""

    def __init__(self, path: Path, *, max_rows: int = 10_000) -> None:
        self.path = path
        self.max_rows = max_rows
        self.dropped = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open or create the file; notifications left by a previous run stay queued. Raises NotifyQueueError."""
        with self._lock:
            if self._db is None:
                self._db = self._open_file()

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def put(self, notes: list[Note]) -> int:
        """Queue notes (a key already queued or sent is ignored); returns how many were new."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                added = sum(self._insert(db, note) for note in notes)
                self._make_room(db)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(db)
                raise NotifyQueueError(f"notify queue {self.path}: cannot store: {exc}") from exc
            return added

    def _insert(self, db: sqlite3.Connection, note: Note) -> int:
        cursor = db.execute(
            "INSERT OR IGNORE INTO notes (key, target, url_index, alert_id, zone, severity, kind, title, body, "
            "attachment, attempts, next_at, state, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (note.key, note.target, note.url_index, note.alert_id, note.zone, note.severity, note.kind, note.title,
             note.body, note.attachment, note.attempts, note.next_at, note.state, note.created_at))
        return cursor.rowcount

    def _make_room(self, db: sqlite3.Connection) -> None:
        count = int(db.execute("SELECT COUNT(*) FROM notes").fetchone()[0])
        if count <= self.max_rows:
            return
        rows = db.execute("SELECT seq, key FROM notes ORDER BY seq LIMIT ?", (count - self.max_rows,)).fetchall()
        db.execute("DELETE FROM notes WHERE seq <= ?", (rows[-1][0],))
        for _seq, key in rows:
            self.dropped += 1
            log.warning("notify queue full, oldest notification dropped", queue=str(self.path), key=key,
                        max_queued=self.max_rows)

    def due(self, now: float, limit: int = 50) -> list[Note]:
        """Pending notes whose time has come, oldest first."""
        with self._lock:
            rows = self._conn().execute(_SELECT + " WHERE state = 'pending' AND next_at <= ? ORDER BY seq LIMIT ?",
                                        (now, limit)).fetchall()
        return [_note(row) for row in rows]

    def held(self) -> list[Note]:
        """Notes held by a rate limit, oldest first."""
        with self._lock:
            rows = self._conn().execute(_SELECT + " WHERE state = 'held' ORDER BY seq").fetchall()
        return [_note(row) for row in rows]

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return 0
            return int(self._db.execute("SELECT COUNT(*) FROM notes").fetchone()[0])

    def next_due(self) -> float | None:
        with self._lock:
            row = self._conn().execute("SELECT MIN(next_at) FROM notes WHERE state = 'pending'").fetchone()
        return None if row[0] is None else float(row[0])

    def sent(self, note: Note, now: float) -> None:
        """The service accepted `note`: gone from the queue, remembered for the rate limits."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM notes WHERE seq = ?", (note.seq,))
            db.execute("INSERT INTO sent (target, url_index, zone, kind, at) VALUES (?,?,?,?,?)",
                       (note.target, note.url_index, note.zone, note.kind, now))
            db.execute("DELETE FROM sent WHERE at < ?", (now - _SENT_KEPT_S,))
            db.execute("COMMIT")

    def retry(self, note: Note, *, next_at: float, error: str) -> None:
        with self._lock:
            self._conn().execute("UPDATE notes SET attempts = attempts + 1, next_at = ?, last_error = ? "
                                 "WHERE seq = ?", (next_at, error, note.seq))

    def remove(self, seqs: list[int]) -> None:
        with self._lock:
            self._conn().executemany("DELETE FROM notes WHERE seq = ?", [(s,) for s in seqs])

    def hold(self, note: Note) -> None:
        with self._lock:
            self._conn().execute("UPDATE notes SET state = 'held' WHERE seq = ?", (note.seq,))

    def cancel_alert(self, alert_id: str) -> int:
        """Take out the waiting notifications of an acknowledged alert (not summaries); returns how many."""
        with self._lock:
            cursor = self._conn().execute("DELETE FROM notes WHERE alert_id = ? AND kind = 'alert'", (alert_id,))
        return cursor.rowcount

    def summarise(self, held: list[Note], summary: Note) -> None:
        """Replace held notes by one summary, atomically."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM notes WHERE seq = ?", [(n.seq,) for n in held])
            self._insert(db, summary)
            db.execute("COMMIT")

    def sent_within(self, target: str, url_index: int, zone: str, since: float) -> Sent:
        with self._lock:
            db = self._conn()
            rows = db.execute("SELECT zone, kind, at FROM sent WHERE target = ? AND url_index = ? AND at >= ?",
                              (target, url_index, since)).fetchall()
            summary = db.execute("SELECT MAX(at) FROM sent WHERE target = ? AND url_index = ? AND kind = 'summary'",
                                 (target, url_index)).fetchone()[0]
        return Sent(sum(1 for r in rows if r[0] == zone), len(rows), None if summary is None else float(summary))

    # -- opening ------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise NotifyQueueError(f"notify queue {self.path}: not open")
        return self._db

    def _open_file(self) -> sqlite3.Connection:
        try:
            return open_durable_sqlite(self.path, schema=_SCHEMA, probe=_SELECT + " LIMIT 0", what="notify queue",
                                       kind="queue", log=log.bind(queue=str(self.path)))
        except (CorruptDatabase, sqlite3.Error, OSError) as exc:
            raise NotifyQueueError(f"notify queue {self.path}: cannot open: {exc}") from exc


def _note(row: tuple[Any, ...]) -> Note:
    attachment = row[10]
    return Note(int(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]), str(row[5]), str(row[6]),
                str(row[7]), str(row[8]), str(row[9]), bytes(attachment) if attachment is not None else None,
                int(row[11]), float(row[12]), str(row[13]), float(row[14]), None if row[15] is None else str(row[15]))


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.rollback()
