"""Files the monitor writes: private modes, no symlinks followed, whole-line appends, torn-tail repair.

Everything the monitor creates holds observations or alerts about a person, so
files are 0600 and folders 0700 whatever the umask. An append either lands
whole or not at all: on a full disk a half-written line is truncated away
again, so a reader never sees a torn record.

The state dir is trusted ground: nothing the monitor opens for writing there (or
at a configured output path) is reached through a symbolic link, so a link
planted in its place can never make the monitor write records, or change modes,
somewhere else. Opens use `O_NOFOLLOW`, temporary files are created exclusively,
modes are set on the open descriptor, and a folder the monitor keeps its state in
must belong to its user and be writable by nobody else (`check_private_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_TAIL_CHUNK = 64 * 1024
# O_NONBLOCK: opening a FIFO planted where a file belongs fails at once instead of hanging the writer.
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnsafePathError(OSError):
    """A path the monitor writes is a symlink, not a regular file or folder, or open to other users."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(errno.ELOOP, f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return str(self.strerror)


def refuse_link(path: Path, *, kind: str = "file") -> None:
    """UnsafePathError when `path` exists as a symlink or as something other than a `kind` ("file" or "folder")."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    _check_kind(path, info, kind)


def _check_kind(path: Path, info: os.stat_result, kind: str) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(path, "is a symbolic link; the monitor never writes through one (remove it, "
                                    "or move it away, and start again)")
    wanted = stat.S_ISDIR if kind == "folder" else stat.S_ISREG
    if not wanted(info.st_mode):
        raise UnsafePathError(path, f"is not a regular {kind}")


def open_nofollow(path: Path, flags: int, mode: int = PRIVATE_FILE_MODE) -> int:
    """`os.open` that never follows a symlink at `path` and only ever opens a regular file.

    Raises UnsafePathError naming the path for a symlink or any other kind of file (the
    plain ELOOP would say "too many levels of symbolic links").
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            refuse_link(path)
        raise
    try:
        _check_kind(path, os.fstat(fd), "file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_dir(path: Path) -> None:
    """Create `path` and any missing parents as 0700 folders (existing ones are left as they are).

    The folders created here are checked not to be symlinks before their mode is set, on the
    open folder itself: a link planted between mkdir and chmod changes no other folder's mode.
    """
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=PRIVATE_DIR_MODE)
            _chmod_folder(folder, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
    if missing:
        refuse_link(path, kind="folder")


def _chmod_folder(folder: Path, mode: int) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def check_private_dir(path: Path, *, what: str, setting: str, any_owner: bool = False) -> None:
    """UnsafePathError unless `path` is a real folder of this user that no other user can write.

    A folder others can write (even with the sticky bit) lets them plant links or files the
    monitor would read as its own; one owned by another user can be changed by them at any
    time. The message names the folder, the problem and the fix. `any_owner` is for the
    commands a person runs as root on the service's folders (`monitor history purge`).
    """
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        _check_kind(path, info, "folder")
    user = os.geteuid()
    if info.st_uid != user and not any_owner:
        raise UnsafePathError(path, f"{what} belongs to uid {info.st_uid}, not to the monitor's user "
                                    f"(uid {user}); fix: chown {user} {path} (or set {setting})")
    if info.st_mode & 0o022:
        raise UnsafePathError(path, f"{what} can be written by other users (mode "
                                    f"{stat.S_IMODE(info.st_mode):04o}); fix: chmod 700 {path}")


def trusted_dir(path: Path, *, what: str, setting: str, any_owner: bool = False) -> Path:
    """Create `path` (0700) when missing, check it (`check_private_dir`) and make it 0700; returns it.

    A folder others may only read (0755, made by hand or an older monitor) is accepted and made private.
    """
    private_dir(path)
    check_private_dir(path, what=what, setting=setting, any_owner=any_owner)
    if os.lstat(path).st_mode & 0o077:
        _chmod_folder(path, PRIVATE_DIR_MODE)
    return path


def creation_problem(path: Path, *, kind: str = "file") -> OSError | None:
    """The error making `path` would raise now (`private_dir` for a folder; `private_dir` of its folder and
    `open_append` for a file), or None; nothing is created. For the checks before a start (`check-config`).

    An existing folder is only checked to be a folder here: its owner and mode are `check_private_dir`'s.
    """
    try:
        info: os.stat_result | None = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        info = None
    if info is not None:
        try:
            _check_kind(path, info, kind)
        except UnsafePathError as exc:
            return exc
        return _access_problem(path, os.W_OK, path) if kind == "file" else None
    missing, existing = path, path.parent
    while not os.path.lexists(existing) and existing.parent != existing:
        missing, existing = existing, existing.parent
    if not os.path.isdir(existing):
        return OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(missing))
    return _access_problem(existing, os.W_OK | os.X_OK, missing)


