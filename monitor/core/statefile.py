"""Small JSON state files in the state dir, written durably and read forgivingly.

A write goes to a temporary file beside the target, is fsynced, renamed over the
target and the folder fsynced: after a crash or a power cut the file holds the
old or the new content, never half of each. Files are created 0600, the
temporary file exclusively, and no symlink is ever followed (a link planted in
the file's place is moved aside like a corrupt file, never read or written through).

A file that cannot be read back (garbage, truncated, wrong shape) must never
stop the daemon: it is moved aside with a timestamped name, logged with both
paths, and the caller starts fresh. Writes requested from the event loop run in
a thread, one at a time, newest content wins: a burst of changes costs one
write, and the file always ends with the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import structlog

from monitor.core.files import UnsafePathError, private_dir, read_nofollow, replace_file
from monitor.core.jsonio import loads_bounded

log = structlog.get_logger("monitor.statefile")

# Controls and open alerts are a few KB; a larger document is not one the monitor wrote.
MAX_STATE_BYTES = 16 * 1024 * 1024


def write_durably(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (exclusive temporary file, fsync, rename, fsync the
    folder); a symlink at `path` is replaced, never written through."""
    private_dir(path.parent)
    replace_file(path, data)


def move_aside(path: Path, problem: str, *, what: str) -> Path | None:
    """Rename an unusable state file to `<name>.corrupt-<UTC time>` and say so; the caller starts fresh."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        os.replace(path, target)
    except OSError as exc:
        log.error(f"{what} unusable and could not be moved aside; starting fresh", path=str(path),
                  problem=problem, error=str(exc))
        return None
    log.warning(f"{what} unusable; moved aside, starting fresh", path=str(path), moved_to=str(target),
                problem=problem)
    return target


class JsonStateFile:
    """One JSON document in the state dir: `load()` at start, `save()` on every change, `flush()` at stop.

    `what` names the file in log lines ("controls file", "open alerts file"). It is read with the
    bounded reader: a document too large or nested too deep is unusable like garbage.
    """

    def __init__(self, path: Path, *, what: str, max_bytes: int = MAX_STATE_BYTES) -> None:
        self.path = path
        self.what = what
        self.max_bytes = max_bytes
        self._pending: Any = None  # the newest document not yet written
        self._writer: asyncio.Task[None] | None = None
        self.write_failures = 0

    def load(self) -> Any:
        """The stored document, or None when there is none or it was unusable (then moved aside)."""
        try:
            raw = read_nofollow(self.path)
        except FileNotFoundError:
            return None
        except UnsafePathError as exc:
            move_aside(self.path, exc.problem, what=self.what)
            return None
        except OSError as exc:
            if self.path.is_dir():
                move_aside(self.path, "a folder where a file belongs", what=self.what)
            else:
                log.error(f"{self.what} unreadable; starting fresh", path=str(self.path), error=str(exc))
            return None
        try:
            return loads_bounded(raw, what=self.what, max_bytes=self.max_bytes)
        except ValueError as exc:  # JsonInputError: too large, too deep, not JSON
            move_aside(self.path, str(exc), what=self.what)
            return None

    def corrupt(self, problem: str) -> None:
        """The caller found the loaded document unusable (wrong shape): move it aside."""
        move_aside(self.path, problem, what=self.what)

    def save(self, document: Any) -> None:
        """Write `document` soon: in a thread when called on a running event loop, else at once.

        The caller hands over the document (it must not change it afterwards): it is serialised
        in the writer thread, so an alert decision does not wait for its journal's JSON.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._write(document)
            return
        self._pending = document
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=f"write:{self.path.name}")

    async def flush(self) -> None:
        """Wait until the latest saved document is on disk."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _drain(self) -> None:
        # One turn of the loop first: the change that caused this write (an alert) goes out before
        # the writer thread is woken, which costs the event loop a tenth of a millisecond.
        await asyncio.sleep(0)
        while (document := self._pending) is not None:
            self._pending = None
            await asyncio.to_thread(self._write, document)

    def _write(self, document: Any) -> None:
        try:
            write_durably(self.path, json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8"))
        except OSError as exc:
            # A full or read-only disk must not stop the monitor; the next change tries again.
            self.write_failures += 1
            log.error(f"{self.what} could not be written; the previous content stays", path=str(self.path),
                      error=str(exc))
            with contextlib.suppress(OSError):
                self.path.with_name(f".{self.path.name}.tmp").unlink()
