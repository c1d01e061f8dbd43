"""Local sinks: a readable stdout stream and a JSON-lines file."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import TextIO

import structlog

from monitor.alerts import AlertEvent
from monitor.core.errors import SinkError
from monitor.core.files import append_whole, creation_problem, open_append, private_dir, repair_torn_tail

log = structlog.get_logger("monitor.sinks.local")
# Alerts a failing JSONL file keeps in memory until it can be written again; the oldest go first.
_MAX_PENDING_LINES = 1000

_COLORS = {"critical": "\033[1;31m", "warning": "\033[33m", "info": "\033[36m"}
_RESET = "\033[0m"


class StdoutSink:
    """Alerts for a person reading a terminal."""

    name = "stdout"

    connected = None  # a terminal has no connection to report
    backlog = None  # written before publish returns

    def __init__(self, *, stream: TextIO | None = None, color: bool | None = None, notice: str | None = None) -> None:
        self.stream = stream or sys.stdout
        self.color = self.stream.isatty() if color is None else color
        self.notice = notice

    async def start(self) -> None:
        """Print the notice, if any: the first thing a person reading the warnings should know."""
        if self.notice:
            self.stream.write(self.notice + "\n")
            self.stream.flush()

    async def publish(self, event: AlertEvent) -> None:
        self.stream.write(self.render(event) + "\n")
        self.stream.flush()

    def render(self, event: AlertEvent) -> str:
        alert = event.alert
        stamp = datetime.fromtimestamp(event.at).strftime("%H:%M:%S")
        label = f"{alert.severity.upper():8}"
        if self.color:
            label = f"{_COLORS[alert.severity]}{label}{_RESET}"
        head = f"[{stamp}] {label} {event.type:6} {alert.zone_label}: {alert.hazard}"
        if event.type == "end":
            return f"{head} (ended: {event.end_reason})" if event.end_reason else f"{head} (ended)"
        lines = [head, f"    why:  {alert.reason}", f"    do:   {alert.advice}"]
        if alert.evidence:
            lines.append(f"    seen: {'; '.join(alert.evidence[:3])}")
        lines.append(f"    ({alert.model}, {alert.latency_s:.2f} s, confidence {alert.confidence:.2f}, id {alert.id})")
        return "\n".join(lines)

    async def close(self) -> None:
        self.stream.flush()


def jsonl_problem(path: Path) -> str | None:
    """What opening the JSONL sink at `path` would refuse, in its words, creating nothing (`check-config`)."""
    error = creation_problem(path)
    return _open_refusal(path, error) if error is not None else None


def _open_refusal(path: Path, error: OSError) -> str:
    return (f"sinks.jsonl.path: cannot open {path} for appending: {error.strerror or error}; "
            "make it writable by the monitor's user, or choose another path")


class JsonlSink:
    """One alert event per line, written whole and fsynced before `publish` returns.

    A line that cannot be written (a full disk) is kept in memory, in order, and
    written before the next one once space returns; `publish` raises `SinkError`
    meanwhile so the failure is counted, and the other sinks still get the alert.
    A torn last line left by a crash is cut off at start.
    """

    name = "jsonl"

    connected = None  # a local file has no connection to report

    def __init__(self, path: Path, *, max_pending: int = _MAX_PENDING_LINES) -> None:
        self.path = path
        self.max_pending = max_pending
        self.write_failures = 0
        self.pending_dropped = 0
        self.last_error: str | None = None
        self._fd: int | None = None
        self._pending: deque[tuple[str, bytes]] = deque()
        self._lock = threading.Lock()

    @property
    def backlog(self) -> int:
        """Alerts accepted but not yet on disk (only while writes fail)."""
        return len(self._pending)

    async def start(self) -> None:
        if self._fd is None:
            await asyncio.to_thread(self._open)

    def _open(self) -> None:
        try:
            private_dir(self.path.parent)
            removed = repair_torn_tail(self.path)
            fd = open_append(self.path)
        except OSError as exc:
            raise SinkError(_open_refusal(self.path, exc)) from exc
        if removed:
            log.warning("jsonl sink cut a torn last line left by an interrupted write", path=str(self.path),
                        bytes_removed=removed)
        self._fd = fd

    async def publish(self, event: AlertEvent) -> None:
        if self._fd is None:
            await self.start()
        line = (json.dumps(event.to_json(), ensure_ascii=False) + "\n").encode("utf-8", "replace")
        await asyncio.to_thread(self._append, event.message_id, line)

    def _append(self, message_id: str, line: bytes) -> None:
        with self._lock:
            self._pending.append((message_id, line))
            self._bound_pending()
            failing_before = self.last_error is not None
            try:
                written = self._write_pending()
            except OSError as exc:
                self.write_failures += 1
                self.last_error = exc.strerror or str(exc)
                raise SinkError(
                    f"jsonl sink: cannot append to {self.path}: {self.last_error}; "
                    f"{len(self._pending)} alert(s) kept in memory and written when it works again"
                ) from exc
            if failing_before:
                self.last_error = None
                log.info("jsonl sink writing again", path=str(self.path), written=written)

    def _write_pending(self) -> int:
        assert self._fd is not None
        written = 0
        while self._pending:
            append_whole(self._fd, self._pending[0][1])
            self._pending.popleft()
            written += 1
        return written

    def _bound_pending(self) -> None:
        while len(self._pending) > self.max_pending:
            message_id, _ = self._pending.popleft()
            self.pending_dropped += 1
            log.error("jsonl sink dropped an alert it could not write", path=str(self.path), message_id=message_id,
                      max_pending=self.max_pending, dropped_total=self.pending_dropped)

    async def close(self) -> None:
        if self._fd is None:
            return
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            try:
                self._write_pending()
            except OSError as exc:
                log.error("jsonl sink closed with alerts it could not write", path=str(self.path),
                          lost=len(self._pending), error=exc.strerror or str(exc))
            assert self._fd is not None
            os.close(self._fd)
            self._fd = None
