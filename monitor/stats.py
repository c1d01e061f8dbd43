"""Counters the service keeps about its own work; read by logs, the stats topic and metrics.

`Stats` is a pipeline observer: one set of books, filled as the pipeline reports
what it did.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from monitor.alerts import AlertEvent
from monitor.observer import Observer, Settled
from monitor.windows import DROP_REASONS, SKEW_WARN_S, Settlement, Window
from sensors.types import Observation

# The parts the monitor runs without when they fail (docs/reliability.md): feedback notes in the prompt,
# the feedback store, the history, the audit log, the speaker. Their failures never fail an assessment.
OPTIONAL_PARTS = ("feedback_context", "feedback", "history", "audit_log", "speaker", "notify", "evidence")


@dataclass
class Stats(Observer):
    """Plain counters. Everything is mutated from the event loop thread only."""

    windows_assessed: int = 0
    windows_dropped: Counter[str] = field(default_factory=Counter)
    model_errors: Counter[str] = field(default_factory=Counter)
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    bad_log_lines: int = 0
    # Inputs cut to their bounds: entries truncated at their source, entries dropped for the prompt's budget.
    truncated_entries: int = 0
    budget_dropped_entries: int = 0
    # Alert events a sink failed to take (a full disk, a broken outbox), by sink.
    sink_failures: Counter[str] = field(default_factory=Counter)
    # Feedback on alerts stored, by label (read from the feedback store by the service).
    feedback: dict[str, int] = field(default_factory=dict)
    # Reaching the person: escalations, limits, quiet hours, acknowledgements, speech (`kind:detail` keys).
    reach: Counter[str] = field(default_factory=Counter)
    # Each accepted observation, by source: `accepted`, then once `assessed`, `errored` or `dropped:<reason>`.
    observations: dict[str, Counter[str]] = field(default_factory=dict)
    # Read from the pipeline by the service: observations not settled yet, and each source's clock skew.
    observations_pending: dict[str, int] = field(default_factory=dict)
    clock_skew_s: dict[str, float] = field(default_factory=dict)
    # Read from the followed log files by the service: the bytes after the kept read position that a source's
    # (re)start read (`resumed_bytes`) and skipped over `resume_max_bytes` (`skipped_bytes`), by source.
    log_backlog: dict[str, dict[str, int]] = field(default_factory=dict)
    # Failures of the optional parts, by part (OPTIONAL_PARTS): each window went on without the part.
    optional_failures: Counter[str] = field(default_factory=Counter)

    @property
    def windows_settled(self) -> int:
        """Windows finished one way or another: assessed, failed or dropped."""
        return self.windows_assessed + sum(self.model_errors.values()) + sum(self.windows_dropped.values())

    def observation_received(self, zone: str, observation: Observation) -> None:
        self._source(observation.source)["accepted"] += 1

    def observation_settled(self, settlement: Settlement) -> None:
        key = settlement.outcome if settlement.outcome != "dropped" else f"dropped:{settlement.reason}"
        self._source(settlement.source)[key] += 1

    def _source(self, source: str) -> Counter[str]:
        counts = self.observations.get(source)
        if counts is None:
            counts = self.observations[source] = Counter()
        return counts

    def observation_totals(self) -> dict[str, Any]:
        """Accepted, assessed, errored, dropped by reason and pending, over every source.

        At a quiet moment accepted == assessed + errored + sum(dropped) + pending.
        """
        total: Counter[str] = Counter()
        for counts in self.observations.values():
            total.update(counts)
        return _observation_json(total, sum(self.observations_pending.values()))

    def source_observations(self) -> dict[str, dict[str, Any]]:
        """The same per source, with its clock skew (seconds its clock is behind ours; negative: ahead)."""
        sources = sorted(set(self.observations) | set(self.observations_pending) | set(self.clock_skew_s)
                         | set(self.log_backlog))
        out = {}
        for source in sources:
            body = _observation_json(self.observations.get(source, Counter()), self.observations_pending.get(source, 0))
            skew = self.clock_skew_s.get(source)
            out[source] = {**body, "clock_skew_s": None if skew is None else round(skew, 3),
                           **self.log_backlog.get(source, {})}
        return out

    def source_notes(self) -> dict[str, str]:
        """A short note per source whose clock is off or whose observations were not all assessed (`/readyz`)."""
        notes = {}
        for source, body in self.source_observations().items():
            parts = []
            skew = body["clock_skew_s"]
            if skew is not None and abs(skew) >= SKEW_WARN_S:
                parts.append(f"clock {abs(skew):.1f} s {'behind' if skew > 0 else 'ahead'}")
            unassessed = {k: v for k, v in body["dropped"].items() if v}
            if body["errored"]:
                unassessed["errored"] = body["errored"]
            if unassessed:
                parts.append("observations not assessed: " + ", ".join(f"{k} {v}" for k, v in unassessed.items()))
            if body.get("skipped_bytes"):
                parts.append(f"log written while the monitor was down not read: {body['skipped_bytes']} bytes "
                             "over resume_max_bytes")
            if parts:
                notes[source] = "; ".join(parts)
        return notes

    def window_dropped(self, window: Window, reason: str) -> None:
        self.windows_dropped[reason] += 1
        self.budget_dropped_entries += window.trimmed

    def window_settled(self, settled: Settled) -> None:
        self.budget_dropped_entries += settled.window.trimmed
        if settled.error is not None:
            self.model_errors[settled.error.kind] += 1
            return
        assert settled.verdict is not None
        usage = settled.verdict.usage
        self.windows_assessed += 1
        self.model_calls += usage.calls
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens

    def alert_published(self, event: AlertEvent) -> None:
        self.alerts[f"{event.type}:{event.alert.severity}"] += 1

    def sink_failed(self, sink: str, event: AlertEvent, error: Exception) -> None:
        self.sink_failures[sink] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "windows_assessed": self.windows_assessed,
            "windows_dropped": dict(self.windows_dropped),
            "model_errors": dict(self.model_errors),
            "model_calls": self.model_calls,
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "alerts": dict(self.alerts),
            "bad_log_lines": self.bad_log_lines,
            "truncated_entries": self.truncated_entries,
            "budget_dropped_entries": self.budget_dropped_entries,
            "sink_failures": dict(self.sink_failures),
            "feedback": dict(self.feedback),
            "reach": dict(self.reach),
            "observations": self.observation_totals(),
            "source_observations": self.source_observations(),
            "optional_failures": {part: self.optional_failures[part] for part in OPTIONAL_PARTS},
        }


def _observation_json(counts: Counter[str], pending: int) -> dict[str, Any]:
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for key, count in counts.items():
        if key.startswith("dropped:"):
            reason = key.partition(":")[2]
            dropped[reason] = dropped.get(reason, 0) + count
    return {"accepted": counts["accepted"], "assessed": counts["assessed"], "errored": counts["errored"],
            "dropped": dropped, "pending": pending}
