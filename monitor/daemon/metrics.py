"""Prometheus metrics: one registry per service instance, rendered for `/metrics`.

Latencies are observed as they happen (`Metrics` is a pipeline observer of
stage latencies); counters are read from the service's `Stats` at scrape time,
so there is one set of books and the log summary and the metrics cannot drift.
The model call is timed at the boundary by `MeteredBackend`, which also keeps
the last success and failure for readiness.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.metrics_core import Metric

from monitor.backends import BackendWrapper, ModelBackend, ModelReply, ModelRequest
from monitor.backends.failover import BREAKER_STATES, FailoverBackend
from monitor.core import jsonio
from monitor.core.errors import BackendError
from monitor.core.text import shorten
from monitor.observer import STAGES, Observer
from monitor.pipeline import MODEL_SECONDS
from monitor.stats import OPTIONAL_PARTS, Stats
from monitor.zones import ZONE_STATES
from sensors.camera_config import DECODE_MODES

CONTENT_TYPE = CONTENT_TYPE_LATEST
# From a tenth of a millisecond (queue hand-offs) to two minutes (a slow model with retries).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Label values that exist from the first scrape, so rate() has a zero to start from.
DROP_REASONS = ("superseded", "monitoring_off", "shutdown")
ERROR_KINDS = ("transient", "fatal", "timeout", "malformed", "bad_response", "internal", "image_unsupported")
SEVERITIES = ("info", "warning", "critical")
EVENT_TYPES = ("new", "update", "end", "escalate", "ack")
# Reaching the person (docs/escalation.md): `Stats.reach` keys `kind:detail`, one counter family per kind.
REACH_FAMILIES = {
    "escalations": ("monitor_escalations", "Escalations of persisting, unacknowledged alerts, by audience",
                    "audience", ("person", "caregivers", "caregivers_summary")),
    "limited": ("monitor_escalations_limited", "Escalations stopped, skipped or held by a limit", "limit",
                ("max_per_alert", "max_per_hour", "caregivers_max_per_hour")),
    "acknowledged": ("monitor_acknowledgements", "Alerts acknowledged, by channel", "via", ("mqtt", "cli")),
    "quiet": ("monitor_quiet_alert_events", "Alert events silenced by quiet hours", "severity", ("info",)),
    "speech": ("monitor_speech_messages", "Speaker sink messages by outcome", "outcome",
               ("queued", "spoken", "failed", "replaced", "rate_limited", "quiet", "acknowledged", "unavailable")),
    "notify": ("monitor_notifications", "Notify sink (push) notifications by outcome", "outcome",
               ("queued", "sent", "retried", "failed", "rate_limited", "summarised", "quiet", "acknowledged",
                "cancelled_ack")),
}
_ERROR_CHARS = 200


class Metrics(Observer):
    """The service's metrics. Mutated and rendered on the event loop thread only."""

    def __init__(self, *, stats: Callable[[], Stats]) -> None:
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            "monitor_stage_latency_seconds",
            "Latency per pipeline stage: capture (sensor timestamp to ingest), gating (first new observation "
            "to window offered), queue_wait, prompt_build (assessment time outside the model call: prompt "
            "and reply validation), model_call (one backend call, retries included), alert_publish (all "
            "sinks), end_to_end (newest observation to decision published)",
            ["stage"], buckets=BUCKETS, registry=self.registry,
        )
        # Each stage's series, looked up once: every decision records several stages.
        self._stages = {stage: self.stage_seconds.labels(stage) for stage in STAGES}
        self.reloads = Counter("monitor_config_reloads", "Configuration reloads (SIGHUP) by result",
                               ["result"], registry=self.registry)
        for result in ("applied", "rejected"):
            self.reloads.labels(result)
        self.outbox_depth: Callable[[], int | None] = lambda: None
        self.source_health: Callable[[], Mapping[str, bool]] = dict
        self.source_bad_input: Callable[[], Mapping[str, int]] = dict
        self.camera_decoders: Callable[[], Mapping[str, str]] = dict
        self.sink_health: Callable[[], Mapping[str, bool | None]] = dict
        self.open_alerts: Callable[[], int] = lambda: 0
        self.zone_states: Callable[[], Mapping[str, str]] = dict
        self.ready: Callable[[], bool | None] = lambda: None
        self.problems: Callable[[], list[str]] = list
        self.failover: Callable[[], FailoverBackend | None] = lambda: None
        self.registry.register(_ServiceCollector(self, stats))
        self.registry.register(_ProcessCollector())

    def stage_latency(self, stage: str, seconds: float) -> None:
        """Record one latency of a pipeline stage."""
        series = self._stages.get(stage) or self.stage_seconds.labels(stage)
        series.observe(max(0.0, seconds))

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _ServiceCollector:
    """Counters and gauges read from the service's state at scrape time."""

    def __init__(self, metrics: Metrics, stats: Callable[[], Stats]) -> None:
        self.metrics = metrics
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        stats = self.stats()
        yield _counter("monitor_windows_assessed", "Windows the model assessed", stats.windows_assessed)
        yield _labelled(CounterMetricFamily, "monitor_windows_dropped", "Windows dropped without assessment",
                        "reason", _with_zeros(stats.windows_dropped, DROP_REASONS))
        yield _counter("monitor_model_calls", "Model calls made by the assessments", stats.model_calls)
        yield _labelled(CounterMetricFamily, "monitor_model_errors", "Failed assessments by error class",
                        "kind", _with_zeros(stats.model_errors, ERROR_KINDS))
        yield _labelled(CounterMetricFamily, "monitor_tokens", "Model tokens used", "kind",
                        {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens})
        yield self._alerts(stats)
        yield from _reach(stats)
        yield _counter("monitor_bad_log_lines", "Activity-log lines that could not be parsed", stats.bad_log_lines)
        yield _counter("monitor_truncated_entries", "Log entries cut to their source's max_entry_chars",
                       stats.truncated_entries)
        yield _counter("monitor_budget_dropped_entries",
                       "Oldest observations dropped to keep a zone's prompt within windows.max_chars",
                       stats.budget_dropped_entries)
        yield from _observations(stats)
        for kind, what in (("resumed", "read"), ("skipped", "skipped over resume_max_bytes")):
            yield _labelled(CounterMetricFamily, f"monitor_source_log_{kind}_bytes",
                            f"Bytes a followed log file had after its kept read position when its source started "
                            f"(a restart of the monitor, or the source run again after a failure or a reload), {what}",
                            "source", {source: body[f"{kind}_bytes"] for source, body in stats.log_backlog.items()})
        yield _labelled(CounterMetricFamily, "monitor_sink_failures", "Alert events a sink failed to take",
                        "sink", dict(stats.sink_failures))
        yield _labelled(CounterMetricFamily, "monitor_optional_failures",
                        "Failures of an optional part (feedback notes, feedback store, history, audit log, speaker); "
                        "monitoring went on without it", "part", _with_zeros(stats.optional_failures, OPTIONAL_PARTS))
        yield _json_rejected()
        # Every label from the first scrape while feedback is on (the store counts zeros too); none when off.
        yield _labelled(CounterMetricFamily, "monitor_feedback", "Feedback on alerts stored, by label", "label",
                        stats.feedback)
        yield from self._gauges()
        chain = self.metrics.failover()
        if chain is not None:
            yield from _backends(chain)

    def _alerts(self, stats: Stats) -> Metric:
        family = CounterMetricFamily("monitor_alerts", "Alert events published, by type and severity",
                                     labels=["type", "severity"])
        counts = {(t, s): 0 for t in EVENT_TYPES for s in SEVERITIES}
        for key, count in stats.alerts.items():
            event_type, _, severity = key.partition(":")
            counts[(event_type, severity)] = counts.get((event_type, severity), 0) + count
        for (event_type, severity), count in sorted(counts.items()):
            family.add_metric([event_type, severity], count)
        return family

    def _gauges(self) -> Iterable[Metric]:
        m = self.metrics
        yield _gauge("monitor_open_alerts", "Alerts currently open", m.open_alerts())
        depth = m.outbox_depth()
        if depth is not None:
            yield _gauge("monitor_outbox_depth", "MQTT outbox messages waiting for the broker", depth)
        yield _labelled(GaugeMetricFamily, "monitor_source_up", "1 when the source is online", "source",
                        {k: int(v) for k, v in m.source_health().items()})
        yield _labelled(CounterMetricFamily, "monitor_source_bad_input",
                        "Inputs each source could not use: unparsable lines, unreadable or oversized images",
                        "source", dict(m.source_bad_input()))
        yield self._camera_decoders(m.camera_decoders())
        yield _labelled(GaugeMetricFamily, "monitor_sink_connected",
                        "1 when the sink is connected (sinks that report it)", "sink",
                        {k: int(v) for k, v in m.sink_health().items() if v is not None})
        yield self._zone_states(m.zone_states())
        yield _gauge("monitor_problems", "Current problems with delivery or a task the daemon depends on "
                     "(the hub's problem entity, /readyz)", len(m.problems()))
        ready = m.ready()
        if ready is not None:
            yield _gauge("monitor_ready", "1 when /readyz last answered ready", int(ready))


    @staticmethod
    def _camera_decoders(decoders: Mapping[str, str]) -> Metric:
        # One-hot like the zone states: a camera that falls back from keyframe-only decoding shows as a switch.
        family = GaugeMetricFamily("monitor_camera_decoder", "1 for what each camera decodes with now (opencv, "
                                   "pyav-all, pyav-nonref, pyav-keyframes), 0 for the others",
                                   labels=["source", "mode"])
        for source, current in sorted(decoders.items()):
            for mode in DECODE_MODES:
                family.add_metric([source, mode], int(mode == current))
        return family

    @staticmethod
    def _zone_states(states: Mapping[str, str]) -> Metric:
        # One-hot: every state of every zone is a series, so a query never misses a zone's switch to "blind".
        family = GaugeMetricFamily("monitor_zone_state", "1 for the state each zone is in (clear, hazard, "
                                   "degraded, unknown, off, blind), 0 for the others", labels=["zone", "state"])
        for zone, current in sorted(states.items()):
            for state in ZONE_STATES:
                family.add_metric([zone, state], int(state == current))
        return family


