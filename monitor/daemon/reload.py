"""SIGHUP: read the configuration again and apply it in place, or keep the running one.

A reload is prepared, then committed. Preparing builds everything that can fail
(the new model backend, the sinks whose settings changed) without touching what
runs; a failure there rejects the reload, one log line per problem, and closes
what was prepared. Committing swaps the new parts in: open alerts, windows and
unchanged sources carry on untouched.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from monitor.assess.single import Assessor
from monitor.core.errors import ConfigError, MonitorError
from monitor.core.logging import configure_logging
from monitor.daemon.metrics import MeteredBackend
from monitor.daemon.wiring import (
    SinkName,
    SinkSpec,
    build_assessor,
    sink_specs,
    source_specs,
    zone_names,
    zones_of,
)
from monitor.history.recorder import prepare_audit_log
from monitor.pipeline import Pipeline
from monitor.settings import Settings, load_settings
from monitor.sinks import AlertSink

if TYPE_CHECKING:
    from monitor.daemon.service import Service

log = structlog.get_logger("monitor.reload")

# Settings read once at start; a change is reported, and applied at the next start.
_RESTART_ONLY = ("service.state_dir", "health", "history.feedback")


async def reload(service: Service) -> None:
    """Read the configuration file again and apply it, or reject it and keep the running one."""
    where = str(service.config_path) if service.config_path is not None else "<defaults and environment>"
    log.info("configuration reload requested", config=where)
    service.state = "reloading"
    service.notifier.reloading(f"reloading {where}")
    try:
        try:
            new = load_settings(service.config_path)
            changed = await _apply(service, new)
        except ConfigError as exc:
            _reject(service, exc.problems)
            return
        except (MonitorError, OSError) as exc:
            _reject(service, [f"{where}: {exc}"])
            return
        service.metrics.reloads.labels("applied").inc()
        log.info("configuration reloaded", config=where, changed=changed)
    finally:
        if service.state == "reloading":
            service.state = "running"
        service.notifier.ready(service.status_line())


def _reject(service: Service, problems: list[str]) -> None:
    for problem in problems:
        log.error("configuration reload rejected", problem=problem)
    log.warning("keeping the running configuration", problems=len(problems))
    service.metrics.reloads.labels("rejected").inc()


# Sinks that reopen the old sink's durable queue (the MQTT outbox, the notify queue): started once the old one
# closed, so two senders never share one queue. The notify sink reads and checks its URLs when built (prepare).
STARTED_AT_COMMIT: frozenset[str] = frozenset({"mqtt", "notify"})

@dataclass
class _Prepared:
    """What a reload built before committing: closed again if the reload is rejected."""

    backend: MeteredBackend | None = None
    assessor: Assessor | None = None
    sinks: dict[SinkName, tuple[SinkSpec, AlertSink]] = field(default_factory=dict)

    async def discard(self) -> None:
        for name, (_spec, sink) in self.sinks.items():
            if name not in STARTED_AT_COMMIT:
                await sink.close()
        if self.backend is not None:
            await self.backend.close()


async def _apply(service: Service, new: Settings) -> list[str]:
    """Apply a valid configuration in place. What can fail is prepared before anything running changes."""
    old, pipeline = service.settings, service.pipeline
    assert pipeline is not None and service.backend is not None
    changed = [name for name in type(new).model_fields if getattr(old, name) != getattr(new, name)]
    _warn_restart_only(old, new)
    prepared = _Prepared()
    try:
        await _prepare(service, old, new, prepared)
    except BaseException:
        await prepared.discard()
        raise
    await _commit(service, old, new, pipeline, prepared)
    return changed


async def _prepare(service: Service, old: Settings, new: Settings, prepared: _Prepared) -> None:
    if new.service.audit_log != old.service.audit_log:
        await asyncio.to_thread(prepare_audit_log, new.service.audit_log)
    if new.model != old.model:
        prepared.backend = service.new_backend(new.model)
        await prepared.backend.start()
    if prepared.backend is not None or (new.assessment, new.zones, new.keyframes) != (
            old.assessment, old.zones, old.keyframes):
        prepared.assessor = build_assessor(new, prepared.backend or service.backend,  # type: ignore[arg-type]
                                           notes=service.audit.notes, failures=service.stats.optional_failures)
    for name, spec in sink_specs(new).items():
        if name in service.sinks and service.sinks[name][0] == spec:
            continue
        sink = service.new_sink(spec)
        prepared.sinks[name] = (spec, sink)
        if name not in STARTED_AT_COMMIT:
            await sink.start()


async def _commit(service: Service, old: Settings, new: Settings, pipeline: Pipeline, prepared: _Prepared) -> None:
    if (new.service.log_level, new.service.log_format) != (old.service.log_level, old.service.log_format):
        configure_logging(new.service.log_level, new.service.log_format)
    service.alerts.settings, service.alerts.zone_names = new.alerts, zone_names(new)
    service.escalation.escalator.configure(new.escalation, new.zones)
    if new.windows != old.windows:
        pipeline.set_window_settings(new.windows)
    await _apply_sources(pipeline, old, new)
    pipeline.exit_when_sources_end = new.service.exit_when_sources_end
    pipeline.shutdown_timeout_s = new.service.shutdown_timeout_s
    service.audit.configure(new)
    service.evidence.configure(new)
    pipeline.set_workers(new.model.concurrency)
    if prepared.assessor is not None:
        await _apply_assessor(service, pipeline, prepared, new.service.shutdown_timeout_s)
    service.settings = new
    service.zones.set_zones(zones_of(new))
    await _swap_sinks(service, pipeline, new, prepared.sinks)


async def _apply_assessor(service: Service, pipeline: Pipeline, prepared: _Prepared, timeout_s: float) -> None:
    assert prepared.assessor is not None
    drained = await pipeline.replace_assessor(prepared.assessor, timeout_s=timeout_s)
    backend = prepared.backend
    if backend is None:
        return
    old, service.backend = service.backend, backend
    if not drained:
        log.warning("closing the previous model backend with assessments still running",
                    reason=f"not finished within shutdown_timeout_s={timeout_s:g}")
    if old is not None:
        await old.close()
    log.info("model backend replaced", backend=backend.name, model=backend.model)


async def _apply_sources(pipeline: Pipeline, old: Settings, new: Settings) -> None:
    before, after = source_specs(old), source_specs(new)
    for source_id, spec in before.items():
        if after.get(source_id) != spec:
            await pipeline.remove_source(source_id)
            log.info("source removed" if source_id not in after else "source restarted", source=source_id)
    for source_id, spec in after.items():
        if before.get(source_id) != spec:
            pipeline.add_source(spec.build(), spec.zone)
            log.info("source added", source=source_id, zone=spec.zone)


async def _swap_sinks(service: Service, pipeline: Pipeline, settings: Settings,
                      fresh: dict[SinkName, tuple[SinkSpec, AlertSink]]) -> None:
    specs = sink_specs(settings)
    stale = [name for name, (spec, _) in service.sinks.items() if specs.get(name) != spec]
    if not stale and not fresh:
        return
    async with pipeline.sinks_paused() as active:  # events wait here; none is lost
        for name in stale:
            _spec, sink = service.sinks.pop(name)
            await sink.close()  # MQTT: flushes its outbox and says offline before the new one connects
            log.info("sink closed for reconfiguration", sink=name)
        for name, (spec, sink) in fresh.items():
            if name in STARTED_AT_COMMIT:
                await sink.start()
            service.sinks[name] = (spec, sink)
            log.info("sink started", sink=name)
        active[:] = [service.sinks[name][1] for name in specs]


def _warn_restart_only(old: Settings, new: Settings) -> None:
    values = {"service.state_dir": (old.service.state_dir, new.service.state_dir),
              "health": (old.health, new.health),
              "history.feedback": (old.history.feedback, new.history.feedback)}
    for key in _RESTART_ONLY:
        before, after = values[key]
        if before != after:
            log.warning("setting takes effect at the next restart", key=key)
