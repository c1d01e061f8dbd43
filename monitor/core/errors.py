"""One small exception tree. Every message names the thing it is about."""

from __future__ import annotations

import sys
from typing import TextIO

from monitor.core.text import redact_credentials


class MonitorError(Exception):
    """Root of every error the monitor raises on purpose."""


class ConfigError(MonitorError):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class SensorError(MonitorError):
    """A sensor cannot produce observations (missing file, closed stream)."""


class LogParseError(SensorError):
    """A log line or block cannot be parsed; names the source and line."""


class JsonInputError(MonitorError, ValueError):
    """A JSON document from outside or from disk was refused: too large, nested too deep, or not JSON.

    `what` names the input ("mqtt ack message", "controls file"), `reason` is one of `too_large`,
    `too_deep`, `invalid`. A ValueError too, so a caller's "not valid" branch takes it as it is.
    """

    def __init__(self, what: str, reason: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what
        self.reason = reason
        self.detail = detail


class SinkError(MonitorError):
    """A sink cannot deliver an alert; names the sink and its destination."""


class BackendError(MonitorError):
    """The model backend failed to produce a valid assessment."""

    kind = "backend"


class TransientBackendError(BackendError):
    """Worth retrying: rate limit, 5xx, connection failure, attempt timeout.

    `retry_after_s` is how long the server asked to be left alone (its Retry-After), when it said.
    """

    kind = "transient"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FatalBackendError(BackendError):
    """Retrying will not help: bad request, authentication, unknown model."""

    kind = "fatal"


class BackendTimeoutError(BackendError):
    """The total time budget of one assessment ran out."""

    kind = "timeout"


class MalformedReplyError(BackendError):
    """The model answered, but not with a valid assessment. Keeps the raw text."""

    kind = "malformed"

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


class BadResponseError(MalformedReplyError):
    """The endpoint answered with something that is not a chat completion (not JSON, no choices).

    Keeps the raw body, cut to a bounded length, like a malformed reply keeps its text.
    """

    kind = "bad_response"


class InternalAssessmentError(BackendError):
    """An assessment failed in the monitor's own code (prompt, keyframes, strategy): a bug, counted, never fatal."""

    kind = "internal"


class ImageInputUnsupportedError(FatalBackendError):
    """The backend rejected image input: a configuration problem, not 'no danger'."""

    kind = "image_unsupported"


def report(error: MonitorError, stream: TextIO | None = None) -> int:
    """Print an error for a person (one line per config problem) and return the exit code 1."""
    lines = error.problems if isinstance(error, ConfigError) else [f"error: {error}"]
    for line in lines:
        print(redact_credentials(line), file=stream or sys.stderr)
    return 1
