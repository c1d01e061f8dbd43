"""Text helpers for messages a person reads: bounded lengths."""

from __future__ import annotations


def shorten(text: object, limit: int) -> str:
    """`text` as a string of at most `limit` characters, marked with "..." where it was cut."""
    value = str(text)
    return value if len(value) <= limit else value[: max(0, limit - 3)] + "..."
