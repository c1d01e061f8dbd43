"""The state dir is trusted ground: checked once at start, before anything in it is read or written.

The monitor reads back what it finds there (controls, open alerts, queued alerts,
acknowledgement requests) and writes records about a person into it, so it must be
a folder of the monitor's own user that nobody else can write: otherwise another
user could plant links, files or requests. A folder that fails the check stops the
start with one line naming it and the fix. The state dir itself may be a symlink
(systemd's `DynamicUser=` makes `/var/lib/<name>` one): the folder it points to is
what is checked. The folders the monitor keeps inside it must not be links.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import structlog

from monitor.core.errors import MonitorError
from monitor.core.files import UnsafePathError, check_private_dir, creation_problem, trusted_dir
from monitor.escalation.spool import SPOOL_DIR
from monitor.settings import Settings

log = structlog.get_logger("monitor.statedir")


class StateDirError(MonitorError):
    """The state dir (or a folder the monitor keeps in it) is unsafe or cannot be created; names it and the fix."""


def open_state_dir(settings: Settings) -> Path:
    """Create the state dir (0700) when missing and check it and its folders; returns the folder checked."""
    state = settings.service.state_dir
    with _refused(state):
        real = trusted_dir(Path(os.path.realpath(state)), what="the state dir", setting="service.state_dir")
        _check_inside(settings)
    log.info("state dir", path=str(state), **({"resolved": str(real)} if real != state else {}))
    return real


def check_state_dir(settings: Settings) -> None:
    """What `open_state_dir` would refuse, in its words, creating nothing (`check-config`, and `run` first)."""
    state = settings.service.state_dir
    with _refused(state):
        real = Path(os.path.realpath(state))
        if os.path.lexists(real):
            check_private_dir(real, what="the state dir", setting="service.state_dir")
        elif (problem := creation_problem(real, kind="folder")) is not None:
            raise problem
        _check_inside(settings)


def _check_inside(settings: Settings) -> None:
    state = settings.service.state_dir
    inside = [state / SPOOL_DIR]
    if settings.history.enabled:
        inside.append(settings.history.folder(state))
    for folder in inside:
        if os.path.lexists(folder):
            check_private_dir(folder, what="a folder the monitor keeps its state in", setting="service.state_dir")


@contextlib.contextmanager
def _refused(state: Path) -> Iterator[None]:
    """An unsafe or uncreatable state dir as StateDirError, one line naming it and the fix."""
    try:
        yield
    except UnsafePathError as exc:
        raise StateDirError(f"service.state_dir: {exc}") from None
    except OSError as exc:
        raise StateDirError(f"service.state_dir: {exc.filename or state}: cannot create: {exc.strerror or exc} "
                            "(choose a folder the monitor's user may create, or create it for that user)") from None
