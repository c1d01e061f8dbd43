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

Faults stay local. A file that is not a healthy outbox (garbage, truncated, a
bad header, a folder in its place) is moved aside with a timestamped name, both
paths logged, and a fresh one is created. An outbox that cannot be opened (a
full disk) leaves the sink running without durability: `try_open` says so once,
`put` raises `OutboxError` (the caller counts it), `peek` has nothing, and the
file is opened again, at most every `REOPEN_INTERVAL_S`, as soon as it can be.
Acknowledged messages that cannot be deleted (a full disk) are remembered and
never sent again in this run; the delete is retried later.

Methods are blocking (short SQLite transactions); async callers run them with
`asyncio.to_thread`. One lock serialises them, so any thread may call.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import structlog

from monitor.core.errors import MonitorError
from monitor.core.sqlite import CorruptDatabase, open_durable_sqlite

log = structlog.get_logger("monitor.sinks.outbox")

REOPEN_INTERVAL_S = 5.0
_SELECT = "SELECT seq, topic, payload, qos, retain, message_id, created_at FROM messages"
_SELECT_WAITING = _SELECT + " WHERE seq > ? ORDER BY seq LIMIT ?"

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
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._wanted = False  # open() or try_open() was called and close() was not: reopen when possible
        self._next_attempt = 0.0
        self._removed_through = 0  # acknowledged up to here, though the delete may still be pending

    @property
    def available(self) -> bool:
        """True while the file is open (messages are durable)."""
        return self._db is not None

    def open(self) -> None:
        """Open (or create) the file; messages left by a previous run stay queued. Raises OutboxError."""
        with self._lock:
            self._wanted = True
            if self._db is None:
                self._db = self._open_file()

    def try_open(self) -> bool:
        """Open if possible; when not (a full disk), log it once, keep `last_error` and retry later."""
        try:
            self.open()
        except OutboxError as exc:
            self._unavailable(exc)
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._wanted = False
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
        """The oldest `limit` waiting messages, oldest first; they stay until removed. Empty while unavailable."""
        with self._lock:
            try:
                db = self._connection()
            except OutboxError:
                return []
            self._retry_pending_removal(db)
            rows = db.execute(_SELECT_WAITING, (self._removed_through, limit)).fetchall()
        return [OutboxMessage(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], r[6]) for r in rows]

    def remove_through(self, seq: int) -> int:
        """Remove every message up to and including `seq` (they were acknowledged); returns how many.

        When the delete itself fails (a full disk), the messages are still never peeked again
        in this run; the delete is retried on the next peek.
        """
        with self._lock:
            db = self._connection()
            before = self._count
            self._count -= int(db.execute("SELECT COUNT(*) FROM messages WHERE seq <= ? AND seq > ?",
                                          (seq, self._removed_through)).fetchone()[0])
            self._removed_through = max(self._removed_through, seq)
            try:
                db.execute("DELETE FROM messages WHERE seq <= ?", (seq,))
            except sqlite3.Error as exc:
                log.warning("outbox could not delete acknowledged messages; they will not be sent again",
                            outbox=str(self.path), through_seq=seq, error=str(exc))
            return before - self._count

    # -- opening, corruption, unavailability -------------------------------------------------
    def _open_file(self) -> sqlite3.Connection:
        try:
            db = open_durable_sqlite(self.path, schema=_SCHEMA, probe=_SELECT + " LIMIT 0", what="mqtt outbox",
                                     kind="outbox", log=log.bind(outbox=str(self.path)))
        except (CorruptDatabase, sqlite3.Error, OSError) as exc:
            raise OutboxError(f"outbox {self.path}: cannot open: {exc}") from exc
        try:
            self._count = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        except sqlite3.Error as exc:
            db.close()
            raise OutboxError(f"outbox {self.path}: cannot open: {exc}") from exc
        self._removed_through = 0
        self.last_error = None
        return db

    def _unavailable(self, exc: OutboxError) -> None:
        if str(exc) != self.last_error:
            log.error("mqtt outbox unavailable; alerts are not stored durably until it opens", outbox=str(self.path),
                      error=str(exc), retry_every_s=REOPEN_INTERVAL_S)
        self.last_error = str(exc)
        self._next_attempt = time.monotonic() + REOPEN_INTERVAL_S

    def _connection(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if not self._wanted:
            raise OutboxError(f"outbox {self.path}: not open")
        if time.monotonic() < self._next_attempt:
            raise OutboxError(f"outbox {self.path}: unavailable: {self.last_error}")
        try:
            self._db = self._open_file()
        except OutboxError as exc:
            self._unavailable(exc)
            raise
        log.info("mqtt outbox available again", outbox=str(self.path), pending=self._count)
        return self._db

    def _retry_pending_removal(self, db: sqlite3.Connection) -> None:
        if self._removed_through and self._count_through(db) > 0:
            try:
                db.execute("DELETE FROM messages WHERE seq <= ?", (self._removed_through,))
            except sqlite3.Error:
                return  # still no room; the messages stay skipped

    def _count_through(self, db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT COUNT(*) FROM messages WHERE seq <= ?", (self._removed_through,)).fetchone()[0])

    # -- the bound ------------------------------------------------------------------------------
    def _make_room(self, db: sqlite3.Connection, needed: int) -> list[str]:
        excess = self._count + needed - self.max_messages
        if excess <= 0:
            return []
        rows = db.execute("SELECT seq, message_id FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                          (self._removed_through, excess)).fetchall()
        if not rows:
            return []
        db.execute("DELETE FROM messages WHERE seq <= ?", (rows[-1][0],))
        return [row[1] for row in rows]

    def _report(self, dropped: list[str]) -> None:
        for message_id in dropped:
            self.dropped += 1
            log.warning("outbox full, oldest message dropped", outbox=str(self.path), message_id=message_id,
                        max_messages=self.max_messages, dropped_total=self.dropped)


# Messages kept in memory while the outbox cannot store them: about an hour of alerts from a busy home.
MEMORY_MESSAGES = 1000


class MemoryOverflow:
    """Messages the outbox could not store (a full disk), in order, in memory: sent while the broker is
    connected, moved into the outbox as soon as it stores again (`spill_into`, before any newer message).

    Not durable: a restart loses them (the sink says so at close). Bounded: over `limit`, the oldest
    is dropped, logged by message id and counted, as the outbox itself does. Any thread may call;
    no lock is held while the outbox writes.
    """

    def __init__(self, *, limit: int = MEMORY_MESSAGES) -> None:
        self.limit = limit
        self.dropped = 0
        self._items: deque[OutboxMessage] = deque()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)  # identifies a kept message for `remove`; not an outbox seq

    def __len__(self) -> int:
        return len(self._items)

    def keep(self, topic: str, payload: bytes, *, qos: int, retain: bool, message_id: str, created_at: float) -> None:
        with self._lock:
            self._items.append(OutboxMessage(next(self._numbers), topic, payload, qos, retain, message_id,
                                             created_at))
            over = [self._items.popleft() for _ in range(len(self._items) - self.limit)]
        for message in over:
            self.dropped += 1
            log.warning("mqtt messages kept in memory over their bound, oldest dropped", message_id=message.message_id,
                        limit=self.limit, dropped_total=self.dropped)

    def spill_into(self, outbox: Outbox) -> None:
        """Move kept messages into the outbox, oldest first, until it refuses one (it stays kept)."""
        while True:
            with self._lock:
                if not self._items:
                    return
                first = self._items[0]
            try:
                outbox.put(first.topic, first.payload, qos=first.qos, retain=first.retain,
                           message_id=first.message_id, created_at=first.created_at)
            except OutboxError:
                return
            with self._lock:
                if self._items and self._items[0] is first:
                    self._items.popleft()

    def peek(self, limit: int) -> list[OutboxMessage]:
        with self._lock:
            return list(itertools.islice(self._items, limit))

    def remove(self, sent: list[OutboxMessage]) -> None:
        """Forget messages the broker acknowledged (those moved into the outbox meanwhile are already gone)."""
        numbers = {message.seq for message in sent}
        with self._lock:
            self._items = deque(m for m in self._items if m.seq not in numbers)


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.rollback()
