"""The replay's errors, under the monitor's root so the CLI reports them the same way."""

from __future__ import annotations

from monitor.core.errors import MonitorError


class ReplayError(MonitorError):
    """Root of the replay's own errors."""


class ReleaseError(ReplayError):
    """A benchmark file is missing or malformed; the message names the file and the record."""


class RunLogError(ReplayError):
    """A run log cannot be read, or does not belong to the run being resumed."""


class JudgeError(ReplayError):
    """The judge could not give a valid judgement (the trial stays unjudged and is retried on resume)."""
