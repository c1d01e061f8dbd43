"""Text helpers for messages a person reads: bounded lengths, readable times, no credentials."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

# `scheme://user:password@host`: the user-info part of any URL, up to the last "@" of its authority
# (passwords are often written with a raw "@" in them: rtsp://admin:p@ss@cam/...).
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@]*(?:@[^\s/?#@]*)*@")
REDACTED_USERINFO = "***@"


def shorten(text: object, limit: int) -> str:
    """`text` as a string of at most `limit` characters, marked with "..." where it was cut."""
    value = str(text)
    return value if len(value) <= limit else value[: max(0, limit - 3)] + "..."


def iso_time(epoch_s: float) -> str:
    """Seconds since the epoch as ISO 8601 in UTC with milliseconds, e.g. `2026-11-25T17:00:00.120+00:00`.

    Rounded to the millisecond in integers, so it agrees with `round(epoch_s, 3)` shown beside it
    (a float such as 1796.461 is stored as 1796.46099..., which plain formatting truncates to .460).
    """
    ms = round(epoch_s * 1000)
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000).isoformat(
        timespec="milliseconds")
def redact_credentials(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by `***`.

    `http://user:pass@host/v1` becomes `http://***@host/v1`; text without URL
    credentials comes back unchanged (the same object, so callers can cheaply
    tell whether anything was hidden).
    """
    if "@" not in text or "://" not in text:
        return text
    return _URL_CREDENTIALS.sub(lambda m: m.group(1) + REDACTED_USERINFO, text)


def redact_value(value: Any) -> Any:
    """`value` with URL credentials hidden in every string inside it (dicts, lists and tuples too)."""
    if isinstance(value, str):
        return redact_credentials(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item) for item in value)
    return value


def truncate(text: str, limit: int) -> tuple[str, int]:
    """`text` cut to at most `limit` characters plus a visible marker, and how many characters were cut."""
    if len(text) <= limit:
        return text, 0
    cut = len(text) - limit
    return f"{text[:limit]} [... {cut} characters cut]", cut


def cut(text: str, limit: int) -> str:
    """`text` within `limit` characters, the marker included: its end replaced by `[... N characters cut]`.

    For fields with a hard bound (a model's hazard, its reason): the result always fits, and a
    reader sees that something was cut and how much.
    """
    if len(text) <= limit:
        return text
    kept = limit
    for _ in range(3):  # the marker's own length depends on the number it shows; settles in two rounds
        marker = f" [... {len(text) - kept} characters cut]"
        kept = max(0, limit - len(marker))
    marker = f" [... {len(text) - kept} characters cut]"
    return (text[:kept] + marker)[:limit]