def _json_rejected() -> Metric:
    family = CounterMetricFamily("monitor_json_rejected", "JSON inputs refused unread by the bounded reader "
                                 "(too large, nested too deep, not JSON), by input and reason",
                                 labels=["input", "reason"])
    for (what, reason), count in sorted(jsonio.rejections.items()):
        family.add_metric([what, reason], count)
    return family


class _ProcessCollector:
    """Memory, descriptors and CPU of this process from /proc/self.

    prometheus_client's own collector needs /proc/stat (boot time), which the
    systemd unit hides (`ProcSubset=pid`); this one reads only /proc/self.
    """

    def __init__(self) -> None:
        self.started_at = time.time()
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.ticks = os.sysconf("SC_CLK_TCK")

    def collect(self) -> Iterable[Metric]:
        try:
            with open("/proc/self/statm", "rb") as statm:
                virtual, resident = (int(v) for v in statm.read().split()[:2])
            with open("/proc/self/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            descriptors = len(os.listdir("/proc/self/fd"))
        except (OSError, ValueError, IndexError):
            return  # not Linux, or /proc unavailable: no process metrics
        cpu = (int(fields[11]) + int(fields[12])) / self.ticks  # utime + stime (fields 14, 15 of stat)
        yield _gauge("process_resident_memory_bytes", "Resident memory size in bytes", resident * self.page_size)
        yield _gauge("process_virtual_memory_bytes", "Virtual memory size in bytes", virtual * self.page_size)
        yield _gauge("process_open_fds", "Number of open file descriptors", descriptors)
        yield _counter("process_cpu_seconds", "User and system CPU time spent in seconds", cpu)
        yield _gauge("process_start_time_seconds", "Start time of the service, seconds since the epoch",
                     self.started_at)


class MeteredBackend(BackendWrapper):
    """A model backend that times every call and remembers the last success and failure.

    `last_success_at` / `last_error_at` are wall-clock times of calls that
    returned an answer (valid or not: the model answered) or raised, `last_error`
    what the newest failure was; `oldest_call_s()` shows a call that hangs.
    """

    def __init__(self, inner: ModelBackend, *, observe: Callable[[str, float], None] | None = None) -> None:
        super().__init__(inner)
        self._observe = observe
        self.last_success_at: float | None = None
        self.last_error_at: float | None = None
        self.last_error: str | None = None
        self._calls: dict[int, float] = {}
        self._call_ids = itertools.count()

    def oldest_call_s(self) -> float:
        """How long the longest-running model call has been waiting (0 when none is running)."""
        now = time.perf_counter()
        return max((now - started for started in self._calls.values()), default=0.0)

    async def complete(self, request: ModelRequest) -> ModelReply:
        started = time.perf_counter()
        call = next(self._call_ids)
        self._calls[call] = started
        try:
            reply = await self.inner.complete(request)
        except BackendError as exc:
            self.last_error_at = time.time()
            self.last_error = f"{exc.kind}: {shorten(exc, _ERROR_CHARS)}"
            raise
        finally:
            del self._calls[call]
            elapsed = time.perf_counter() - started
            spent = MODEL_SECONDS.get()
            if spent is not None:
                spent.append(elapsed)
            if self._observe is not None:
                self._observe("model_call", elapsed)
        self.last_success_at = time.time()
        return reply


def _backends(chain: FailoverBackend) -> Iterable[Metric]:
    """Each backend of the failover chain (docs/failover.md): its calls, errors, latency and breaker."""
    links = chain.links
    yield _labelled(CounterMetricFamily, "monitor_backend_calls", "Calls to each model backend of the chain",
                    "backend", {link.name: link.book.calls for link in links})
    errors = CounterMetricFamily("monitor_backend_errors", "Failed calls of each model backend, by error class",
                                 labels=["backend", "kind"])
    latency = SummaryMetricFamily("monitor_backend_call_seconds", "Time of each model backend's calls, failed "
                                  "ones included", labels=["backend"])
    state = GaugeMetricFamily("monitor_backend_breaker_state", "1 for each backend's circuit breaker state "
                              "(closed, open, half_open), 0 for the others", labels=["backend", "state"])
    spent = CounterMetricFamily("monitor_backend_breaker_seconds", "Time each backend's breaker spent in each "
                                "state", labels=["backend", "state"])
    for link in links:
        for kind, count in sorted(_with_zeros(link.book.errors, ERROR_KINDS).items()):
            errors.add_metric([link.name, kind], count)
        latency.add_metric([link.name], count_value=link.book.calls, sum_value=link.book.latency_sum_s)
        seconds = link.breaker.seconds_in()
        for name in BREAKER_STATES:
            state.add_metric([link.name, name], int(link.breaker.state == name))
            spent.add_metric([link.name, name], seconds[name])
    yield from (errors, latency, state, spent)
    yield _labelled(GaugeMetricFamily, "monitor_backend_active", "1 for the backend that answered last",
                    "backend", {link.name: int(link.name == chain.active) for link in links})


def _reach(stats: Stats) -> Iterable[Metric]:
    for kind, (name, documentation, label, known) in REACH_FAMILIES.items():
        counts = {detail: n for key, n in stats.reach.items() for k, _, detail in [key.partition(":")] if k == kind}
        yield _labelled(CounterMetricFamily, name, documentation, label, _with_zeros(counts, known))


def _observations(stats: Stats) -> Iterable[Metric]:
    """Every accepted observation, settled once (docs/reliability.md, late and out-of-order observations)."""
    totals = stats.observation_totals()
    yield _counter("monitor_observations_accepted", "Observations the sources handed to the pipeline",
                   totals["accepted"])
    yield _counter("monitor_observations_assessed", "Accepted observations that were in an assessed window",
                   totals["assessed"])
    yield _counter("monitor_observations_errored",
                   "Accepted observations only ever in windows whose assessment failed", totals["errored"])
    yield _labelled(CounterMetricFamily, "monitor_observations_dropped",
                    "Accepted observations never assessed, by reason", "reason", totals["dropped"])
    yield _gauge("monitor_observations_pending", "Accepted observations not settled yet (in a window or an "
                 "assessment)", totals["pending"])
    sources = stats.source_observations()
    dropped = CounterMetricFamily("monitor_source_observations_dropped",
                                  "Accepted observations never assessed, by source and reason",
                                  labels=["source", "reason"])
    for source, body in sources.items():
        for reason, count in body["dropped"].items():
            dropped.add_metric([source, reason], count)
    yield dropped
    yield _labelled(GaugeMetricFamily, "monitor_source_clock_skew_seconds",
                    "How far each source's clock is behind the monitor's (running median of arrival minus "
                    "sensor time; negative: ahead)", "source",
                    {source: body["clock_skew_s"] for source, body in sources.items()
                     if body["clock_skew_s"] is not None})


def _counter(name: str, documentation: str, value: float) -> Metric:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(kind: Any, name: str, documentation: str, label: str, values: Mapping[str, float]) -> Metric:
    family: Metric = kind(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)  # type: ignore[attr-defined]
    return family


def _with_zeros(counts: Mapping[str, int], known: Iterable[str]) -> dict[str, int]:
    return {**dict.fromkeys(known, 0), **counts}
