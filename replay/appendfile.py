"""An append-only JSON-lines file kept open: one whole line per write, handed to the OS at once.

The run log and the response caches append a line per trial and per model call.
Opening and closing the file for each line cost more event-loop time than the
write itself; the file is opened once (O_APPEND), each line goes out in one
unbuffered `write`, so a reader (or a crash) sees whole lines, as before. The
file is closed with its owner (or at exit), never left to a ResourceWarning.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path


class AppendFile:
    """Lines appended to `path`, each written to the OS before `append` returns (no fsync, as before)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._closer = weakref.finalize(self, os.close, self._fd)

    def append(self, line: str) -> None:
        """Write `line` and a newline in one system call."""
        data = (line + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (a full pipe, a signal): finish the line
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        self._closer()
