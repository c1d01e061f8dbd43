"""Durable SQLite files in the state dir (the MQTT outbox, the notify queue): opened safely or started afresh.

A file is opened only after `prepare_sqlite` has checked it and its -wal/-shm/-journal with `lstat`
(SQLite follows symlinks). It is opened in WAL mode with `synchronous=FULL`, so a committed write
survives a crash or a power cut, its tables are created, and it is checked (`PRAGMA quick_check`,
and a probe query only a file of this kind answers). A file that is not a healthy one of its kind
(a planted link, garbage, truncated, a bad header, a folder in its place, some other program's
database) is moved aside with its side files as `<name>.corrupt-<UTC time>`, both paths logged,
and a fresh one is created. Any other failure (a full disk, a lock) is raised and the file is left
alone: it may hold messages that are still to be delivered.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from monitor.core.files import SQLITE_SIDE_FILES, UnsafePathError, prepare_sqlite, private_dir

# SQLite's primary result codes for a file that is damaged or is no database at all.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


class CorruptDatabase(Exception):
    """The file is not a healthy database of its kind; says why."""


def open_durable_sqlite(path: Path, *, schema: str, probe: str, what: str, kind: str, log: Any) -> sqlite3.Connection:
    """Open (or create, 0600) the durable SQLite file `path`, moving an unhealthy one aside first.

    `schema` creates the tables when missing; `probe` is a query only a file of this kind answers.
    `what` names the file in the log line ("mqtt outbox"), `kind` says what it is not ("outbox");
    `log` is bound to the path. Raises CorruptDatabase, sqlite3.Error or OSError when it cannot be
    opened even fresh; the caller names the file in its own error.
    """
    private_dir(path.parent)
    try:
        prepare_sqlite(path)
    except UnsafePathError as exc:  # a planted link: moved aside, never opened
        _move_aside(path, exc.problem, what=what, kind=kind, log=log)
        prepare_sqlite(path)
    try:
        return _connect(path, schema=schema, probe=probe, kind=kind)
    except CorruptDatabase as exc:
        _move_aside(path, str(exc), what=what, kind=kind, log=log)
    prepare_sqlite(path)
    return _connect(path, schema=schema, probe=probe, kind=kind)


def _connect(path: Path, *, schema: str, probe: str, kind: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise CorruptDatabase(f"integrity check failed: {check}")
        try:
            db.execute(probe).fetchall()
        except sqlite3.OperationalError as exc:  # some other program's database
            raise CorruptDatabase(f"not {_article(kind)} {kind}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        db.close()
        if is_corrupt(exc):
            raise CorruptDatabase(str(exc)) from exc
        raise
    except BaseException:
        db.close()
        raise
    return db


def is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """True for an error that says the file is damaged or no database, not that it cannot be used now."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return "malformed" in str(exc) or "not a database" in str(exc)


def _move_aside(path: Path, reason: str, *, what: str, kind: str, log: Any) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while os.path.lexists(aside):  # a second bad file within the same second keeps the first one
        counter += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
    if os.path.lexists(path):
        path.rename(aside)  # a symlink is renamed itself: what it points to is left alone
    for suffix in SQLITE_SIDE_FILES:  # a stale journal must not be applied to the fresh file
        side = path.with_name(path.name + suffix)
        if os.path.lexists(side):
            side.rename(aside.with_name(aside.name + suffix))
    log.warning(f"{what} is not a healthy {kind}; moved aside, starting a fresh one", moved_to=str(aside),
                reason=reason)


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"
