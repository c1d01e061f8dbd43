"""The daemon: one entry point that owns the event loop and the pipeline's life.

Life of `monitor run`, uvicorn-like:

1. start: health server, model backend, sinks, then the pipeline; `READY=1`.
2. run: the watchdog is pinged while the pipeline makes progress; `/readyz`
   and `/metrics` report on it.
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
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import structlog

from monitor.aio import wait_event
from monitor.alerts import AlertManager
from monitor.assess import Assessor
from monitor.backends import create_backend
from monitor.control import ZoneControls
from monitor.errors import ConfigError, MonitorError
from monitor.health import BackendStatus, HealthServer, Readiness, Snapshot
from monitor.health_config import HealthSettings
from monitor.logging import configure_logging
from monitor.metrics import CONTENT_TYPE, MeteredBackend, Metrics
from monitor.notify import Notifier
from monitor.pipeline import ObservationSource, Pipeline
from monitor.settings import ModelSettings, Settings, SourceSettings, load_settings
from monitor.sinks import AlertSink
from monitor.sinks.local import JsonlSink, StdoutSink
from monitor.sinks.mqtt_config import MqttSettings
from monitor.stats import Stats
from monitor.strategies import build_zone_assessor
from sensors.logs.sources import FileTailSource, ReplayFileSource, StdinSource

log = structlog.get_logger("monitor.service")
T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is importable, else on asyncio's loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but not on every platform
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def serve(settings: Settings, config_path: Path | None = None) -> int:
    """Run the daemon until a signal or the end of the sources; reload from `config_path` on SIGHUP."""
    service = Service(settings, config_path=config_path)
    try:
        return await service.run()
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], MonitorError):
            raise leaves[0] from None  # the CLI prints it as one line and exits 1
        raise


# --------------------------------------------------------------------------- building


def build_source(settings: SourceSettings, mqtt: MqttSettings | None = None) -> ObservationSource:
    """The sensor a source section describes."""
    if settings.kind == "stdin":
        return StdinSource(settings.id, settings.format)
    if settings.kind == "mqtt":
        from sensors.mqtt_source import MqttActivitySource

        assert mqtt is not None and settings.topic is not None  # validated by Settings and SourceSettings
        return MqttActivitySource(settings.id, mqtt, topic=settings.topic)
    assert settings.path is not None  # validated by SourceSettings
    if settings.kind == "replay":
        return ReplayFileSource(settings.id, settings.path, settings.format,
                                interval_s=settings.interval_s, speed=settings.speed)
    return FileTailSource(settings.id, settings.path, settings.format,
                          from_start=settings.from_start, poll_interval_s=settings.poll_interval_s)


def build_assessor(settings: Settings, backend: MeteredBackend) -> Assessor:
    """The configured assessment strategy, per zone, with the keyframe choice for camera windows."""
    return build_zone_assessor(backend, settings.assessment, settings.zones, settings.keyframes)


def zones_of(settings: Settings) -> list[str]:
    """The configured zone ids, in order, once each."""
    return list(dict.fromkeys(zone for _spec, zone in source_specs(settings).values()))


def source_specs(settings: Settings) -> dict[str, tuple[Any, str]]:
    """Every source (activity logs, then cameras) by id: a comparable description and its zone."""
    specs: dict[str, tuple[Any, str]] = {
        s.id: ((s, settings.mqtt) if s.kind == "mqtt" else s, s.zone_id) for s in settings.sources
    }
    for camera in settings.cameras:
        specs[camera.id] = (camera, camera.zone_id)
    return specs


def build_from_spec(spec: Any, settings: Settings) -> ObservationSource:
    """The sensor for one entry of `source_specs`."""
    if isinstance(spec, tuple):
        spec = spec[0]
    if isinstance(spec, SourceSettings):
        return build_source(spec, settings.mqtt)
    from sensors.camera import CameraSource  # OpenCV is imported only when a camera is configured

    source: ObservationSource = CameraSource(spec)
    return source


def sink_specs(settings: Settings) -> dict[str, Any]:
    """One comparable description per enabled sink: a sink is rebuilt on reload only if its own changed."""
    specs: dict[str, Any] = {}
    if settings.sinks.stdout.enabled:
        specs["stdout"] = settings.sinks.stdout
    if settings.sinks.jsonl.enabled:
        specs["jsonl"] = settings.sinks.jsonl
    if settings.mqtt is not None:
        specs["mqtt"] = (settings.mqtt, tuple(zones_of(settings)), settings.service.state_dir)
    return specs


def health_settings(settings: Settings) -> HealthSettings:
    """The `[health]` section."""
    return settings.health


# --------------------------------------------------------------------------- the service


class Service:
    """The daemon's life: start, run, reload on SIGHUP, stop in order on SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, *, config_path: Path | None = None,
                 notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.notifier = notifier if notifier is not None else Notifier.from_environment()
        self.health_settings = health_settings(settings)
        self.stats = Stats()
        # Shared by the pipeline and the MQTT sink (control topics), and kept across reloads.
        self.controls = ZoneControls()
        self.alerts = AlertManager(settings.alerts, controls=self.controls)
        self.metrics = Metrics(stats=self._stats)
        self.readiness = Readiness(self.health_settings)
        self.state = "starting"
        self.started_at = time.monotonic()
        self.backend: MeteredBackend | None = None
        self.pipeline: Pipeline | None = None
        self.sinks: dict[str, tuple[Any, AlertSink]] = {}
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
                group.create_task(self._heartbeat(), name="heartbeat")
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
            assert self.pipeline is not None
            control = group.create_task(self._control(self.pipeline), name="control")
            log.info("monitor running", model=self.backend.model if self.backend else None,
                     backend=self.backend.name if self.backend else None,
                     sources=list(source_specs(self.settings)))
            await self.pipeline.run()
            self._stop.set()
            self._wake.set()
            await control  # a reload in progress completes before anything is closed
        finally:
            self.state = "stopping"
            await self._close_sinks()
            if self.backend is not None:
                await self.backend.close()
            if self.health is not None:
                await self.health.close()
            self.state = "stopped"
            self.notifier.status("stopped")
        log.info("monitor stopped", **self.pipeline.stats_json())

    async def _start(self) -> bool:
        """Start the backend, the sinks and build the pipeline; False if stopped meanwhile."""
        settings = self.settings
        self.notifier.status(f"starting: model backend '{settings.model.backend}'")
        self.backend = self._new_backend(settings.model)
        if not await self._until_stopped(self.backend.start()):
            return False
        for name, spec in sink_specs(settings).items():
            sink = self._make_sink(name, settings)
            await sink.start()
            self.sinks[name] = (spec, sink)
        self.pipeline = Pipeline(
            sources=[(build_from_spec(spec, settings), zone) for spec, zone in source_specs(settings).values()],
            assessor=build_assessor(settings, self.backend),
            sinks=[sink for _, sink in self.sinks.values()],
            windows=settings.windows,
            alerts=self.alerts,
            workers=settings.model.concurrency,
            stats=self.stats,
            exit_when_sources_end=settings.service.exit_when_sources_end,
            shutdown_timeout_s=settings.service.shutdown_timeout_s,
            audit_path=settings.service.audit_log,
            observer=self.metrics,
            owns_sinks=False,
            keep_history=False,
        )
        self._wire_metrics()
        return not self._stop.is_set()

    async def _control(self, pipeline: Pipeline) -> None:
        """Act on the state the signal handlers set: reload, or stop in order."""
        await pipeline.started.wait()
        self.state = "running"
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
                await self._reload()
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

    async def _close_sinks(self) -> None:
        # In order: local sinks first, MQTT last (its close flushes the outbox, says offline, disconnects).
        for name, (_spec, sink) in list(self.sinks.items()):
            try:
                await sink.close()
            except Exception as exc:  # one sink failing to close must not keep the others open
                log.error("sink failed to close", sink=name, error=str(exc))
        self.sinks.clear()

    def _new_backend(self, settings: ModelSettings) -> MeteredBackend:
        return MeteredBackend(create_backend(settings), observe=self.metrics.observe)

    def _make_sink(self, name: str, settings: Settings) -> AlertSink:
        if name == "stdout":
            return StdoutSink(color=settings.sinks.stdout.color)
        if name == "jsonl":
            return JsonlSink(settings.sinks.jsonl.path)
        from monitor.sinks.mqtt import MqttSink

        assert settings.mqtt is not None
        sink = MqttSink(settings.mqtt, zones=zones_of(settings), state_dir=settings.service.state_dir,
                                    controls=self.controls, stats=self._stats_json)
        # A sink rebuilt by a reload starts with the open alerts, so its zone state is not reported clear.
        restore = getattr(sink, "restore_open_alerts", None)
        if callable(restore) and self.alerts.open:
            restore(list(self.alerts.open.values()))
        return sink

    # -- reload (SIGHUP) -----------------------------------------------------------------
    async def _reload(self) -> None:
        where = str(self.config_path) if self.config_path is not None else "<defaults and environment>"
        log.info("configuration reload requested", config=where)
        self.state = "reloading"
        self.notifier.reloading(f"reloading {where}")
        try:
            try:
                new = load_settings(self.config_path)
                changed = await self._apply(new)
            except ConfigError as exc:
                self._reject(exc.problems)
                return
            except (MonitorError, OSError) as exc:
                self._reject([f"{where}: {exc}"])
                return
            self.metrics.reloads.labels("applied").inc()
            log.info("configuration reloaded", config=where, changed=changed)
        finally:
            if self.state == "reloading":
                self.state = "running"
            self.notifier.ready(self.status_line())

    def _reject(self, problems: list[str]) -> None:
        for problem in problems:
            log.error("configuration reload rejected", problem=problem)
        log.warning("keeping the running configuration", problems=len(problems))
        self.metrics.reloads.labels("rejected").inc()

    async def _apply(self, new: Settings) -> list[str]:
        """Apply a valid configuration in place. What can fail is prepared before anything running changes."""
        old, pipeline = self.settings, self.pipeline
        assert pipeline is not None and self.backend is not None
        changed = [name for name in type(new).model_fields if getattr(old, name, None) != getattr(new, name, None)]
        self._warn_restart_only(old, new)
        backend = self._new_backend(new.model) if new.model != old.model else None
        fresh: dict[str, tuple[Any, AlertSink]] = {}
        try:
            if backend is not None:
                await backend.start()
            assessor = None
            if backend is not None or getattr(new, "assessment", None) != getattr(old, "assessment", None) \
                    or getattr(new, "zones", None) != getattr(old, "zones", None):
                assessor = build_assessor(new, backend or self.backend)
            fresh = await self._prepare_sinks(new)
        except BaseException:
            await self._discard(backend, fresh)
            raise
        # Commit: from here on, the new configuration is what runs.
        if (new.service.log_level, new.service.log_format) != (old.service.log_level, old.service.log_format):
            configure_logging(new.service.log_level, new.service.log_format)
        self.alerts.settings = new.alerts
        if new.windows != old.windows:
            pipeline.set_window_settings(new.windows)
        await self._apply_sources(old, new)
        pipeline.exit_when_sources_end = new.service.exit_when_sources_end
        pipeline.shutdown_timeout_s = new.service.shutdown_timeout_s
        pipeline.audit_path = new.service.audit_log
        pipeline.set_workers(new.model.concurrency)
        if assessor is not None:
            await self._apply_assessor(pipeline, assessor, backend, new.service.shutdown_timeout_s)
        self.settings = new
        await self._swap_sinks(new, fresh)
        return changed

    async def _discard(self, backend: MeteredBackend | None, sinks: dict[str, tuple[Any, AlertSink]]) -> None:
        """Close what a rejected reload had started."""
        for _spec, sink in sinks.values():
            await sink.close()
        if backend is not None:
            await backend.close()

    async def _apply_assessor(self, pipeline: Pipeline, assessor: Assessor, backend: MeteredBackend | None,
                              timeout_s: float) -> None:
        drained = await pipeline.replace_assessor(assessor, timeout_s=timeout_s)
        if backend is None:
            return
        old, self.backend = self.backend, backend
        if not drained:
            log.warning("closing the previous model backend with assessments still running",
                        reason=f"not finished within shutdown_timeout_s={timeout_s:g}")
        if old is not None:
            await old.close()
        log.info("model backend replaced", backend=backend.name, model=backend.model)

    async def _apply_sources(self, old: Settings, new: Settings) -> None:
        assert self.pipeline is not None
        before, after = source_specs(old), source_specs(new)
        for source_id, entry in before.items():
            if after.get(source_id) != entry:
                await self.pipeline.remove_source(source_id)
                log.info("source removed" if source_id not in after else "source restarted", source=source_id)
        for source_id, (spec, zone) in after.items():
            if before.get(source_id) != (spec, zone):
                self.pipeline.add_source(build_from_spec(spec, new), zone)
                log.info("source added", source=source_id, zone=zone)

    async def _prepare_sinks(self, settings: Settings) -> dict[str, tuple[Any, AlertSink]]:
        """Build the sinks whose settings changed; start all but MQTT, which reopens the old one's outbox."""
        fresh: dict[str, tuple[Any, AlertSink]] = {}
        try:
            for name, spec in sink_specs(settings).items():
                if name in self.sinks and self.sinks[name][0] == spec:
                    continue
                sink = self._make_sink(name, settings)
                if name != "mqtt":
                    await sink.start()
                fresh[name] = (spec, sink)
        except BaseException:
            await self._discard(None, {k: v for k, v in fresh.items() if k != "mqtt"})
            raise
        return fresh

    async def _swap_sinks(self, settings: Settings, fresh: dict[str, tuple[Any, AlertSink]]) -> None:
        assert self.pipeline is not None
        specs = sink_specs(settings)
        stale = [name for name, (spec, _) in self.sinks.items() if specs.get(name) != spec]
        if not stale and not fresh:
            return
        async with self.pipeline.sinks_paused() as active:  # events wait here; none is lost
            for name in stale:
                _spec, sink = self.sinks.pop(name)
                await sink.close()  # MQTT: flushes its outbox and says offline before the new one connects
                log.info("sink closed for reconfiguration", sink=name)
            for name, (spec, sink) in fresh.items():
                if name == "mqtt":
                    await sink.start()
                self.sinks[name] = (spec, sink)
                log.info("sink started", sink=name)
            active[:] = [self.sinks[name][1] for name in specs]

    @staticmethod
    def _warn_restart_only(old: Settings, new: Settings) -> None:
        keys: dict[str, tuple[object, object]] = {
            "service.state_dir": (old.service.state_dir, new.service.state_dir),
            "health": (health_settings(old), health_settings(new)),
        }
        for key, (before, after) in keys.items():
            if before != after:
                log.warning("setting takes effect at the next restart", key=key)

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
        assessment_limit = 3 * self.settings.model.total_timeout_s + stall_after
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
            key = self.settings.model.api_key
            status = BackendStatus(name=backend.name, last_success_at=backend.last_success_at,
                                   last_error_at=backend.last_error_at, base_url=backend.base_url,
                                   api_key=key.get_secret_value() if key is not None else None)
        return Snapshot(state=self.state, sources=self._sources_online(), sinks=self._sinks_connected(),
                        backend=status)

    async def _heartbeat(self) -> None:
        """Track outages for readiness; ping the watchdog while alive; keep STATUS current."""
        interval = self.notifier.watchdog_interval_s
        next_ping = next_status = 0.0
        while not self._done.is_set():
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
        return (f"{self.state}: {sources} sources, {stats.windows_assessed} windows assessed, "
                f"{open_alerts} open alerts, {sum(stats.model_errors.values())} model errors")

    def _wire_metrics(self) -> None:
        metrics = self.metrics
        metrics.source_health = self._sources_online
        metrics.sink_health = self._sinks_connected
        metrics.open_alerts = lambda: len(self.alerts.open)
        metrics.outbox_depth = self._outbox_depth
        metrics.ready = lambda: self.readiness.last_ready

    def _sources_online(self) -> dict[str, bool]:
        if self.pipeline is None:
            return {}
        return {source.id: _online(source) for source, _ in self.pipeline.sources}

    def _sinks_connected(self) -> dict[str, bool | None]:
        connected: dict[str, bool | None] = {}
        for name, (_spec, sink) in self.sinks.items():
            value = getattr(sink, "connected", None)
            connected[name] = None if value is None else bool(value)
        return connected

    def _outbox_depth(self) -> int | None:
        entry = self.sinks.get("mqtt")
        outbox = getattr(entry[1], "outbox", None) if entry is not None else None
        return len(outbox) if outbox is not None else None

    def _stats(self) -> Stats:
        if self.pipeline is not None:
            self.pipeline.stats_json()  # folds the sources' bad-line counts into the stats
        return self.stats

    def _stats_json(self) -> dict[str, Any]:
        return self.pipeline.stats_json() if self.pipeline is not None else self.stats.to_json()


def _online(source: ObservationSource) -> bool:
    """Cameras report their state (`health()`); log sources are online until they end."""
    health = getattr(source, "health", None)
    state = getattr(health(), "state", None) if callable(health) else None
    if state is not None:
        return bool(state == "online")
    online = getattr(source, "online", None)
    return bool(online) if online is not None else not source.ended


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        leaves.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return leaves