def _access_problem(path: Path, mode: int, named: Path) -> OSError | None:
    """EROFS or EACCES naming `named` when this user may not write (`mode`) at `path`."""
    if os.access(path, mode):
        return None
    code = errno.EROFS if os.statvfs(path).f_flag & os.ST_RDONLY else errno.EACCES
    return OSError(code, os.strerror(code), str(named))


def open_append(path: Path) -> int:
    """A file descriptor appending to `path`, created 0600 when new; UnsafePathError for a symlink."""
    return open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def create_exclusive(path: Path, mode: int = PRIVATE_FILE_MODE) -> int:
    """A new file at `path`, opened for writing: whatever was there (a stale temporary file, a planted
    symlink) is removed first, never written through."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # unlink removes a link itself, not what it points to
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with contextlib.suppress(OSError):
        os.fchmod(fd, mode)  # the umask may have filtered the mode
    return fd


def replace_file(path: Path, data: bytes, *, durable: bool = True, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace `path` with `data` atomically: an exclusive temporary file beside it, fsync, rename.

    The rename replaces a symlink at `path` itself, never its target. With `durable`, the
    folder is fsynced too, so after a power cut the file holds the old or the new content.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    fd = create_exclusive(temporary, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if durable:
        fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_nofollow(path: Path) -> bytes:
    """The content of the regular file `path`; UnsafePathError for a symlink, FileNotFoundError when absent."""
    fd = open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def prepare_sqlite(path: Path) -> None:
    """Make `path` safe to hand to `sqlite3.connect`, which follows symlinks and cannot be told not to.

    UnsafePathError when the database or one of its side files (-wal, -shm, -journal) is a
    symlink or not a regular file; a missing database is created 0600 here (exclusively). An
    existing file is never opened: closing a descriptor of a database this process has open
    would drop that connection's POSIX locks.
    """
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        refuse_link(candidate)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


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


def after_last_newline(handle: BinaryIO, end: int) -> int:
    """Where the line after the last newline before `end` begins (0 when there is none): read backwards in
    chunks, so a huge last line costs no memory."""
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        handle.seek(start)
        newline = handle.read(end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def repair_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline (a write interrupted by a crash); returns the bytes removed.

    UnsafePathError for a symlink: the file it points to is never cut.
    """
    try:
        fd = open_nofollow(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    with os.fdopen(fd, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        keep = after_last_newline(handle, size)
        if keep < size:
            handle.truncate(keep)
            os.fsync(handle.fileno())
        return size - keep


class SecretFileError(Exception):
    """A secret file that cannot be used; says which file and why, never what it holds."""


def secret_path(configured: Path, folder: Path | None) -> Path:
    """Where a configured secret file is: relative to the secrets `folder` when there is one."""
    return configured if configured.is_absolute() or folder is None else folder / configured


def read_secret_file(configured: Path, folder: Path | None, *, max_bytes: int) -> str:
    """The text of the secret file `configured` (see `secret_path`): never through a symlink, at most `max_bytes`.
    SecretFileError "<path>: <problem>" otherwise."""
    path = secret_path(configured, folder)
    try:
        data = read_nofollow(path)
    except (OSError, UnsafePathError) as exc:
        raise SecretFileError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if len(data) > max_bytes:
        raise SecretFileError(f"{path}: larger than {max_bytes} bytes")
    return data.decode("utf-8", errors="replace")


def secrets_dir() -> Path | None:
    """Where secret files live: systemd's credentials dir, or MONITOR_SECRETS_DIR."""
    for variable in ("CREDENTIALS_DIRECTORY", "MONITOR_SECRETS_DIR"):
        value = os.environ.get(variable)
        if value and Path(value).is_dir():
            return Path(value)
    return None
