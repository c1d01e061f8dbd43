"""Evidence: what the monitor saw when it warned, kept with the warning so a person can check it.

Every `new` and `update` event carries the observations the model judged (quoted,
bounded: `Alert.observations`) and, for camera zones, the keyframes it was sent, by
id (`Alert.frames`, the first 16 hex digits of the JPEG's sha256, the same digest
the history records use). The JPEG bytes ride along on the event (`AlertEvent.frames`)
for the sinks that show or attach them, and are written to
`<state_dir>/evidence/<alert id>/<frame id>.jpg` (with the alert as `alert.json`) by
one writer thread, whatever `history.record_frames` says. The evidence folder has
its own retention (`[evidence] max_age_days`, `max_mb`). A zone with
`evidence = false` (privacy) keeps no frames: its alerts carry the observations only.

The frames are those of the request, exactly as sent: `EvidenceCapture` wraps the
model backend and keeps, per window, the image data URLs of its requests; the
`EvidenceKeeper` (the pipeline's follow-up, before the escalation engine) takes
them when the window's verdict opens or updates an alert.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import Field

from monitor.backends import BackendWrapper, ModelBackend, ModelReply, ModelRequest
from monitor.core.config import PositiveFloat, Section
from monitor.core.files import UnsafePathError, private_dir, read_nofollow, replace_file
from monitor.observer import Observer, Settled

if TYPE_CHECKING:
    import asyncio

    from monitor.alerts import AlertEvent, AlertManager
    from monitor.pipeline import AlertFollowUp
    from monitor.settings import Settings

log = structlog.get_logger("monitor.evidence")

EVIDENCE_DIR = "evidence"
_PENDING_WINDOWS = 16  # a backstop: a settled window's images are let go at once (window_settled)
_FRAME_ID_CHARS = 16
_RETENTION_EVERY_S = 600.0
_MAX_FRAME_BYTES = 20 * 1024 * 1024


class EvidenceSettings(Section):
    """`[evidence]`: the frames each warning was judged on, kept in the state dir with the alert."""

    enabled: bool = Field(default=True, description="keep each alert's keyframes (per zone: [[zones]] evidence)")
    max_age_days: PositiveFloat = 30.0
    max_mb: PositiveFloat = 500.0
    max_frames_per_alert: int = Field(default=16, ge=1, le=256, description="an alert's frames kept, newest win")


@dataclass(frozen=True, slots=True)
class EvidenceFrame:
    """One keyframe as it was sent to the model."""

    id: str
    jpeg: bytes

    @classmethod
    def of(cls, jpeg: bytes) -> EvidenceFrame:
        return cls(hashlib.sha256(jpeg).hexdigest()[:_FRAME_ID_CHARS], jpeg)


def jpeg_of(url: str) -> bytes | None:
    """The bytes of a `data:image/...;base64,` URL, or None when it is not one."""
    head, _, data = url.partition(",")
    if not head.startswith("data:image/") or not head.endswith(";base64"):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def request_images(request: ModelRequest) -> list[str]:
    """The image data URLs of a request, in order."""
    urls = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            urls += [str((part.get("image_url") or {}).get("url", "")) for part in content
                     if isinstance(part, dict) and part.get("type") == "image_url"]
    return urls


class EvidenceCapture(BackendWrapper):
    """A ModelBackend that remembers the images each window's requests carried (the newest windows only)."""

    def __init__(self, inner: ModelBackend, images: OrderedDict[str, list[str]]) -> None:
        super().__init__(inner)
        self.images = images

    async def complete(self, request: ModelRequest) -> ModelReply:
        urls = request_images(request)
        if urls:
            window = str(request.meta.get("window", ""))
            known = self.images.setdefault(window, [])
            known += [url for url in urls if url not in known]  # samples of one window share their images
            self.images.move_to_end(window)
            while len(self.images) > _PENDING_WINDOWS:
                self.images.popitem(last=False)
        return await self.inner.complete(request)


class EvidenceStore:
    """`<state_dir>/evidence/`: one folder per alert, its frames and its latest JSON; retention by age and size."""

    def __init__(self, folder: Path, settings: EvidenceSettings) -> None:
        self.folder = folder
        self.settings = settings
        self.failures = 0
        self._retained_at = float("-inf")

    def keep(self, alert: dict[str, Any], frames: Sequence[EvidenceFrame]) -> None:
        """Write the frames (once each) and the alert; then retention, every few minutes. Raises OSError."""
        where = self.folder / _safe_name(str(alert["id"]))
        private_dir(self.folder)
        private_dir(where)
        for frame in frames:
            path = where / f"{frame.id}.jpg"
            if not path.exists():
                replace_file(path, frame.jpeg, durable=False)
        replace_file(where / "alert.json", json.dumps(alert, ensure_ascii=False).encode("utf-8"), durable=False)
        now = time.time()
        if now - self._retained_at >= _RETENTION_EVERY_S:
            self._retained_at = now
            self.enforce(now)

    def read(self, alert_id: str, frame_id: str, limit: int) -> bytes | None:
        """A kept frame, or None when it is gone, unsafe or larger than `limit` bytes."""
        path = self.folder / _safe_name(alert_id) / f"{_safe_name(frame_id)}.jpg"
        try:
            data = read_nofollow(path)
        except (OSError, UnsafePathError):
            return None
        return data if len(data) <= limit else None

    def enforce(self, now: float) -> int:
        """Remove alert folders older than `max_age_days`, then the oldest beyond `max_mb`; returns how many."""
        if not self.folder.is_dir():
            return 0
        folders = sorted((_mtime(p), p) for p in self.folder.iterdir() if p.is_dir() and not p.is_symlink())
        removed = 0
        budget = self.settings.max_mb * 1e6
        total = sum(_size(p) for _, p in folders)
        for mtime, path in folders:
            old = now - mtime > self.settings.max_age_days * 86400.0
            if not old and total <= budget:
                break
            total -= _size(path)
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        if removed:
            log.info("evidence retention", folder=str(self.folder), removed_alerts=removed)
        return removed


