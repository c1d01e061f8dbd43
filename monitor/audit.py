"""The audit log: one JSON line per settled window (observations, answer, verdict, alert, error).

A pipeline observer. Lines are written by one background thread, in order, so a
slow disk never holds up the event loop; `close()` waits for what was queued.
Each line lands whole or not at all (a full disk is logged and counted in
`write_failures`), the file is created 0600, and URL credentials never reach it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from monitor.core.errors import MalformedReplyError
from monitor.core.files import append_whole, open_append, private_dir, repair_torn_tail
from monitor.core.text import redact_credentials
from monitor.observer import Observer, Settled

log = structlog.get_logger("monitor.audit")


class AuditLog(Observer):
    """Appends a record of every settled window to `path` (nothing when `path` is None)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.write_failures = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self._lock = threading.Lock()
        self._prepared = False

    def window_settled(self, settled: Settled) -> None:
        path = self.path
        if path is None:
            return
        line = redact_credentials(json.dumps(record(settled), ensure_ascii=False)) + "\n"
        self._writer.submit(self._append, path, line.encode("utf-8", "replace"))

    def _append(self, path: Path, line: bytes) -> None:
        with self._lock:
            try:
                self._prepare(path)
                # Opened per record, so a rotated file is followed; the fsync is the JSONL sink's job, not ours.
                fd = open_append(path)
                try:
                    append_whole(fd, line, fsync=False)
                finally:
                    os.close(fd)
            except OSError as exc:
                self.write_failures += 1
                log.error("audit record not written", path=str(path), error=exc.strerror or str(exc),
                          failures=self.write_failures)

    def _prepare(self, path: Path) -> None:
        if self._prepared:
            return
        private_dir(path.parent)
        if removed := repair_torn_tail(path):
            log.warning("audit log: cut a torn last line left by an interrupted write", path=str(path),
                        bytes_removed=removed)
        self._prepared = True

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
