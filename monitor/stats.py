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
from monitor.windows import Window

# The parts the monitor runs without when they fail (docs/reliability.md): feedback notes in the prompt,
# the feedback store, the history, the audit log, the speaker. Their failures never fail an assessment.
OPTIONAL_PARTS = ("feedback_context", "feedback", "history", "audit_log", "speaker")


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
    # Failures of the optional parts, by part (OPTIONAL_PARTS): each window went on without the part.
    optional_failures: Counter[str] = field(default_factory=Counter)

    @property
    def windows_settled(self) -> int:
        """Windows finished one way or another: assessed, failed or dropped."""
        return self.windows_assessed + sum(self.model_errors.values()) + sum(self.windows_dropped.values())

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
            "optional_failures": {part: self.optional_failures[part] for part in OPTIONAL_PARTS},
        }
