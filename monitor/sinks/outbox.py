"""A durable outbox: messages wait in SQLite until the broker has acknowledged them.

`put` commits (WAL, `synchronous=FULL`) before it returns, so an accepted
message survives a crash or a power cut. Messages come out of `peek` in the
order they went in and leave only through `remove_through`, which the sender
calls after the broker's acknowledgement. A sender that dies between the
acknowledgement and the removal sends the message again after a restart: the
outbox delivers at least once, and subscribers deduplicate by message id.

When `max_messages` are waiting, `put` drops the oldest waiting messages to
make room (policy `drop_oldest`), logs a warning naming each dropped message
id, and counts them in `dropped`. A long outage then loses its oldest alerts,
never its newest.

Methods are blocking (short SQLite transactions); async callers run them with
`asyncio.to_thread`. One lock serialises them, so any thread may call.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from monitor.core.errors import MonitorError

log = structlog.get_logger("monitor.sinks.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


class OutboxError(MonitorError):
    """The outbox file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message waiting for the broker's acknowledgement."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    message_id: str
    created_at: float


class Outbox:
    """An ordered, bounded, crash-safe queue of MQTT messages in one SQLite file."""

    def __init__(self, path: Path, *, max_messages: int = 100_000) -> None:
        if max_messages < 1:
            raise ValueError(f"outbox {path}: max_messages must be >= 1, got {max_messages}")
        self.path = path
        self.max_messages = max_messages
        self.dropped = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._count = 0

    def open(self) -> None:
        """Open (or create) the file; messages left by a previous run stay queued."""
        with self._lock:
            if self._db is not None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.execute(_SCHEMA)
                self._count = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
            except (sqlite3.Error, OSError) as exc:
                raise OutboxError(f"outbox {self.path}: cannot open: {exc}") from exc
            self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __len__(self) -> int:
        return self._count

    def put(self, topic: str, payload: bytes, *, qos: int, retain: bool, message_id: str, created_at: float) -> int:
        """Append one message, durably; returns how many old messages were dropped to make room."""
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                dropped = self._make_room(db, 1)
                db.execute(
                    "INSERT INTO messages (topic, payload, qos, retain, message_id, created_at) VALUES (?,?,?,?,?,?)",
                    (topic, payload, qos, int(retain), message_id, created_at),
                )
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(db)
                raise OutboxError(f"outbox {self.path}: cannot store message {message_id}: {exc}") from exc
            self._count += 1 - len(dropped)
        self._report(dropped)
        return len(dropped)

    def peek(self, limit: int) -> list[OutboxMessage]:
        """The oldest `limit` waiting messages, oldest first; they stay until removed."""
        with self._lock:
            rows = self._connection().execute(
                "SELECT seq, topic, payload, qos, retain, message_id, created_at FROM messages ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], r[6]) for r in rows]

    def remove_through(self, seq: int) -> int:
        """Remove every message up to and including `seq` (they were acknowledged); returns how many."""
        with self._lock:
            db = self._connection()
            try:
                removed = db.execute("DELETE FROM messages WHERE seq <= ?", (seq,)).rowcount
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: cannot remove acknowledged messages: {exc}") from exc
            self._count -= removed
            return removed

    def _make_room(self, db: sqlite3.Connection, needed: int) -> list[str]:
        excess = self._count + needed - self.max_messages
        if excess <= 0:
            return []
        rows = db.execute("SELECT seq, message_id FROM messages ORDER BY seq LIMIT ?", (excess,)).fetchall()
        db.execute("DELETE FROM messages WHERE seq <= ?", (rows[-1][0],))
        return [row[1] for row in rows]

    def _report(self, dropped: list[str]) -> None:
        for message_id in dropped:
            self.dropped += 1
            log.warning("outbox full, oldest message dropped", outbox=str(self.path), message_id=message_id,
                        max_messages=self.max_messages, dropped_total=self.dropped)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"outbox {self.path}: not open")
        return self._db


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.rollback()
