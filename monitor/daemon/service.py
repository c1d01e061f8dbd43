"""The daemon: one entry point that owns the event loop and the pipeline's life.

Life of `monitor run`, uvicorn-like:

1. start: health server, model backend, sinks (each zone's state `unknown`
   is published before the MQTT sink says `online`), the alerts left open by
   the previous run restored with their escalation state (held unconfirmed
   until their zone is assessed; those older than `dedup_ttl_s` end, cause
   `restart`), then the pipeline; `READY=1`. Zone controls come back from the
   state dir.
2. run: the watchdog is pinged while the pipeline makes progress; the zone
   tracker is refreshed every second (a zone goes blind in time, not only when
   something happens); `/readyz`, `/metrics` and the stats topic report on it.
3. SIGHUP: the configuration file is read again. A valid one is applied in
   place (open alerts, windows and unchanged sources carry on; the backend is
   rebuilt only if `[model]` changed); an invalid one is rejected, one log line
   per problem, and the running configuration stays.
4. SIGTERM / SIGINT: `STOPPING=1`; sources stop, in-flight windows get
   `shutdown_timeout_s`, stragglers are cancelled with a logged reason, every
   decided alert reaches the sinks, the sinks close (the MQTT sink flushes its
   outbox, publishes `offline`, disconnects), the backend stops. A second
   SIGINT exits at once.

Signal handlers only set state; the control task acts on it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from monitor.alerts import AlertManager, OpenAlertJournal
from monitor.backends import create_backend
from monitor.backends.failover import chain_of, model_status
from monitor.backends.settings import ModelSettings
from monitor.control import ZoneControls
from monitor.core.aio import leaf_errors, settle_startup_heap, wait_event
from monitor.core.errors import MonitorError
from monitor.core.jsonio import rejection_counts
from monitor.core.supervise import Crashes, supervise
from monitor.core.text import iso_time
from monitor.daemon.health import BackendStatus, DeliveryWatch, HealthServer, Readiness, Snapshot
from monitor.daemon.metrics import CONTENT_TYPE, MeteredBackend, Metrics
from monitor.daemon.notify import Notifier
from monitor.daemon.reload import reload
from monitor.daemon.statedir import open_state_dir
from monitor.daemon.wiring import (
    SinkName,
    SinkSpec,
    build_assessor,
    build_sink,
    sink_specs,
    source_specs,
    zone_names,
    zones_of,
)
from monitor.escalation.engine import Escalator
from monitor.escalation.loop import Escalation
from monitor.evidence import EvidenceKeeper, WithEvidence
from monitor.history.recorder import HistoryRecorder
from monitor.observer import Observers, PipelineObserver
from monitor.pipeline import Pipeline
from monitor.settings import Settings
from monitor.sinks import AlertSink
from monitor.stats import Stats
from monitor.zones import SourceHealths, ZoneStatus
from sensors.types import InputHealth, SourceHealth

log = structlog.get_logger("monitor.service")
T = TypeVar("T")


async def serve(settings: Settings, config_path: Path | None = None) -> int:
    """Run the daemon until a signal or the end of the sources; reload from `config_path` on SIGHUP."""
    created = not _exists(settings.service.state_dir)  # one stat before the loop has work: no need for a thread
    service: Service | None = None
    try:
        service = Service(settings, config_path=config_path)
        return await service.run()
    except BaseExceptionGroup as group:
        leaves = leaf_errors(group)
        if len(leaves) == 1 and isinstance(leaves[0], MonitorError):
            raise leaves[0] from None  # the CLI prints it as one line and exits 1
        raise
    finally:
        if created and (service is None or service.started_at_wall is None):
            _remove_unused_state_dir(settings.service.state_dir)


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _remove_unused_state_dir(state_dir: Path) -> None:
    """A start that failed before the monitor was ready leaves no state dir it created behind: nothing in it
    was ever about anyone, and a person fixing the config should not find folders appearing in odd places."""
    shutil.rmtree(state_dir, ignore_errors=True)
    log.info("state dir removed: the monitor created it for a start that failed before it was ready",
             path=str(state_dir))


# --------------------------------------------------------------------------- the service


class Service:
    """The daemon's life: start, run, reload on SIGHUP, stop in order on SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, *, config_path: Path | None = None,
                 notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.notifier = notifier if notifier is not None else Notifier.from_environment()
        self.health_settings = settings.health  # read once: a new [health] takes effect at the next start
        state_dir = settings.service.state_dir  # read once, like [health]
        open_state_dir(settings)  # before anything in it is read: a hostile state dir stops the start here
        self.stats = Stats()
        # Shared by the pipeline and the MQTT sink (control topics), kept across reloads and restarts.
        self.controls = ZoneControls.persistent(state_dir)
        self.alerts = AlertManager(settings.alerts, controls=self.controls,
                                   journal=OpenAlertJournal.in_state_dir(state_dir))
        self.zones = ZoneStatus(zones_of(settings), blind_after_s=self.health_settings.blind_after_s,
                                controls=self.controls, sources=self._zone_sources)
        # A zone that cannot be assessed holds its alerts open; alerts carry the zones' display names.
        self.alerts.unseen, self.alerts.zone_names = self.zones.unseen, zone_names(settings)
        self.escalation = Escalation(  # kept across reloads like the open alerts it escalates
            Escalator(settings.escalation, zones=settings.zones, alerts=self.alerts, counters=self.stats.reach,
                      state=Escalator.state_in(state_dir)),
            state_dir=settings.service.state_dir)
        self.metrics = Metrics(stats=self._stats)
        self.audit = HistoryRecorder(settings)  # the audit log and the history: one record per window
        self.evidence = EvidenceKeeper.in_state_dir(settings)  # each alert's frames as sent, with the alert
        self.delivery = DeliveryWatch()  # which sinks failed the last alert they were given (readiness)
        self.observers: list[PipelineObserver] = [self.stats, self.metrics, self.audit, self.zones, self.delivery,
                                                  self.evidence]
        self.readiness = Readiness(self.health_settings)
        self.heartbeat_crashes = Crashes("heartbeat")  # zone refresh, readiness tracking, the watchdog
        self.state = "starting"
        self.started_at = time.monotonic()
        self.started_at_wall: float | None = None  # when the monitor became ready
        self.backend: MeteredBackend | None = None
        self.pipeline: Pipeline | None = None
        self.sinks: dict[SinkName, tuple[SinkSpec, AlertSink]] = {}
        self.health: HealthServer | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._reload_requested = False
        self._interrupts = 0

    async def run(self) -> int:
        """Run the whole life; returns the exit status."""
        self._install_signal_handlers()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(supervise(self._heartbeat, self.heartbeat_crashes), name="heartbeat")
                try:
                    await self._lifecycle(group)
                finally:
                    self._done.set()
        finally:
            self._remove_signal_handlers()
            self.notifier.close()
        return 0

    # -- lifecycle ----------------------------------------------------------------------
    async def _lifecycle(self, group: asyncio.TaskGroup) -> None:
        await self._start_health()
        try:
            if not await self._start():
                log.info("monitor stopped before it was ready")
                return
            assert self.pipeline is not None and self.backend is not None
            control = group.create_task(self._control(self.pipeline), name="control")
            log.info("monitor running", model=self.backend.model, backend=self.backend.name,
                     backends=self.settings.model.backend_names, sources=list(source_specs(self.settings)))
            await self.pipeline.run()
            self._stop.set()
            self._wake.set()
            await control  # a reload in progress completes before anything is closed
        finally:
            self.state = "stopping"
            await self.close_sinks()
            await self.escalation.escalator.flush()  # the alerts' journal too
            await self.controls.flush()
            await asyncio.to_thread(self.audit.close)
            await asyncio.to_thread(self.evidence.close)
            if self.backend is not None:
                await self.backend.close()
            if self.health is not None:
                await self.health.close()
            self.state = "stopped"
            self.notifier.status("stopped")
        log.info("monitor stopped", **self.stats_json())

    async def _start(self) -> bool:
        """Start the backend, the sinks and build the pipeline; False if stopped meanwhile."""
        settings = self.settings
        self.notifier.status(f"starting: model backend '{settings.model.backend}'")
        self.backend = self.new_backend(settings.model)
        if not await self._until_stopped(self.backend.start()):
            return False
        await asyncio.to_thread(self.escalation.open)
        for name, spec in sink_specs(settings).items():
            sink = self.new_sink(spec)
            await sink.start()
            self.sinks[name] = (spec, sink)
        await self._restore_previous_run([sink for _, sink in self.sinks.values()])
        self.pipeline = Pipeline(
            sources=[(spec.build(), spec.zone) for spec in source_specs(settings).values()],
            assessor=build_assessor(settings, self.backend, notes=self.audit.notes,
                                    failures=self.stats.optional_failures),
            sinks=[sink for _, sink in self.sinks.values()],
            windows=settings.windows,
            alerts=self.alerts,
            workers=settings.model.concurrency,
            observers=self.observers,
            exit_when_sources_end=settings.service.exit_when_sources_end,
            shutdown_timeout_s=settings.service.shutdown_timeout_s,
            follow_up=WithEvidence(self.escalation, self.evidence, self.alerts),
        )
        self._wire_metrics()
        settle_startup_heap()  # the backend's client library and the sources' imports are loaded now
        return not self._stop.is_set()

    async def _restore_previous_run(self, sinks: Sequence[AlertSink]) -> None:
        """Take up the alerts open when the previous run stopped or crashed, with their escalation state.

        Those confirmed within `dedup_ttl_s` before this start are held open (the same hazard seen again
        continues them: same id, same level); the older ones end, for every subscriber, here.
        """
        observers = Observers(self.observers)
        ends = self.alerts.restore_previous_run()
        self.escalation.escalator.restore()
        for event in ends:
            for sink in sinks:
                try:
                    await sink.publish(event)
                except Exception as exc:  # the others must still hear of it
                    log.error("could not publish the end of an alert left open by the previous run",
                              sink=sink.name, alert=event.alert.id, error=str(exc))
                    observers.sink_failed(sink.name, event, exc)  # counted, and readiness names the sink
            observers.alert_published(event)
        if ends:
            self.alerts.persist()  # only now: a crash before this point ends them at the next start instead
        for sink in sinks:  # the escalations held open are announced again (the MQTT sink's retained state)
            if callable(announce := getattr(sink, "escalations_changed", None)):
                announce()

    async def _control(self, pipeline: Pipeline) -> None:
        """Act on the state the signal handlers set: reload, or stop in order."""
        await pipeline.started.wait()
        self.state = "running"
        self.started_at_wall = time.time()
        self.notifier.ready(self.status_line())
        log.info("monitor ready", notify=self.notifier.enabled,
                 watchdog_interval_s=self.notifier.watchdog_interval_s)
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stop.is_set() or pipeline.stopping:
                break
            if self._reload_requested:
                self._reload_requested = False
                await reload(self)
        self.state = "stopping"
        self.notifier.stopping("stopping: finishing in-flight windows, flushing sinks")
        pipeline.stop()

    async def _until_stopped(self, start: Coroutine[Any, Any, None]) -> bool:
        """Await `start` unless a stop is requested first (the embedded model takes a while to load)."""
        task = asyncio.ensure_future(start)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False

    async def close_sinks(self) -> None:
        """Close every sink in order: local sinks first, MQTT last (it flushes, says offline, disconnects)."""
        for name, (_spec, sink) in list(self.sinks.items()):
            try:
                await sink.close()
            except Exception as exc:  # one sink failing to close must not keep the others open
                log.error("sink failed to close", sink=name, error=str(exc))
        self.sinks.clear()

    def new_backend(self, settings: ModelSettings) -> MeteredBackend:
        """The configured model backend, timed for metrics and readiness."""
        return MeteredBackend(self.evidence.capture(self.audit.capture(create_backend(settings))),
                              observe=self.metrics.stage_latency)

    def new_sink(self, spec: SinkSpec) -> AlertSink:
        """A sink wired to the service's controls, counters, zone tracker and open alerts."""
        sink = build_sink(spec, controls=self.controls, stats=self.stats_json,
                          open_alerts=self.alerts.confirmed(), status=self.zones,
                          feedback=self.audit.desk,
                          reach_counters=self.stats.reach, acknowledge=self.escalation.request,
                          evidence=self.evidence.read)
        if hasattr(sink, "held_escalations"):  # the MQTT sink (not imported without [mqtt]): a caregiver's open
            sink.held_escalations = self.alerts.held_escalations  # escalation stays announced across a restart
        return sink

    # -- signals ---------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        # Signals only set state; the control task acts on it. The second SIGINT forces exit.
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            self.request_reload()
            return
        self._interrupts += 1
        if self._interrupts > 1:
            if signum == signal.SIGINT:
                log.warning("second interrupt, exiting now")
                os._exit(130)
            log.info("shutdown already in progress", signal=name)
            return
        log.info("shutdown requested", signal=name)
        self.request_stop()

    def request_reload(self) -> None:
        """Read the configuration file again (what SIGHUP does)."""
        self._reload_requested = True
        self._wake.set()

    def request_stop(self) -> None:
        """Start the ordered shutdown (what SIGTERM and the first SIGINT do)."""
        self._stop.set()
        self._wake.set()
        if self.pipeline is not None:
            self.pipeline.stop()  # sets the pipeline's own stop state, even while a reload runs

    # -- health, watchdog, status -----------------------------------------------------------
    async def _start_health(self) -> None:
        settings = self.health_settings
        if not settings.enabled:
            return
        self.health = HealthServer(
            settings, liveness=self.liveness, readiness=self.ready,
            metrics=self.metrics.render if settings.metrics else None, metrics_content_type=CONTENT_TYPE,
        )
        try:
            await self.health.start()
        except OSError as exc:
            # Monitoring matters more than its health endpoint: run on, but say so loudly.
            log.error("health server could not start; running without it", host=settings.host,
                      port=settings.port, error=str(exc))
            self.health = None

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """The event loop answers (else nothing would), and the stages make progress."""
        body: dict[str, Any] = {"state": self.state, "uptime_s": round(time.monotonic() - self.started_at, 1)}
        pipeline = self.pipeline
        if pipeline is None or self.state not in ("running", "reloading"):
            return True, {"alive": True, **body}
        tick_age, oldest = pipeline.heartbeat_age(), pipeline.oldest_assessment_s()
        stall_after = self.health_settings.stall_after_s
        # A failover may spend every backend's budget on one call (docs/failover.md).
        assessment_limit = 3 * sum(m.total_timeout_s for m in self.settings.model.chain) + stall_after
        problems = []
        if tick_age > stall_after:
            problems.append(f"scheduler has not run for {tick_age:.1f} s (stall_after_s={stall_after:g})")
        if oldest > assessment_limit:
            problems.append(f"an assessment has run for {oldest:.1f} s (limit {assessment_limit:g} s)")
        body.update(scheduler_tick_age_s=round(tick_age, 3), oldest_assessment_s=round(oldest, 3))
        return not problems, {"alive": not problems, "problems": problems, **body}

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """The readiness verdict and its JSON body (`/readyz`)."""
        return await self.readiness.check(self.snapshot())

    def snapshot(self) -> Snapshot:
        """The service's parts as readiness sees them now."""
        backend = self.backend
        status = None
        if backend is not None:
            status = BackendStatus(name=backend.name, last_success_at=backend.last_success_at,
                                   last_error_at=backend.last_error_at, base_url=backend.base_url,
                                   api_key=self.settings.model.api_key_value,
                                   last_error=backend.last_error, oldest_call_s=backend.oldest_call_s(),
                                   # A failover may wait out each backend's attempt before the next answers.
                                   hung_after_s=sum(m.attempt_timeout_s for m in self.settings.model.chain))
        states = self.zones.states()
        zones = {zone: (state.state, state.reason) for zone, state in states.items()}
        return Snapshot(state=self.state, sources=self._sources_online(), sinks=self._sinks_connected(),
                        backend=status, zones=zones, delivery=self.delivery_problems(), tasks=self.task_problems(),
                        source_notes=self._source_notes(), model=self.model_status(),
                        degraded={zone: s.degraded for zone, s in states.items() if s.degraded is not None})

    def model_status(self) -> dict[str, Any]:
        """Which backend assesses now and each backend's breaker (docs/failover.md)."""
        return model_status(self.backend, self.settings.model)

    def delivery_problems(self) -> dict[str, str | None]:
        """Each sink: why it cannot deliver or queue alerts now (its task died, it failed the last alert), or None."""
        problems: dict[str, str | None] = {}
        for name, (_spec, sink) in self.sinks.items():
            own = getattr(sink, "problem", None)
            problems[name] = own if isinstance(own, str) else self.delivery.problem(name)
        return problems

    def task_problems(self) -> dict[str, str | None]:
        """Each supervised task (the pipeline's, the heartbeat): its recent death (it was restarted), or None."""
        return {crashes.name: crashes.problem() for crashes in self._crashes()}

    def _crashes(self) -> list[Crashes]:
        return [*(self.pipeline.crashes if self.pipeline is not None else ()), self.heartbeat_crashes]

    def _task_restarts(self) -> dict[str, int]:
        return {crashes.name: crashes.count for crashes in self._crashes()}

    def problems(self) -> list[str]:
        """Every current problem with delivery or a task, one line each (the stats topic, the hub's problem entity)."""
        parts = [(f"sink {name}", p) for name, p in self.delivery_problems().items()]
        parts += [(f"task {name}", p) for name, p in self.task_problems().items()]
        return [f"{name}: {problem}" for name, problem in parts if problem is not None]

    def _source_notes(self) -> dict[str, str]:
        """The stats' notes per source, each camera's decoder first (what it costs: docs/cameras.md)."""
        notes = self._stats().source_notes()
        for source, decoder in self._camera_decoders().items():
            interval = getattr(self._health_of(source), "keyframe_interval_s", None)
            mode = f"decoder {decoder}" + (f" (keyframes every {interval:.2f} s)" if interval else "")
            notes[source] = "; ".join(part for part in (mode, notes.get(source)) if part)
        return notes

    def _health_of(self, source_id: str) -> SourceHealth | None:
        if self.pipeline is None:
            return None
        return next((source.health() for source, _ in self.pipeline.sources if source.id == source_id), None)

    def _camera_decoders(self) -> dict[str, str]:
        """What each camera decodes with now (`sensors.camera_config.DECODE_MODES`)."""
        if self.pipeline is None:
            return {}
        decoders = {source.id: getattr(source.health(), "decoder", None) for source, _ in self.pipeline.sources}
        return {source: decoder for source, decoder in decoders.items() if isinstance(decoder, str)}

    async def _heartbeat(self) -> None:
        """Track outages for readiness; ping the watchdog while alive; keep STATUS current."""
        interval = self.notifier.watchdog_interval_s
        next_ping = next_status = 0.0
        while not self._done.is_set():
            self.zones.refresh()
            self.readiness.track(self.snapshot())
            now = time.monotonic()
            if interval is not None and now >= next_ping:
                next_ping = now + interval
                alive, body = self.liveness()
                if alive:
                    self.notifier.watchdog()
                else:
                    log.error("pipeline stalled; withholding the watchdog ping", problems=body.get("problems"))
            if self.notifier.enabled and self.state == "running" and now >= next_status:
                next_status = now + 10.0
                self.notifier.status(self.status_line())
            await wait_event(self._done, min(1.0, interval or 1.0))

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        stats = self.stats
        open_alerts = len(self.alerts.open)
        sources = len(self.pipeline.sources) if self.pipeline else 0
        blind = self.zones.blind()
        return (f"{self.state}: {sources} sources, {stats.windows_assessed} windows assessed, "
                f"{open_alerts} open alerts, {sum(stats.model_errors.values())} model errors"
                + (f", BLIND: {', '.join(blind)}" if blind else ""))

    def _wire_metrics(self) -> None:
        metrics = self.metrics
        metrics.source_health = self._sources_online
        metrics.source_bad_input = self._sources_bad_input
        metrics.camera_decoders = self._camera_decoders
        metrics.sink_health = self._sinks_connected
        metrics.open_alerts = lambda: len(self.alerts.open)
        metrics.zone_states = lambda: {zone: state.state for zone, state in self.zones.states().items()}
        metrics.outbox_depth = self._outbox_depth
        metrics.ready = lambda: self.readiness.last_ready
        metrics.problems = self.problems
        metrics.failover = lambda: chain_of(self.backend)

    def _sources_online(self) -> dict[str, bool]:
        if self.pipeline is None:
            return {}
        return {source.id: source.health().state == "online" for source, _ in self.pipeline.sources}

    def _sources_bad_input(self) -> dict[str, int]:
        if self.pipeline is None:
            return {}
        return {source.id: source.health().bad_input for source, _ in self.pipeline.sources}

    def _zone_sources(self) -> SourceHealths:
        """Each zone's sources and their health, for the zone tracker (every source offline: blind)."""
        zones: dict[str, list[tuple[str, SourceHealth]]] = {}
        if self.pipeline is not None:
            for source, zone in self.pipeline.sources:
                zones.setdefault(zone, []).append((source.id, source.health()))
        return zones

    def _sinks_connected(self) -> dict[str, bool | None]:
        return {name: sink.connected for name, (_spec, sink) in self.sinks.items()}

    def _outbox_depth(self) -> int | None:
        entry = self.sinks.get("mqtt")
        return entry[1].backlog if entry is not None else None

    def _stats(self) -> Stats:
        if self.pipeline is not None:
            # The sources count the lines they could not parse, and the entries they cut, themselves; fold them in.
            healths = [h for source, _ in self.pipeline.sources if isinstance(h := source.health(), InputHealth)]
            self.stats.bad_log_lines = sum(h.bad_input for h in healths)
            self.stats.truncated_entries = sum(h.truncated for h in healths)
            self.stats.log_backlog = self._log_backlog()
            # The pipeline's observation ledger and clock estimates (the stats keep the settled counts).
            self.stats.observations_pending = self.pipeline.ledger.open_by_source()
            self.stats.clock_skew_s = self.pipeline.clock_skew.estimates()
        self.stats.feedback = self.audit.feedback_counts()
        # The recorder counts on its writer thread and the speaker in the reach counters; fold them in.
        failures = self.stats.optional_failures
        for part in ("history", "audit_log", "feedback"):
            failures[part] = self.audit.failures[part]
        failures["speaker"] = self.stats.reach["speech:failed"]
        failures["notify"] = self.stats.reach["notify:failed"]
        failures["evidence"] = self.evidence.failures
        return self.stats

    def _log_backlog(self) -> dict[str, dict[str, int]]:
        """What each followed log file read, or skipped, after its kept read position when its source (re)started."""
        assert self.pipeline is not None
        files = {s.id for s in self.settings.sources if s.kind == "file"}
        return {source.id: {"resumed_bytes": h.resumed_bytes, "skipped_bytes": h.skipped_bytes}
                for source, _ in self.pipeline.sources
                if source.id in files and isinstance(h := source.health(), InputHealth)}

    def stats_json(self) -> dict[str, Any]:
        """The service's counters, the sources' health and each zone's state (the stats topic, the final log line)."""
        stats = self._stats()
        sources = {source: "online" if up else "offline" for source, up in self._sources_online().items()}
        last = self.zones.last_success_at()
        return {
            **stats.to_json(),
            "model_errors_total": sum(stats.model_errors.values()),
            "optional_failures_total": sum(stats.optional_failures.values()),
            "sources": sources,
            "sources_offline": [source for source, state in sources.items() if state != "online"],
            "zones": self.zones.to_json(),
            "last_assessment_at": iso_time(last) if last is not None else None,
            "problems": self.problems(),
            "task_restarts": self._task_restarts(),
            "json_rejected": rejection_counts(),
            "model": self.model_status(),
        }

