"""The pipeline: sources -> zone windows -> assessment -> alerts -> sinks.

Nothing here knows whether it runs live or in replay. Stages are joined by a
newest-wins slot per zone (the model stage is the slow one; an older pending
window of the same zone is dropped and counted when a newer one arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from monitor.alerts import AlertEvent, AlertManager
from monitor.assess import Assessor
from monitor.assessment import Verdict
from monitor.control import ZoneControls
from monitor.errors import BackendError, MalformedReplyError
from monitor.settings import AlertSettings, WindowSettings
from monitor.sinks import AlertSink
from monitor.stats import Stats
from monitor.windows import LatestSlot, RollingWindow, Window
from sensors.types import Observation

log = structlog.get_logger("monitor.pipeline")
Emit = Callable[[Observation], Awaitable[None]]


class ObservationSource(Protocol):
    """Anything that emits observations until it ends or is cancelled."""

    id: str
    ended: bool

    async def run(self, emit: Emit) -> None: ...


class Pipeline:
    """Runs the stages as one task group; `stop()` starts an ordered, bounded shutdown."""

    def __init__(
        self,
        *,
        sources: Sequence[tuple[ObservationSource, str]],
        assessor: Assessor,
        sinks: Sequence[AlertSink],
        windows: WindowSettings,
        alerts: AlertSettings,
        workers: int = 1,
        stats: Stats | None = None,
        exit_when_sources_end: bool = False,
        shutdown_timeout_s: float = 10.0,
        audit_path: Path | None = None,
        controls: ZoneControls | None = None,
    ) -> None:
        self.sources = list(sources)
        self.assessor = assessor
        self.sinks = list(sinks)
        self.window_settings = windows
        self.controls = controls or ZoneControls()
        self.alerts = AlertManager(alerts, controls=self.controls)
        self.workers = workers
        self.stats = stats or Stats()
        self.exit_when_sources_end = exit_when_sources_end
        self.shutdown_timeout_s = shutdown_timeout_s
        self.audit_path = audit_path
        self.zone_of = {source.id: zone for source, zone in self.sources}
        self.windows: dict[str, RollingWindow] = {}
        self.slot = LatestSlot()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._busy = 0
        self.events: list[AlertEvent] = []
        self.verdicts: list[tuple[Window, Verdict | BackendError]] = []

    # -- public -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the pipeline to stop; safe to call from a signal handler."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Run until stopped (or, with exit_when_sources_end, until every source has ended)."""
        for sink in self.sinks:
            await sink.start()
        try:
            async with asyncio.TaskGroup() as group:
                source_tasks = [group.create_task(self._run_source(s), name=f"source:{s.id}") for s, _ in self.sources]
                worker_tasks = [group.create_task(self._worker(i), name=f"assess:{i}") for i in range(self.workers)]
                scheduler = group.create_task(self._schedule(), name="scheduler")
                expiry = group.create_task(self._expire_alerts(), name="alert-expiry")
                await self._stopping.wait()
                await self._shutdown(source_tasks, scheduler, expiry, worker_tasks)
        finally:
            for sink in self.sinks:
                await sink.close()

    def stats_json(self) -> dict[str, Any]:
        """The counters, with those the sources keep themselves folded in."""
        self.stats.bad_log_lines = sum(getattr(source, "bad_lines", 0) for source, _ in self.sources)
        return self.stats.to_json()

    # -- stages -------------------------------------------------------------------
    async def _run_source(self, source: ObservationSource) -> None:
        try:
            await source.run(self._ingest)
        finally:
            source.ended = True
            log.info("source ended", source=source.id)
            self._wake.set()

    async def _ingest(self, observation: Observation) -> None:
        zone = self.zone_of.get(observation.source, observation.source)
        window = self.windows.get(zone)
        if window is None:
            window = self.windows[zone] = RollingWindow(
                zone,
                max_age_s=self.window_settings.max_age_s,
                max_entries=self.window_settings.max_entries,
                min_interval_s=self.window_settings.min_interval_s,
            )
        window.add(observation)
        self._wake.set()

    async def _schedule(self) -> None:
        while not self._stopping.is_set():
            await self._offer_due_windows()
            if self._finished():
                self.stop()
                return
            self._wake.clear()
            waits = [w.seconds_until_due() for w in self.windows.values()]
            timeout = min((w for w in waits if w is not None), default=None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _offer_due_windows(self) -> None:
        for window in self.windows.values():
            if window.due():
                if not self.controls.is_monitoring(window.zone):
                    window.snapshot()  # consume the new observations: nobody asked about them
                    self.stats.windows_dropped["monitoring_off"] += 1
                    continue
                replaced = await self.slot.put(window.snapshot())
                if replaced is not None:
                    self.stats.windows_dropped["superseded"] += 1
                    log.info("window dropped", zone=replaced.zone, window=replaced.id, reason="superseded")

    def _finished(self) -> bool:
        if not self.exit_when_sources_end or not all(source.ended for source, _ in self.sources):
            return False
        idle = self._busy == 0 and len(self.slot) == 0
        return idle and not any(w.seconds_until_due() is not None for w in self.windows.values())

    async def _worker(self, index: int) -> None:
        while (window := await self.slot.get()) is not None:
            self._busy += 1
            try:
                await self._assess(window)
            finally:
                self._busy -= 1
                self._wake.set()

    async def _assess(self, window: Window) -> None:
        started = time.perf_counter()
        try:
            verdict = await self.assessor.assess(window)
        except BackendError as exc:
            self._record_error(window, exc, time.perf_counter() - started)
            return
        self.stats.windows_assessed += 1
        self.stats.model_calls += verdict.usage.calls
        self.stats.prompt_tokens += verdict.usage.prompt_tokens
        self.stats.completion_tokens += verdict.usage.completion_tokens
        self.verdicts.append((window, verdict))
        event = self.alerts.decide(window, verdict)
        self._summary(window, verdict, event, time.perf_counter() - started)
        self._audit(window, verdict, event)
        if event is not None:
            await self._publish(event)

    def _record_error(self, window: Window, exc: BackendError, elapsed: float) -> None:
        self.stats.model_errors[exc.kind] += 1
        self.verdicts.append((window, exc))
        fields: dict[str, Any] = {"zone": window.zone, "window": window.id, "error": str(exc),
                                  "kind": exc.kind, "latency_s": round(elapsed, 3)}
        if isinstance(exc, MalformedReplyError):
            fields["raw"] = exc.raw[:2000]
        log.error("assessment failed", **fields)
        self._audit(window, None, None, error=exc)

    def _summary(self, window: Window, verdict: Verdict, event: AlertEvent | None, elapsed: float) -> None:
        assessment = verdict.assessment
        log.info(
            "window assessed",
            zone=window.zone, window=window.id, observations=len(window.observations),
            latency_s=round(elapsed, 3), prompt_tokens=verdict.usage.prompt_tokens,
            completion_tokens=verdict.usage.completion_tokens,
            verdict="danger" if assessment.danger else "safe", severity=assessment.severity,
            hazard=assessment.hazard, alert=event.type if event else None, strategy=verdict.strategy,
        )

    def _audit(self, window: Window, verdict: Verdict | None, event: AlertEvent | None,
               error: BackendError | None = None) -> None:
        if self.audit_path is None:
            return
        record = {
            "at": time.time(), "zone": window.zone, "window": window.id,
            "observations": [o.to_json() for o in window.entries],
            "frames": len(window.frames),
            "verdict": verdict.assessment.model_dump() if verdict else None,
            "raw": verdict.raw if verdict else getattr(error, "raw", None),
            "usage": verdict.usage.to_json() if verdict else None,
            "alert": event.to_json() if event else None,
            "error": {"kind": error.kind, "message": str(error)} if error else None,
        }
        with self.audit_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    async def _publish(self, event: AlertEvent) -> None:
        self.events.append(event)
        self.stats.alerts[f"{event.type}:{event.alert.severity}"] += 1
        for sink in self.sinks:
            await sink.publish(event)

    async def _expire_alerts(self) -> None:
        while not self._stopping.is_set():
            for event in self.alerts.expire():
                await self._publish(event)
            await asyncio.sleep(1.0)

    # -- shutdown -------------------------------------------------------------------
    async def _shutdown(self, sources: list[asyncio.Task[None]], scheduler: asyncio.Task[None],
                        expiry: asyncio.Task[None], workers: list[asyncio.Task[None]]) -> None:
        for task in [*sources, expiry]:
            task.cancel()
        await asyncio.gather(*sources, expiry, return_exceptions=True)
        await scheduler
        await self.slot.close()
        _done, pending = await asyncio.wait(workers, timeout=self.shutdown_timeout_s)
        for task in pending:
            log.warning("assessment cancelled at shutdown", task=task.get_name(),
                        reason=f"not finished within shutdown_timeout_s={self.shutdown_timeout_s}")
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
