"""Times and durations as people type them in `monitor feedback`, `monitor history` and `monitor replay history`.

A duration is a number with a unit: `90s`, `10min`, `36h`, `30d`, `2w`. A bare `m` is
refused: `purge --older-than 1m` meant a month to the person who typed it and a
minute to the monitor, and deleted everything. A time is seconds since the epoch
(`1767225600`), an ISO 8601 date or date and time (`2026-01-03`, `2026-01-03T18:05`,
`2026-01-03 18:05:00+01:00`; without a UTC offset it is the machine's local time), or
a duration ago (`7d`: seven days before now).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_UNITS = {"s": 1.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "d": 86400.0,
          "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `30d`; ValueError naming the text otherwise."""
    match = _DURATION.match(text)
    if match is None or match.group(2).lower() not in _UNITS:
        ambiguous = match is not None and match.group(2).lower() in ("m", "mo", "mon", "month", "months")
        hint = " ('m' could mean minutes or months)" if ambiguous else ""
        raise ValueError(f"{text!r} is not a duration{hint}: use a number and a unit s, min, h, d or w "
                         "(10min, 36h, 30d)")
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_time(text: str, *, now: float | None = None) -> float:
    """Seconds since the epoch for a time as typed (see the module); ValueError naming the text otherwise."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    if _DURATION.match(value):
        return (time.time() if now is None else now) - parse_duration(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: use seconds since the epoch, an ISO 8601 date and time "
                         "(2026-01-03T18:05, local time unless it carries a UTC offset such as +01:00), or a duration "
                         "ago (7d)") from None
    return parsed.timestamp()  # a naive value is local time, as a person at the machine means it


def utc_label(ts: float) -> str:
    """`2026-01-03 18:05:00 UTC`: a time in reports and listings."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_day(ts: float) -> str:
    """The UTC day of a time, `2026-01-03`: the name of the history file it goes into."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")