def _safe_name(name: str) -> str:
    return "".join(c for c in name if c.isalnum() or c in "-_")[:64] or "_"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    except OSError:
        return 0


class EvidenceKeeper(Observer):
    """Attaches each window's frames to the alert events it causes, and keeps them in the store off the loop.

    As a pipeline observer it lets go of a window's images once the window settled (alert or not): only
    the windows in flight hold theirs.
    """

    def __init__(self, settings: EvidenceSettings, *, store: EvidenceStore | None,
                 private_zones: Iterable[str] = ()) -> None:
        self.settings = settings
        self.store = store
        self.private_zones = frozenset(private_zones)
        self.images: OrderedDict[str, list[str]] = OrderedDict()
        self.failures = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence")
        self._lock = threading.Lock()

    @classmethod
    def in_state_dir(cls, settings: Settings) -> EvidenceKeeper:
        """The daemon's keeper: `<state_dir>/evidence/`, the zones with `evidence = false` kept private."""
        store = EvidenceStore(settings.service.state_dir / EVIDENCE_DIR, settings.evidence)
        return cls(settings.evidence, store=store, private_zones=[z.id for z in settings.zones if not z.evidence])

    def configure(self, settings: Settings) -> None:
        """A reload: new limits and private zones from the next alert on (the folder stays where it is)."""
        self.settings = settings.evidence
        self.private_zones = frozenset(z.id for z in settings.zones if not z.evidence)
        if self.store is not None:
            self.store.settings = settings.evidence

    def read(self, alert_id: str, frame_id: str) -> bytes | None:
        """A kept frame (a notification of an escalation after a restart attaches it); None when not kept."""
        return None if self.store is None else self.store.read(alert_id, frame_id, _MAX_FRAME_BYTES)

    def capture(self, backend: ModelBackend) -> ModelBackend:
        return EvidenceCapture(backend, self.images)

    def window_settled(self, settled: Settled) -> None:
        self.images.pop(settled.window.id, None)

    def wants(self, zone: str) -> bool:
        return self.settings.enabled and zone not in self.private_zones

    def frames_of(self, window_id: str, zone: str) -> tuple[EvidenceFrame, ...]:
        """The frames the window's requests carried (taken: each window's once), none for a private zone."""
        urls = self.images.pop(window_id, [])
        if not self.wants(zone):
            return ()
        frames = {}
        for url in urls:
            jpeg = jpeg_of(url)
            if jpeg is not None:
                frame = EvidenceFrame.of(jpeg)
                frames[frame.id] = frame
        return tuple(frames.values())

    def keep(self, alert: dict[str, Any], frames: Sequence[EvidenceFrame]) -> None:
        """Write in the background; a failure is counted and logged, never raised."""
        if self.store is None:
            return
        store = self.store

        def write() -> None:
            try:
                store.keep(alert, frames)
            except (OSError, UnsafePathError) as exc:
                with self._lock:
                    self.failures += 1
                log.error("evidence not kept", alert=alert.get("id"), folder=str(store.folder), error=str(exc))

        try:
            self._writer.submit(write)
        except RuntimeError:  # closed: the service is stopping
            log.warning("evidence not kept: stopping", alert=alert.get("id"))

    def attach(self, alert: Any, window_id: str) -> tuple[Any, tuple[EvidenceFrame, ...]]:
        """The alert with its frames' ids added (newest last, bounded), and the frames of this window."""
        frames = self.frames_of(window_id, alert.zone)
        if not frames:
            return alert, ()
        ids = tuple(dict.fromkeys([*alert.frames, *(f.id for f in frames)]))[-self.settings.max_frames_per_alert:]
        return replace(alert, frames=ids), frames

    def close(self) -> None:
        self._writer.shutdown(wait=True)


    def annotate(self, event: AlertEvent, alerts: AlertManager) -> AlertEvent:
        """A `new` or `update` event with its window's frames; the open alert remembers their ids."""
        if event.type not in ("new", "update"):
            return event
        alert, frames = self.attach(event.alert, event.alert.window_id)
        if not frames:
            return event
        if alert.id in alerts.open:
            alerts.open[alert.id] = replace(alerts.open[alert.id], frames=alert.frames)
        self.keep(alert.to_json(), frames)
        return replace(event, alert=alert, frames=frames)


class WithEvidence:
    """The pipeline's follow-up: evidence first, then the inner follow-up (the escalation engine)."""

    def __init__(self, inner: AlertFollowUp, keeper: EvidenceKeeper, alerts: AlertManager) -> None:
        self.inner = inner
        self.keeper = keeper
        self.alerts = alerts
        self.wake: asyncio.Event = inner.wake  # the same event: who sets the inner's wakes this one

    def annotate(self, event: AlertEvent) -> AlertEvent:
        try:
            event = self.keeper.annotate(event, self.alerts)
        except Exception:  # evidence is worth less than the warning itself: it goes out without it
            self.keeper.failures += 1
            log.exception("evidence not attached", alert=event.alert.id)
        return self.inner.annotate(event)

    async def step(self) -> list[AlertEvent]:
        return await self.inner.step()
