"""Files the monitor writes: private modes, whole-line appends, torn-tail repair.

Everything the monitor creates holds observations or alerts about a person, so
files are 0600 and folders 0700 whatever the umask. An append either lands
whole or not at all: on a full disk a half-written line is truncated away
again, so a reader never sees a torn record.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_TAIL_CHUNK = 64 * 1024


def private_dir(path: Path) -> None:
    """Create `path` and any missing parents as 0700 folders (existing ones are left as they are)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=PRIVATE_DIR_MODE)
            os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask


def open_append(path: Path) -> int:
    """A file descriptor appending to `path`, created 0600 when new."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)


def append_whole(fd: int, data: bytes, *, fsync: bool = True) -> None:
    """Append `data` to the file, whole or not at all; raises OSError (disk full, I/O error) after undoing.

    The caller is the file's only writer, so the size before the write is where a
    failed write is cut back to.
    """
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):  # nothing more can be done; the next open repairs the tail
            os.ftruncate(fd, start)
        raise


def repair_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline (a write interrupted by a crash); returns the bytes removed."""
    try:
        handle = path.open("r+b")
    except FileNotFoundError:
        return 0
    with handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            handle.truncate(keep)
            os.fsync(handle.fileno())
        return size - keep
