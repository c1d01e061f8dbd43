"""Text helpers for messages a person reads: bounded lengths, readable times."""

from __future__ import annotations

from datetime import UTC, datetime


def shorten(text: object, limit: int) -> str:
    """`text` as a string of at most `limit` characters, marked with "..." where it was cut."""
    value = str(text)
    return value if len(value) <= limit else value[: max(0, limit - 3)] + "..."


def iso_time(epoch_s: float) -> str:
    """Seconds since the epoch as ISO 8601 in UTC with milliseconds, e.g. `2026-11-25T17:00:00.120+00:00`."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
