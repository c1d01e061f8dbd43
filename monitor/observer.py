"""What the pipeline tells the world as it works: one observer protocol for every listener.

The daemon's counters (`Stats`), its Prometheus histograms (`Metrics`), the audit
log and replay's trial recorder all listen through the same calls, so the
pipeline itself keeps no books and has no modes. Observers run on the event loop
and must be cheap; one that raises is logged and skipped, never allowed to stop
the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

if TYPE_CHECKING:
    from monitor.alerts import AlertEvent
    from monitor.assess.verdict import Verdict
    from monitor.core.errors import BackendError
    from monitor.windows import Settlement, Window
    from sensors.types import Observation

log = structlog.get_logger("monitor.observer")

# Latency stages, in the order an observation passes them.
STAGES = ("capture", "gating", "queue_wait", "prompt_build", "model_call", "alert_publish", "end_to_end")


@dataclass(frozen=True, slots=True)
class Settled:
    """One window's assessment, finished: its verdict or its error, and the alert event it caused."""

    window: Window
    verdict: Verdict | None
    error: BackendError | None
    event: AlertEvent | None
    latency_s: float


class PipelineObserver(Protocol):
    """Receives the pipeline's events. Implement only what you need by subclassing `Observer`."""

    def observation_received(self, zone: str, observation: Observation) -> None: ...

    def window_dropped(self, window: Window, reason: str) -> None: ...

    def observation_settled(self, settlement: Settlement) -> None:
        """An accepted observation is finished: assessed, errored, or dropped with a reason (once each)."""

    def window_settled(self, settled: Settled) -> None:
        """A window is finished; called after the alert it caused was handed to the sinks (`alert_published`)."""

    def alert_published(self, event: AlertEvent) -> None: ...

    def sink_failed(self, sink: str, event: AlertEvent, error: Exception) -> None: ...

    def stage_latency(self, stage: str, seconds: float) -> None: ...


class Observer:
    """A PipelineObserver that ignores everything; subclasses override what they listen to."""

    def observation_received(self, zone: str, observation: Observation) -> None:
        return None

    def window_dropped(self, window: Window, reason: str) -> None:
        return None

    def observation_settled(self, settlement: Settlement) -> None:
        return None

    def window_settled(self, settled: Settled) -> None:
        return None

    def alert_published(self, event: AlertEvent) -> None:
        return None

    def sink_failed(self, sink: str, event: AlertEvent, error: Exception) -> None:
        return None

    def stage_latency(self, stage: str, seconds: float) -> None:
        return None


class Observers(Observer):
    """Fans every event out to several observers; one that raises is logged and the rest still hear it."""

    def __init__(self, observers: Sequence[PipelineObserver] = ()) -> None:
        self.observers = list(observers)

    def observation_received(self, zone: str, observation: Observation) -> None:
        self._each("observation_received", lambda o: o.observation_received(zone, observation))

    def window_dropped(self, window: Window, reason: str) -> None:
        self._each("window_dropped", lambda o: o.window_dropped(window, reason))

    def observation_settled(self, settlement: Settlement) -> None:
        self._each("observation_settled", lambda o: o.observation_settled(settlement))

    def window_settled(self, settled: Settled) -> None:
        self._each("window_settled", lambda o: o.window_settled(settled))

    def alert_published(self, event: AlertEvent) -> None:
        self._each("alert_published", lambda o: o.alert_published(event))

    def sink_failed(self, sink: str, event: AlertEvent, error: Exception) -> None:
        self._each("sink_failed", lambda o: o.sink_failed(sink, event, error))

    def stage_latency(self, stage: str, seconds: float) -> None:
        self._each("stage_latency", lambda o: o.stage_latency(stage, max(0.0, seconds)))

    def _each(self, event: str, call: Callable[[PipelineObserver], None]) -> None:
        for observer in self.observers:
            try:
                call(observer)
            except Exception:  # a broken listener must not stop the monitor
                log.exception("pipeline observer failed", observer=type(observer).__name__, event=event)
