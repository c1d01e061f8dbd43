"""How `monitor ack` reaches a running daemon: request files in `<service.state_dir>/ack-requests/`.

Why files and not the network: the health server is GET-only and bound to
loopback, and any local user can reach loopback, so an acknowledgement over
HTTP would need its own authentication. The state directory already belongs to
the service user (`StateDirectory=` under systemd, mode 0700), so who may
acknowledge is decided by file permissions: root and the service user. It also
works without MQTT and while the broker is down, and the CLI gets an answer.

The exchange: the CLI writes `<id>.json` atomically (a temporary name, then a
rename) into the folder the daemon created at start; the daemon polls the
folder every second, applies the request, removes it and writes `<id>.reply`;
the CLI waits for the reply, reads it and removes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

from monitor.core.errors import JsonInputError, MonitorError
from monitor.core.files import UnsafePathError, read_nofollow, refuse_link, replace_file, trusted_dir
from monitor.core.jsonio import loads_bounded
from monitor.escalation.contract import clean_by
from monitor.escalation.engine import AckRequest, AckResult

log = structlog.get_logger("monitor.escalation.spool")

SPOOL_DIR = "ack-requests"
_MAX_REQUEST_BYTES = 4096
_MAX_REPLY_BYTES = 64 * 1024
_MAX_DEPTH = 4  # a request and a reply are flat objects
_REPLY_TTL_S = 3600.0  # replies nobody collected (the CLI gave up) are removed after this long


class AckSpoolError(MonitorError):
    """An acknowledgement could not be handed to the daemon, or it did not answer; names the folder."""


class AckSpool:
    """The daemon's end: create the folder, take requests, write replies."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / SPOOL_DIR

    def open(self) -> None:
        """Create the folder (0700); UnsafePathError when it is a symlink, another user's, or writable by others."""
        trusted_dir(self.path, what="the acknowledgement folder", setting="service.state_dir")

    def take(self) -> list[AckRequest]:
        """The waiting requests, oldest first; each file is removed once read. Invalid ones are answered here."""
        if not os.path.isdir(self.path) or os.path.islink(self.path):
            return []
        requests = []
        for path in sorted(self.path.glob("*.json"), key=_mtime):
            request_id = path.stem
            try:
                requests.append(self._read(path, request_id))
            except ValueError as exc:
                log.warning("invalid acknowledgement request ignored", path=str(path), reason=str(exc))
                self.answer(request_id, AckResult("invalid", f"{path.name}: {exc}"))
            finally:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self._remove_stale_replies()
        return requests

    def _read(self, path: Path, request_id: str) -> AckRequest:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_REQUEST_BYTES:
            raise ValueError(f"not a regular file of at most {_MAX_REQUEST_BYTES} bytes")
        data = loads_bounded(read_nofollow(path), what="ack request file", max_bytes=_MAX_REQUEST_BYTES,
                             max_depth=_MAX_DEPTH)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        alert_id, zone, by = data.get("alert_id"), data.get("zone"), data.get("by")
        if not all(v is None or isinstance(v, str) for v in (alert_id, zone, by)) or (alert_id, zone) == (None, None):
            raise ValueError("expected alert_id and/or zone as strings, and by")
        return AckRequest(alert_id=alert_id, zone=zone, by=clean_by(by or "cli") or "cli", via="cli",
                          reply_to=request_id)

    def answer(self, request_id: str, result: AckResult) -> None:
        """Write the reply the CLI waits for (atomically: it never reads half a reply)."""
        _write_atomically(self.path / f"{request_id}.reply", result.to_json())

    def _remove_stale_replies(self) -> None:
        now = time.time()
        for path in self.path.glob("*.reply"):
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime > _REPLY_TTL_S:
                    path.unlink()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    replace_file(path, json.dumps(data).encode("utf-8"), durable=False)


# --------------------------------------------------------------------------- the CLI's end


def request_ack(state_dir: Path, *, alert_id: str | None, zone: str | None, by: str,
                timeout_s: float = 5.0, poll_s: float = 0.05) -> dict[str, Any]:
    """Hand an acknowledgement to the daemon and wait for its answer (a JSON object with `status`)."""
    folder = state_dir / SPOOL_DIR
    try:
        refuse_link(folder, kind="folder")
    except UnsafePathError as exc:
        raise AckSpoolError(str(exc)) from None
    if not folder.is_dir():
        raise AckSpoolError(
            f"{folder}: no running monitor uses this state directory (the daemon creates the folder at start): "
            "start it, or pass the --config it runs with (service.state_dir)")
    request_id = uuid.uuid4().hex
    request, reply = folder / f"{request_id}.json", folder / f"{request_id}.reply"
    try:
        _write_atomically(request, {"alert_id": alert_id, "zone": zone, "by": by})
    except PermissionError:
        raise AckSpoolError(f"{folder}: permission denied: run as root or as the monitor's service user") from None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if os.path.lexists(reply):
            return _read_reply(reply)
        time.sleep(poll_s)
    request.unlink(missing_ok=True)  # not applied later, when nobody waits for it any more
    raise AckSpoolError(f"{folder}: the monitor did not answer within {timeout_s:g} s: is it running "
                        "(systemctl status proactive-monitor)?")


def _read_reply(reply: Path) -> dict[str, Any]:
    try:
        answer = loads_bounded(read_nofollow(reply), what="ack reply file", max_bytes=_MAX_REPLY_BYTES,
                               max_depth=_MAX_DEPTH)
    except UnsafePathError as exc:
        raise AckSpoolError(f"the monitor's answer: {exc}") from None
    except JsonInputError as exc:
        raise AckSpoolError(f"{reply}: {exc.detail}") from None
    finally:
        reply.unlink(missing_ok=True)
    if not isinstance(answer, dict):
        raise AckSpoolError(f"{reply}: the answer is not a JSON object")
    return answer
