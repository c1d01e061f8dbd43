"""The recorder: a pipeline observer that keeps a record of every settled window.

It writes one record per window (monitor/history/record.py) to the history folder
(a file per UTC day, retention by age and size) and to `service.audit_log` when
set: the audit log and the history are one format. The model calls of a window are
captured at the model boundary (`capture(backend)`), so the record holds the prompts
as the model saw them and every reply. It also runs the daemon's feedback desk: the
index of published alerts and the feedback received, in the same store.

Everything slow (building the record, hashing and keeping images, writing files,
SQLite) happens on one writer thread, in order, so a slow disk never holds up the
event loop; `close()` waits for what was queued.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from monitor.alerts import AlertEvent
from monitor.assess.context import NotesProvider
from monitor.backends import BackendWrapper, ModelBackend, ModelReply, ModelRequest
from monitor.core.errors import BackendError
from monitor.core.files import creation_problem, open_append, private_dir
from monitor.core.text import redact_credentials
from monitor.history.desk import FeedbackDesk
from monitor.history.feedback import FeedbackStore
from monitor.history.files import HistoryError, HistoryFiles, append_private
from monitor.history.record import CapturedCall, ZoneDescription, build_record
from monitor.history.settings import HistorySettings, feedback_path
from monitor.history.times import utc_day
from monitor.observer import Observer, Settled
from monitor.settings import Settings

log = structlog.get_logger("monitor.history")

# Windows whose calls are kept while they wait to settle; older ones (a window cancelled at
# shutdown never settles) are forgotten first.
_PENDING_WINDOWS = 256
_RETENTION_EVERY_S = 300.0
# Records waiting for the writer thread at most: a disk that hangs (a stale network mount) must not
# grow the queue, and the windows and replies it holds, until memory runs out.
MAX_QUEUED_RECORDS = 1000
_ERROR_EVERY_S = 60.0
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


def prepare_audit_log(path: Path | None) -> None:
    """Create `service.audit_log`'s missing folders (0700) and the file (0600), or raise HistoryError naming it.

    Checked when the daemon starts and when a reload sets a new path: a path that can never be written
    is refused then, in one line, instead of failing every record afterwards. A full disk is no reason
    to refuse (the log is an extra, and space may come back): said, and the records try again.
    """
    if path is None:
        return
    try:
        private_dir(path.parent)
        os.close(open_append(path))
    except OSError as exc:
        if exc.errno in _TRANSIENT_ERRNOS:
            log.error("audit log not ready; each record tries again", path=str(path), error=exc.strerror or str(exc))
            return
        raise HistoryError(_audit_refusal(path, exc)) from exc


def audit_log_problem(path: Path | None) -> str | None:
    """What `prepare_audit_log` would refuse, in its words, creating nothing (`check-config`)."""
    error = creation_problem(path) if path is not None else None
    return _audit_refusal(path, error) if path is not None and error is not None else None


def _audit_refusal(path: Path, error: OSError) -> str:
    return (f"service.audit_log = {path}: cannot be written: {error.strerror or error}; "
            "create its folder for the monitor's user, or choose another path")


def _append_audit(path: Path, line: str) -> None:
    try:
        append_private(path, line)
    except FileNotFoundError:  # its folder was removed while running, or not made at start (disk full)
        private_dir(path.parent)
        append_private(path, line)


class CallCapture(BackendWrapper):
    """A ModelBackend that keeps each call (request, reply or error) by the window that made it."""

    def __init__(self, inner: ModelBackend, keep: Callable[[CapturedCall], None]) -> None:
        super().__init__(inner)
        self.keep = keep

    async def complete(self, request: ModelRequest) -> ModelReply:
        try:
            reply = await self.inner.complete(request)
        except BackendError as exc:
            self.keep(CapturedCall(request, None, f"{exc.kind}: {exc}"))
            raise
        self.keep(CapturedCall(request, reply))
        return reply


def describe(settings: Settings) -> tuple[ZoneDescription, dict[str, ZoneDescription]]:
    """What produced each zone's verdicts (model, strategy, window bounds): the default and per zone."""
    model = settings.model
    identity = {"backend": model.backend, "model": model.model, "base_url": model.base_url,
                "temperature": model.temperature, "max_tokens": model.max_tokens,
                "accepts_images": model.accepts_images}
    windows = settings.windows.model_dump(mode="json", exclude={"queue_size"})

    def of(assessment: Any) -> ZoneDescription:
        return ZoneDescription(identity, assessment.recorded(), assessment.label, windows)

    zones = {z.id: of(z.assessment) for z in settings.zones if z.assessment is not None}
    return of(settings.assessment), zones


