"""Counters the service keeps about its own work; read by logs, stats and metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Plain counters. Everything is mutated from the event loop thread only."""

    windows_assessed: int = 0
    windows_dropped: Counter[str] = field(default_factory=Counter)
    model_errors: Counter[str] = field(default_factory=Counter)
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    bad_log_lines: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "windows_assessed": self.windows_assessed,
            "windows_dropped": dict(self.windows_dropped),
            "model_errors": dict(self.model_errors),
            "model_calls": self.model_calls,
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "alerts": dict(self.alerts),
            "bad_log_lines": self.bad_log_lines,
        }
