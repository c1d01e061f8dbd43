"""The pipeline: sources -> zone windows -> assessment -> alerts -> sinks.

Nothing here knows whether it runs live or in replay. Stages are joined by a
newest-wins slot per zone (the model stage is the slow one; an older pending
window of the same zone is dropped and counted when a newer one arrives).

A running pipeline can be reconfigured in place (the daemon's SIGHUP): sources
added or removed, window and alert settings changed, workers resized, the
assessor or the sinks replaced. Open alerts, windows and unchanged sources
carry on untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from monitor.alerts import AlertEvent, AlertManager
from monitor.assess.acoustic import alarm_verdict
from monitor.assess.single import Assessor
from monitor.assess.verdict import Verdict
from monitor.core.aio import Backoff, wait_event
from monitor.core.errors import BackendError, InternalAssessmentError, MalformedReplyError, SensorError
from monitor.core.supervise import Crashes, supervise
from monitor.core.text import redact_credentials, shorten
from monitor.observer import Observers, PipelineObserver, Settled
from monitor.sinks import AlertSink
from monitor.windows import (
    SKEW_WARN_S,
    ClockSkew,
    LatestSlot,
    ObservationLedger,
    RollingWindow,
    Settlement,
    Window,
    WindowSettings,
)
from sensors.types import AlarmHeard, Observation, ObservationSource

log = structlog.get_logger("monitor.pipeline")

# Seconds spent inside model calls during the current assessment; a metered backend appends to it.
MODEL_SECONDS: ContextVar[list[float] | None] = ContextVar("model_seconds", default=None)
# The scheduler wakes at least this often, so a stalled pipeline can be told from an idle one.
TICK_S = 1.0
# An observation older than this carries a replayed stream's clock, not a live sensor's: no latency.
_LIVE_AGE_S = 3600.0
# A sensor clock this far ahead of ours is wrong: its observation is taken as observed now, so the prompt
# does not show the model a time in the future (windows place observations by arrival either way).
MAX_AHEAD_S = 300.0
# Sensor times below this read as a replayed stream's offsets from 0 (as the prompt shows them): not a clock.
_STREAM_TIME_BELOW = 1e9
# Observations settled without an assessment are logged per source and reason: the first and every Nth.
DROP_LOG_EVERY = 100
# A failed source is restarted after a backoff between these bounds; one that ran this long is healthy again.
SOURCE_RETRY_MIN_S = 1.0
SOURCE_RETRY_MAX_S = 60.0
_SOURCE_HEALTHY_AFTER_S = 60.0


class AlertFollowUp(Protocol):
    """Acts on the alert lifecycle after `decide` and `expire`: escalation and acknowledgement.

    `annotate` sees every decided event before the sinks do; `step` runs in the
    alert-expiry task (every second, or at once when `wake` is set) and returns
    the events to publish. The daemon's is `monitor.escalation.loop.Escalation`.
    """

    wake: asyncio.Event

    def annotate(self, event: AlertEvent) -> AlertEvent: ...

    async def step(self) -> list[AlertEvent]: ...


@dataclass
class _InFlight:
    window: Window
    assessor: Assessor
    started: float


class Pipeline:
    """Runs the stages as one task group; `stop()` starts an ordered, bounded shutdown.

    The caller owns the sinks (starts them before `run()`, closes them after) and
    the `AlertManager`, whose open alerts outlive a pipeline. Everything the
    pipeline does is reported to its `observers` (counters, metrics, audit,
    replay's recorder); it keeps no history of its own.
    """

    def __init__(
        self,
        *,
        sources: Sequence[tuple[ObservationSource, str]],
        assessor: Assessor,
        sinks: Sequence[AlertSink],
        windows: WindowSettings,
        alerts: AlertManager,
        workers: int = 1,
        observers: Sequence[PipelineObserver] = (),
        exit_when_sources_end: bool = False,
        shutdown_timeout_s: float = 10.0,
        follow_up: AlertFollowUp | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.sources = list(sources)
        self.assessor = assessor
        self.sinks = list(sinks)
        self.window_settings = windows
        self.alerts = alerts
        self.workers = workers
        self.observers = Observers(observers)
        self.exit_when_sources_end = exit_when_sources_end
        self.shutdown_timeout_s = shutdown_timeout_s
        self.follow_up = follow_up
        # The monitor's clock for arrival times (window age, clock skew): live, the real clocks; a replay on
        # recorded, simulated or stream time passes its own, so its windows hold what they held then.
        # Snapshots are paced in real time either way (min_interval_s).
        self._clock = clock
        self.zone_of = {source.id: zone for source, zone in self.sources}
        self.ended: set[str] = set()
        self.windows: dict[str, RollingWindow] = {}
        self.slot = LatestSlot()
        self.started = asyncio.Event()
        self.last_tick = time.monotonic()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._group: asyncio.TaskGroup | None = None
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        self._worker_tasks: dict[int, asyncio.Task[None]] = {}
        self._inflight: dict[int, _InFlight] = {}
        self._publishing: set[asyncio.Task[None]] = set()
        self._sink_lock = asyncio.Lock()
        self._pending_since: dict[str, float] = {}
        self._ahead: Counter[str] = Counter()
        # Every accepted observation is settled once: assessed, errored or dropped with a reason.
        self.ledger = ObservationLedger(self._observation_settled)
        self.clock_skew = ClockSkew()
        self._skew_warned: set[str] = set()
        self._unassessed: Counter[tuple[str, str]] = Counter()
        # The scheduler and the expiry task (which also runs escalation and acknowledgements) are restarted
        # if they ever die of an unexpected error, and shown (`/readyz`, the stats' `problems`).
        self.scheduler_crashes = Crashes("scheduler")
        self.expiry_crashes = Crashes("alert-expiry")
        self._alarm_windows = 0

    # -- public -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the pipeline to stop; safe to call from a signal handler."""
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called (or every source ended, with exit_when_sources_end)."""
        return self._stopping.is_set()

    async def run(self) -> None:
        """Run until stopped (or, with exit_when_sources_end, until every source has ended)."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for source, _ in self.sources:
                    self._start_source(source)
                self.set_workers(self.workers)
                scheduler = group.create_task(supervise(self._schedule, self.scheduler_crashes), name="scheduler")
                expiry = group.create_task(supervise(self._expire_alerts, self.expiry_crashes), name="alert-expiry")
                self.started.set()
                await self._stopping.wait()
                await self._shutdown(scheduler, expiry)
        finally:
            self._group = None

    @property
    def crashes(self) -> tuple[Crashes, ...]:
        """The supervised tasks' books: how often each died, and when last."""
        return (self.scheduler_crashes, self.expiry_crashes)

    def heartbeat_age(self) -> float:
        """Seconds since the scheduler last ran (it runs at least every TICK_S while alive)."""
        return time.monotonic() - self.last_tick

    def oldest_assessment_s(self) -> float:
        """How long the longest-running assessment has been running (0 when none is)."""
        now = time.monotonic()
        return max((now - flight.started for flight in self._inflight.values()), default=0.0)

    # -- reconfiguration (SIGHUP) ------------------------------------------------------
    def add_source(self, source: ObservationSource, zone: str) -> None:
        """Start feeding `source` into `zone`'s window (at once when running)."""
        self.sources.append((source, zone))
        self.zone_of[source.id] = zone
        if self._group is not None and not self.stopping:
            self._start_source(source)

    async def remove_source(self, source_id: str) -> None:
        """Stop a source; what it already delivered stays in its zone's window."""
        self.sources = [(s, z) for s, z in self.sources if s.id != source_id]
        self.zone_of.pop(source_id, None)
        self.ended.discard(source_id)
        self.clock_skew.forget(source_id)
        self._skew_warned.discard(source_id)
        task = self._source_tasks.pop(source_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def set_window_settings(self, settings: WindowSettings) -> None:
        """Apply new window bounds; a zone whose count bounds changed is rebuilt with its history."""
        old, self.window_settings = self.window_settings, settings
        for zone, window in list(self.windows.items()):
            if (settings.max_entries, settings.max_frames) != (old.max_entries, old.max_frames):
                rebuilt = self._new_window(zone)
                # Re-added observations count as new: the zone is assessed once more rather than
                # risk an observation that arrived just before the reload never being assessed.
                for held in window.held():
                    rebuilt.add(held.observation, held.seq, arrived=held.arrived)
                self.windows[zone] = rebuilt
            else:
                window.max_age_s = settings.max_age_s
                window.min_interval_s = settings.min_interval_s
                window.max_chars = settings.max_chars
        self._wake.set()

    def set_workers(self, count: int) -> None:
        """Run `count` assessment workers; extra ones finish their current window, then exit."""
        self.workers = count
        if self._group is None or self.stopping:
            return
        self._worker_tasks = {i: t for i, t in self._worker_tasks.items() if not t.done()}
        for index in range(count):
            if index not in self._worker_tasks:
                self._worker_tasks[index] = self._group.create_task(self._worker(index), name=f"assess:{index}")

    async def replace_assessor(self, assessor: Assessor, *, timeout_s: float) -> bool:
        """Assess new windows with `assessor`; wait (bounded) for the old one's in-flight windows.

        Returns False when some were still running at the timeout.
        """
        old, self.assessor = self.assessor, assessor
        deadline = time.monotonic() + timeout_s
        while any(f.assessor is old for f in self._inflight.values()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    @contextlib.asynccontextmanager
    async def sinks_paused(self) -> AsyncIterator[list[AlertSink]]:
        """Hold publishing while the caller changes the sink list in place; waiting events are not lost."""
        async with self._sink_lock:
            yield self.sinks

    # -- stages -------------------------------------------------------------------
    def _start_source(self, source: ObservationSource) -> None:
        assert self._group is not None
        self._source_tasks[source.id] = self._group.create_task(self._run_source(source), name=f"source:{source.id}")

    async def _run_source(self, source: ObservationSource) -> None:
        backoff = Backoff(SOURCE_RETRY_MIN_S, SOURCE_RETRY_MAX_S)
        try:
            while True:
                started = time.monotonic()
                try:
                    await source.run(self._ingest)
                    return
                except Exception as exc:  # one broken source must not stop the task group, and every zone with it
                    if time.monotonic() - started >= _SOURCE_HEALTHY_AFTER_S:
                        backoff.reset()
                    delay = self._source_failed(source, exc, backoff)
                if delay is None:
                    return
                await asyncio.sleep(delay)
        finally:
            self.ended.add(source.id)
            log.info("source ended", source=source.id)
            self._wake.set()

    def _source_failed(self, source: ObservationSource, exc: Exception, backoff: Backoff) -> float | None:
        """Log a source's failure; the delay before restarting it, or None when it stays stopped."""
        # With exit_when_sources_end (a replay or demo), waiting for a broken file to heal would never end.
        delay = None if self.exit_when_sources_end else backoff.next()
        fields: dict[str, Any] = {"source": source.id, "zone": self.zone_of.get(source.id),
                                  "error": redact_credentials(shorten(exc, 500)), "error_type": type(exc).__name__,
                                  "failures": backoff.attempt}
        if delay is None:
            fields["restart"] = "never: service.exit_when_sources_end is set"
        else:
            fields["restart_in_s"] = round(delay, 2)
        # A SensorError is a described input problem; anything else is a bug worth its traceback.
        log.error("source failed", exc_info=not isinstance(exc, SensorError), **fields)
        return delay

    def _new_window(self, zone: str) -> RollingWindow:
        return RollingWindow(
            zone,
            max_age_s=self.window_settings.max_age_s,
            max_entries=self.window_settings.max_entries,
            max_frames=self.window_settings.max_frames,
            min_interval_s=self.window_settings.min_interval_s,
            max_chars=self.window_settings.max_chars,
            on_leave=self.ledger.left,
            arrival_clock=self._clock,
        )

    async def _ingest(self, observation: Observation) -> None:
        zone = self.zone_of.get(observation.source, observation.source)
        self._measure_skew(zone, observation)
        observation = self._not_ahead(observation)
        window = self.windows.get(zone)
        if window is None:
            window = self.windows[zone] = self._new_window(zone)
        window.add(observation, self.ledger.accept(zone, observation))
        self.observers.observation_received(zone, observation)
        self._pending_since.setdefault(zone, time.monotonic())
        self._observe_age("capture", observation.ts)
        self._wake.set()
        if isinstance(observation, AlarmHeard):
            self._alarm_heard(zone, observation)

    def _alarm_heard(self, zone: str, entry: AlarmHeard) -> None:
        """The direct path: an alarm pattern is a critical alert without a model call (monitor/assess/acoustic.py).

        Decided at once and published as its own task, like every alert; the entry also stays in the
        zone's window, so the model sees it with the frames and logs when it can.
        """
        if not self.alerts.controls.is_monitoring(zone):
            log.warning("alarm pattern heard in a zone switched off: no alert", zone=zone, source=entry.source,
                        alarm=entry.alarm, text=entry.text)
            return
        self._alarm_windows += 1
        window = Window(id=f"{zone}-heard-{self._alarm_windows}", zone=zone, observations=(entry,), new_count=1,
                        created_at=time.time())
        event = self.alerts.decide(window, alarm_verdict(entry), assessed=False)
        if event is None:  # not a warning under alerts.min_severity: cannot happen for a critical verdict
            return
        event = self._followed(event)
        log.warning("alarm pattern heard: alert without a model", zone=zone, source=entry.source, alarm=entry.alarm,
                    alert=event.alert.id, type=event.type, sounding_s=round(entry.sounding_s, 1))
        task = asyncio.create_task(self._publish(event), name=f"publish:{event.message_id}")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    def _not_ahead(self, observation: Observation) -> Observation:
        """An observation stamped in the future (a wrong sensor clock) is taken as observed now."""
        now = time.time()
        if observation.ts <= now + MAX_AHEAD_S:
            return observation
        count = self._ahead[observation.source] = self._ahead[observation.source] + 1
        if count == 1 or count % 100 == 0:
            log.warning("observation stamped in the future; taken as observed now", source=observation.source,
                        ahead_s=round(observation.ts - now, 1), max_ahead_s=MAX_AHEAD_S, count=count)
        return observation.restamped(now)

    def _measure_skew(self, zone: str, observation: Observation) -> None:
        """Update the source's clock skew; log once when it is beyond SKEW_WARN_S."""
        source = observation.source
        skew = self.clock_skew.observe(source, observation.ts, self._clock() if self._clock else time.time())
        if abs(skew) < SKEW_WARN_S or source in self._skew_warned or 0 <= observation.ts < _STREAM_TIME_BELOW:
            return
        self._skew_warned.add(source)
        log.warning("source clock is off the monitor's; its observations are placed by arrival time",
                    source=source, zone=zone, skew_s=round(skew, 1), direction="behind" if skew > 0 else "ahead",
                    threshold_s=SKEW_WARN_S)

    def _observation_settled(self, settlement: Settlement) -> None:
        self.observers.observation_settled(settlement)
        if settlement.outcome == "assessed":
            return
        reason = settlement.reason if settlement.outcome == "dropped" else "assessment_failed"
        assert reason is not None
        key = (settlement.source, reason)
        count = self._unassessed[key] = self._unassessed[key] + 1
        if count == 1 or count % DROP_LOG_EVERY == 0:
            log.warning("observation settled without an assessment", source=settlement.source,
                        zone=settlement.zone, outcome=settlement.outcome, reason=reason, count=count,
                        logged=f"first and every {DROP_LOG_EVERY}")

    async def _schedule(self) -> None:
        while not self._stopping.is_set():
            self.last_tick = time.monotonic()
            await self._offer_due_windows()
            if self._finished():
                self.stop()
                return
            self._wake.clear()
            waits = [w.seconds_until_due() for w in self.windows.values()]
            timeout = min((w for w in waits if w is not None), default=TICK_S)
            await wait_event(self._wake, min(timeout, TICK_S))

    async def _offer_due_windows(self) -> None:
        for zone, window in list(self.windows.items()):  # a put may yield while a source adds a zone
            if not window.due():
                continue
            snapshot = window.snapshot()
            self.ledger.snapshotted(snapshot)
            if snapshot.trimmed:
                log.warning("oldest observations dropped to keep the prompt within its budget", zone=zone,
                            window=snapshot.id, dropped=snapshot.trimmed, max_chars=window.max_chars)
            pending_since = self._pending_since.pop(zone, None)
            if pending_since is not None:
                self._observe("gating", time.monotonic() - pending_since)
            if not self.alerts.controls.is_monitoring(zone):
                self._dropped(snapshot, "monitoring_off")  # nobody asked about these observations
                continue
            replaced = await self.slot.put(snapshot)
            if replaced is not None:
                self._dropped(replaced, "superseded")

    def _finished(self) -> bool:
        if not self.exit_when_sources_end or not all(source.id in self.ended for source, _ in self.sources):
            return False
        idle = not self._inflight and len(self.slot) == 0
        return idle and not any(w.seconds_until_due() is not None for w in self.windows.values())

    async def _worker(self, index: int) -> None:
        # A worker beyond a reduced count finishes the window it holds, then exits.
        while index < self.workers and (window := await self.slot.get()) is not None:
            flight = self._inflight[index] = _InFlight(window, self.assessor, time.monotonic())
            self._observe("queue_wait", time.time() - window.created_at)
            try:
                await self._assess(window, flight.assessor)
            except Exception:  # after the verdict (alerts, logging): the next window must still be assessed
                log.exception("window handling failed after its assessment", zone=window.zone, window=window.id)
            finally:
                del self._inflight[index]
                self._wake.set()

    async def _assess(self, window: Window, assessor: Assessor) -> None:
        started = time.perf_counter()
        model_seconds: list[float] = []
        token = MODEL_SECONDS.set(model_seconds)
        try:
            verdict = await assessor.assess(window)
        except BackendError as exc:
            self._record_error(window, exc, time.perf_counter() - started)
            return
        except Exception as exc:  # a bug in a strategy, keyframes or the prompt: count it, assess the next window
            log.error("assessment raised an unexpected error", zone=window.zone, window=window.id, exc_info=exc)
            internal = InternalAssessmentError(
                f"zone '{window.zone}' window '{window.id}': unexpected {type(exc).__name__}: {shorten(exc, 300)}")
            self._record_error(window, internal, time.perf_counter() - started)
            return
        finally:
            MODEL_SECONDS.reset(token)
        self.ledger.assessed(window)
        elapsed = time.perf_counter() - started
        self._observe("prompt_build", elapsed - sum(model_seconds))
        event = self.alerts.decide(window, verdict)
        if event is not None:
            event = self._followed(event)
        try:
            if event is not None:
                # The alert first: recording and logging the window wake writer threads that would
                # otherwise compete with the sinks for the interpreter while the person waits.
                await self._deliver(event)
        finally:  # recorded even when shutdown cancels the worker while the alert is on its way
            self._summary(window, verdict, event, elapsed)
            self.observers.window_settled(Settled(window, verdict, None, event, elapsed))
        if window.observations:
            self._observe_age("end_to_end", max(o.ts for o in window.observations))

    def _record_error(self, window: Window, exc: BackendError, elapsed: float) -> None:
        fields: dict[str, Any] = {"zone": window.zone, "window": window.id, "error": str(exc),
                                  "kind": exc.kind, "latency_s": round(elapsed, 3)}
        if isinstance(exc, MalformedReplyError):
            fields["raw"] = exc.raw[:2000]
        log.error("assessment failed", **fields)
        self.ledger.failed(window)
        self.observers.window_settled(Settled(window, None, exc, None, elapsed))

    def _summary(self, window: Window, verdict: Verdict, event: AlertEvent | None, elapsed: float) -> None:
        assessment = verdict.assessment
        log.info(
            "window assessed",
            zone=window.zone, window=window.id, observations=len(window.observations),
            latency_s=round(elapsed, 3), prompt_tokens=verdict.usage.prompt_tokens,
            completion_tokens=verdict.usage.completion_tokens,
            verdict="danger" if assessment.danger else "safe", severity=assessment.severity,
            hazard=assessment.hazard, alert=event.type if event else None, strategy=verdict.strategy,
            backend=verdict.backend or None, degraded=verdict.degraded, dropped=False,
        )

    def _dropped(self, window: Window, reason: str, **detail: Any) -> None:
        log.info("window dropped", zone=window.zone, window=window.id, reason=reason, dropped=True, **detail)
        self.ledger.dropped(window, reason)
        self.observers.window_dropped(window, reason)

    async def _deliver(self, event: AlertEvent) -> None:
        # A decided alert must reach the sinks even when the worker or the expiry task is
        # cancelled at shutdown: publishing runs as its own task, awaited before sinks close.
        task = asyncio.create_task(self._publish(event), name=f"publish:{event.message_id}")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)
        await asyncio.shield(task)

    async def _publish(self, event: AlertEvent) -> None:
        started = time.perf_counter()
        async with self._sink_lock:
            for sink in self.sinks:
                try:
                    await sink.publish(event)
                except Exception as exc:  # one failing sink must not keep the alert from the others
                    log.error("alert not delivered to a sink", sink=sink.name, alert=event.alert.id,
                              message_id=event.message_id, type=event.type, error=str(exc),
                              error_type=type(exc).__name__)
                    self.observers.sink_failed(sink.name, event, exc)
        self.observers.alert_published(event)
        self._observe("alert_publish", time.perf_counter() - started)

    async def _expire_alerts(self) -> None:
        while not self._stopping.is_set():
            for event in self.alerts.expire():
                await self._deliver(self._followed(event))
            if self.follow_up is None:
                await asyncio.sleep(1.0)
                continue
            for event in await self.follow_up.step():  # escalations and acknowledgements
                await self._deliver(event)
            await wait_event(self.follow_up.wake, 1.0)

    def _followed(self, event: AlertEvent) -> AlertEvent:
        return event if self.follow_up is None else self.follow_up.annotate(event)

    def _observe(self, stage: str, seconds: float) -> None:
        self.observers.stage_latency(stage, seconds)

    def _observe_age(self, stage: str, observed_ts: float) -> None:
        age = time.time() - observed_ts
        if -1.0 < age < _LIVE_AGE_S:  # a second of clock skew between sensor and service is fine
            self._observe(stage, age)

    # -- shutdown -------------------------------------------------------------------
    async def _shutdown(self, scheduler: asyncio.Task[None], expiry: asyncio.Task[None]) -> None:
        sources = list(self._source_tasks.values())
        log.info("pipeline stopping", sources=len(sources), in_flight=len(self._inflight), queued=len(self.slot),
                 timeout_s=self.shutdown_timeout_s)
        for task in [*sources, expiry, scheduler]:  # nothing new is offered: the queued windows are final
            task.cancel()
        await asyncio.gather(*sources, expiry, scheduler, return_exceptions=True)
        await self.slot.close()  # queued windows are still assessed; then the workers return
        workers = [t for t in self._worker_tasks.values() if not t.done()]
        pending: set[asyncio.Task[None]] = set()
        if workers:
            _done, pending = await asyncio.wait(workers, timeout=self.shutdown_timeout_s)
        if pending:
            reason = f"not finished within shutdown_timeout_s={self.shutdown_timeout_s:g}"
            for flight in self._inflight.values():
                self._dropped(flight.window, "shutdown", detail=f"assessment cancelled: {reason}")
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            while (window := await self.slot.get()) is not None:
                self._dropped(window, "shutdown", detail=f"never assessed: {reason}")
        # What is still in the windows, never offered or only in windows that were dropped, is not assessed now.
        self.ledger.close(held.seq for window in self.windows.values() for held in window.held())
        await self._finish_publishing()

    async def _finish_publishing(self) -> None:
        """Wait for every decided alert to reach the sinks (bounded; a stuck sink is reported)."""
        publishing = set(self._publishing)
        if not publishing:
            return
        done, pending = await asyncio.wait(publishing, timeout=self.shutdown_timeout_s)
        for task in pending:
            log.error("alert not delivered to every sink at shutdown", task=task.get_name(),
                      reason=f"sinks did not accept it within shutdown_timeout_s={self.shutdown_timeout_s:g}")
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("alert publish failed at shutdown", task=task.get_name(), error=str(error))