class HistoryRecorder(Observer):
    """Records settled windows to the history and the audit log; runs the feedback desk."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time,
                 store: FeedbackStore | None = None) -> None:
        self.clock = clock
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self._calls: OrderedDict[str, list[CapturedCall]] = OrderedDict()
        self._calls_lock = threading.Lock()
        self._retained_at = float("-inf")
        self._failed_at: dict[str, float] = {}
        self._queued = 0  # records submitted and not yet written (or failed)
        self._count_lock = threading.Lock()  # the loop and the writer thread both count
        # Records not written, by part ("history", "audit_log"): written on the writer thread, read by the stats.
        self.failures: Counter[str] = Counter()
        self.desk: FeedbackDesk | None = None
        prepare_audit_log(settings.service.audit_log)
        self.configure(settings)
        if settings.history.feedback:
            self.desk = self._open_desk(store or FeedbackStore(feedback_path(settings.service.state_dir)), settings)

    def _open_desk(self, store: FeedbackStore, settings: Settings) -> FeedbackDesk | None:
        # Monitoring matters more than feedback on it: a store that cannot be opened or read (a damaged
        # file, rows that are not what this monitor writes) is said loudly, once, and the monitor runs on.
        try:
            desk = FeedbackDesk(store.open(), submit=self._submit, zones=settings.zone_ids(), clock=self.clock,
                                failures=self.failures)
            desk.load()
        except Exception as exc:
            self.failures["feedback"] += 1
            log.error("running without feedback on alerts", error=str(exc), error_type=type(exc).__name__)
            store.close()
            return None
        return desk

    def configure(self, settings: Settings) -> None:
        """Take the (re)loaded configuration: what to record, where, and what produced the verdicts."""
        self.settings: HistorySettings = settings.history
        self.audit_path: Path | None = settings.service.audit_log
        self.files = HistoryFiles(settings.history.folder(settings.service.state_dir))
        self.default, self.zones = describe(settings)
        if self.desk is not None:
            self.desk.zones = set(settings.zone_ids())
        if self.settings.enabled:
            self._retained_at = float("-inf")  # limits may have changed: apply them with the next record
            try:
                self.files.ensure()
            except HistoryError as exc:  # every record will fail and say so; the monitor runs on
                log.error("history folder unusable", error=str(exc))

    # -- the model boundary -------------------------------------------------------------------
    def capture(self, backend: ModelBackend) -> ModelBackend:
        """`backend`, with its calls kept for the records (always: a reload may turn recording on)."""
        return CallCapture(backend, self._keep_call)

    def _keep_call(self, call: CapturedCall) -> None:
        window = str(call.request.meta.get("window", ""))
        with self._calls_lock:
            self._calls.setdefault(window, []).append(call)
            while len(self._calls) > _PENDING_WINDOWS:
                self._calls.popitem(last=False)

    # -- the observer ----------------------------------------------------------------------------
    def window_settled(self, settled: Settled) -> None:
        with self._calls_lock:
            calls = self._calls.pop(settled.window.id, [])
        if not self.settings.enabled and self.audit_path is None:
            return
        description = self.zones.get(settled.window.zone, self.default)
        at, settings, audit_path, files = self.clock(), self.settings, self.audit_path, self.files  # as of now
        if not self._enqueue():
            self._lost(settled.window.id, settings, audit_path, OSError(
                f"{MAX_QUEUED_RECORDS} records still waiting for the writer (the disk may hang)"))
            return

        def write() -> None:
            try:
                self._write(settled, calls, description, at, settings, audit_path, files)
            finally:
                with self._count_lock:
                    self._queued -= 1

        self._submit(write)

    def _enqueue(self) -> bool:
        """Count one more record waiting for the writer; False when MAX_QUEUED_RECORDS are waiting."""
        with self._count_lock:
            if self._queued >= MAX_QUEUED_RECORDS:
                return False
            self._queued += 1
            return True

    def alert_published(self, event: AlertEvent) -> None:
        if self.desk is not None:
            self.desk.alert_published(event)

    @property
    def notes(self) -> NotesProvider | None:
        """Where zones with `assessment.feedback_context` get their notes (None when feedback is off)."""
        return self.desk.notes if self.desk is not None else None

    def feedback_counts(self) -> dict[str, int]:
        """Stored feedback by label (empty when feedback is off)."""
        return self.desk.counts() if self.desk is not None else {}

    def close(self) -> None:
        """Wait until every queued record is written, then close the store."""
        self._writer.shutdown(wait=True)
        if self.desk is not None:
            self.desk.store.close()

    def flush(self) -> None:
        """Wait until everything queued so far is written (tests, shutdown of a replay)."""
        self._writer.submit(lambda: None).result()

    # -- the writer thread --------------------------------------------------------------------------
    def _submit(self, job: Callable[[], None]) -> None:
        try:
            self._writer.submit(self._guarded, job)
        except RuntimeError:  # shut down: the service is stopping and nothing more is recorded
            log.debug("history writer closed; job dropped")

    def _guarded(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # one bad record must not stop the ones after it
            log.exception("history job failed")

    def _write(self, settled: Settled, calls: list[CapturedCall], description: ZoneDescription, at: float,
               settings: HistorySettings, audit_path: Path | None, files: HistoryFiles) -> None:
        day, zone = utc_day(at), settled.window.zone
        keep = None
        if settings.enabled and settings.record_frames:
            keep = lambda digest, jpeg: files.keep_frame(day, zone, digest, jpeg)  # noqa: E731
        try:
            # URL credentials (a camera's rtsp://user:pass@..., an endpoint's) never reach a file.
            line = redact_credentials(json.dumps(build_record(settled, calls, description, at=at, keep_image=keep),
                                                 ensure_ascii=False)) + "\n"
        except Exception as exc:  # a record that cannot be built is lost for both files: counted, said
            self._lost(settled.window.id, settings, audit_path, exc)
            return
        # Two parts, two outcomes: a full history folder must not cost the audit log its record, nor the reverse.
        if settings.enabled:
            try:
                files.append(day, line)
            except (OSError, HistoryError) as exc:
                self._failed("history", exc, files.folder)
        if audit_path is not None:
            try:
                _append_audit(audit_path, line)
            except OSError as exc:
                self._failed("audit_log", exc, audit_path)
        # Also as soon as the records written since the last pass may exceed history.max_mb: the bound holds
        # under load, not only every few minutes.
        due = at - self._retained_at >= _RETENTION_EVERY_S or files.over(settings.max_mb * 1e6)
        if settings.enabled and due:
            self._retained_at = at
            self._retain(settings, files, at)

    def _retain(self, settings: HistorySettings, files: HistoryFiles, now: float) -> None:
        try:
            purged = files.enforce(max_age_s=settings.max_age_days * 86400.0,
                                   frames_max_age_s=settings.frames_max_age_days * 86400.0,
                                   max_bytes=settings.max_mb * 1e6, now=now)
        except (OSError, HistoryError) as exc:
            self._failed("history", exc, files.folder)
            return
        if purged.files:
            log.info("history retention", folder=str(files.folder), removed=purged.summary())

    def _lost(self, window: str, settings: HistorySettings, audit_path: Path | None, exc: Exception) -> None:
        """A record that reaches neither file: a failure of each part that wanted it."""
        for part, wanted in (("history", settings.enabled), ("audit_log", audit_path is not None)):
            if wanted:
                self._failed(part, exc, None, window=window)

    def _failed(self, part: str, exc: Exception, where: Path | None, *, window: str | None = None) -> None:
        # A full or read-only disk fails every record: say so once a minute per part, with the count.
        with self._count_lock:
            self.failures[part] += 1
            now = time.monotonic()
            due = now - self._failed_at.get(part, float("-inf")) >= _ERROR_EVERY_S
            if due:
                self._failed_at[part] = now
        if due:
            error = getattr(exc, "strerror", None) or str(exc)
            log.error("history record not written", part=part, path=str(where) if where else None, window=window,
                      error=error, error_type=type(exc).__name__, failures=self.failures[part])
