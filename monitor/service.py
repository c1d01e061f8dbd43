"""The daemon: one entry point that owns the event loop and the pipeline's life."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

from monitor.assess import SingleCall
from monitor.backends import ModelBackend, create_backend
from monitor.pipeline import ObservationSource, Pipeline
from monitor.settings import Settings, SourceSettings
from monitor.sinks import AlertSink
from monitor.sinks.local import JsonlSink, StdoutSink
from monitor.stats import Stats
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


def build_source(settings: SourceSettings) -> ObservationSource:
    """The sensor a source section describes."""
    if settings.kind == "stdin":
        return StdinSource(settings.id, settings.format)
    assert settings.path is not None  # validated by SourceSettings
    if settings.kind == "replay":
        return ReplayFileSource(settings.id, settings.path, settings.format,
                                interval_s=settings.interval_s, speed=settings.speed)
    return FileTailSource(settings.id, settings.path, settings.format,
                          from_start=settings.from_start, poll_interval_s=settings.poll_interval_s)


def build_sinks(settings: Settings) -> list[AlertSink]:
    sinks: list[AlertSink] = []
    if settings.sinks.stdout.enabled:
        sinks.append(StdoutSink(color=settings.sinks.stdout.color))
    if settings.sinks.jsonl.enabled:
        sinks.append(JsonlSink(settings.sinks.jsonl.path))
    return sinks


def build_pipeline(settings: Settings, backend: ModelBackend, *, stats: Stats | None = None) -> Pipeline:
    return Pipeline(
        sources=[(build_source(s), s.zone_id) for s in settings.sources],
        assessor=SingleCall(backend),
        sinks=build_sinks(settings),
        windows=settings.windows,
        alerts=settings.alerts,
        workers=settings.model.concurrency,
        stats=stats,
        exit_when_sources_end=settings.service.exit_when_sources_end,
        shutdown_timeout_s=settings.service.shutdown_timeout_s,
        audit_path=settings.service.audit_log,
    )


async def serve(settings: Settings) -> int:
    """Start the backend, run the pipeline until a signal or the end of the sources."""
    backend = create_backend(settings.model)
    await backend.start()
    try:
        pipeline = build_pipeline(settings, backend)
        _install_signal_handlers(pipeline)
        log.info("monitor running", model=backend.model, backend=backend.name,
                 sources=[s.id for s in settings.sources])
        await pipeline.run()
        log.info("monitor stopped", **pipeline.stats_json())
    finally:
        await backend.close()
    return 0


def _install_signal_handlers(pipeline: Pipeline) -> None:
    loop = asyncio.get_running_loop()
    interrupts = {"count": 0}

    def on_signal(signum: int) -> None:
        # Signals only set state; the second SIGINT forces exit.
        interrupts["count"] += 1
        if signum == signal.SIGINT and interrupts["count"] > 1:
            log.warning("second interrupt, exiting now")
            os._exit(130)
        log.info("shutdown requested", signal=signal.Signals(signum).name)
        pipeline.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
