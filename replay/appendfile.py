"""An append-only JSON-lines file kept open: one whole line per write, handed to the OS at once.

The run log and the response caches append a line per trial and per model call.
Opening and closing the file for each line cost more event-loop time than the
write itself; the file is opened once (O_APPEND), each line goes out in one
unbuffered `write`, so a reader (or a crash) sees whole lines, as before. The
file is closed with its owner (or at exit), never left to a ResourceWarning.

Everything the replay writes quotes observations, alerts or feedback notes about a
person, so its files are 0600 and its folders 0700, like the monitor's state dir
(`write_private`, `private_folder`), whatever the umask and whatever mode an older file had.
A folder that already exists (a `--out` the user made) keeps its mode.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from monitor.core.files import PRIVATE_FILE_MODE, private_dir


def private_folder(path: Path) -> None:
    """Create `path` and any missing parents as 0700 folders; an existing folder is the user's and left as it is
    (its replay files are 0600 all the same)."""
    private_dir(path)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` as a 0600 file (an existing file is truncated and made 0600 first)."""
    private_folder(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        handle.write(text)


class AppendFile:
    """Lines appended to `path`, each written to the OS before `append` returns (no fsync, as before)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_folder(path.parent)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        os.fchmod(self._fd, PRIVATE_FILE_MODE)  # a log from an older version may be 0644
        self._closer = weakref.finalize(self, os.close, self._fd)

    def append(self, line: str) -> None:
        """Write `line` and a newline in one system call."""
        data = (line + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (a full pipe, a signal): finish the line
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        self._closer()
