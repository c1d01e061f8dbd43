"""The audit log: one JSON line per settled window (observations, answer, verdict, alert, error).

A pipeline observer. Lines are written by one background thread, in order, so a
slow disk never holds up the event loop; `close()` waits for what was queued.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from monitor.core.errors import MalformedReplyError
from monitor.observer import Observer, Settled

log = structlog.get_logger("monitor.audit")


class AuditLog(Observer):
    """Appends a record of every settled window to `path` (nothing when `path` is None)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._lock = threading.Lock()

    def window_settled(self, settled: Settled) -> None:
        path = self.path
        if path is None:
            return
        line = json.dumps(record(settled), ensure_ascii=False) + "\n"
        self._writer.submit(self._append, path, line)

    def _append(self, path: Path, line: str) -> None:
        try:
            with self._lock, path.open("a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError as exc:
            log.error("audit record not written", path=str(path), error=str(exc))

    def close(self) -> None:
        """Wait until every queued record is written."""
        self._writer.shutdown(wait=True)


def record(settled: Settled) -> dict[str, Any]:
    """The audit record of one settled window."""
    window, verdict, error, event = settled.window, settled.verdict, settled.error, settled.event
    return {
        "at": time.time(), "zone": window.zone, "window": window.id,
        "observations": [o.to_json() for o in window.entries],
        "frames": len(window.frames),
        "verdict": verdict.assessment.model_dump() if verdict else None,
        "raw": verdict.raw if verdict else (error.raw if isinstance(error, MalformedReplyError) else None),
        "usage": verdict.usage.to_json() if verdict else None,
        "alert": event.to_json() if event else None,
        "error": {"kind": error.kind, "message": str(error)} if error else None,
    }
