"""The one bounded JSON reader for everything that comes from outside or from disk.

`json.loads` recurses once per nesting level: about 3,000 levels (3 KB) raise `RecursionError`,
which is no `ValueError` and killed the task that read it; deeper input can crash the
interpreter. So the size is checked first, then the nesting depth by a scan that never
recurses (strings skipped whole, so brackets inside them do not count), and only then is
the text parsed. Every refusal is a `JsonInputError` naming the input and its reason, and is
counted in `rejections` (the stats topic and `/metrics` show them), keyed by `what`: callers
pass a fixed description ("mqtt ack message") and log the particulars (topic, path) themselves.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from monitor.core.errors import JsonInputError

DEFAULT_MAX_DEPTH = 64
# Bounds for the monitor's own files read back (run logs, caches, scores, scripts): far above anything it
# writes, so only a file that is not its own is refused.
MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_FILE_BYTES = 1024 * 1024 * 1024
# A string token whole (escapes included), or one bracket. An unterminated string's opening quote
# matches alone: the text is invalid then, and the parser says so.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|"|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset("[{")
_CLOSERS = frozenset("]}")

# Refusals since the process started, by (what, reason). Read by the stats and `/metrics`.
rejections: Counter[tuple[str, str]] = Counter()


def loads_bounded(data: bytes | bytearray | str, *, what: str, max_bytes: int,
                  max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """`data` parsed as JSON, if it is at most `max_bytes` long and nested at most `max_depth` deep.

    Raises `JsonInputError` (counted) for anything else: too large, too deep, not UTF-8, not JSON.
    """
    text = _text(data, what=what, max_bytes=max_bytes)
    check_depth(text, what=what, max_depth=max_depth)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError only if max_depth was set very high
        raise _refuse(what, "invalid", f"not valid JSON ({exc})") from None


def check_bounds(data: bytes | bytearray | str, *, what: str, max_bytes: int,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> str:
    """The checks of `loads_bounded` without the parse, for a parser of its own (pydantic's `validate_json`);
    returns the text."""
    text = _text(data, what=what, max_bytes=max_bytes)
    check_depth(text, what=what, max_depth=max_depth)
    return text


def check_depth(text: str, *, what: str, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise `JsonInputError` (counted) if brackets outside strings nest deeper than `max_depth`."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # too few brackets to nest that deep: most documents end here
    depth = 0
    for match in _TOKENS.finditer(text):
        part = match.group()
        if part in _OPENERS:
            depth += 1
            if depth > max_depth:
                raise _refuse(what, "too_deep", f"nested more than {max_depth} levels deep")
        elif part in _CLOSERS:
            depth = max(0, depth - 1)
        elif part == '"':
            return  # an unterminated string: invalid JSON, which the parser reports


def _text(data: bytes | bytearray | str, *, what: str, max_bytes: int) -> str:
    if isinstance(data, str):
        if len(data) > max_bytes or (4 * len(data) > max_bytes and _utf8_length(data) > max_bytes):
            raise _refuse(what, "too_large", f"larger than {max_bytes} bytes")
        return data
    if len(data) > max_bytes:
        raise _refuse(what, "too_large", f"{len(data)} bytes, more than {max_bytes}")
    raw = bytes(data)
    try:
        return raw.decode(json.detect_encoding(raw), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise _refuse(what, "invalid", f"not valid JSON (not text: {exc})") from None


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _refuse(what: str, reason: str, detail: str) -> JsonInputError:
    rejections[(what, reason)] += 1
    return JsonInputError(what, reason, detail)


def rejection_counts() -> dict[str, int]:
    """The refusals as `{"<what>:<reason>": count}` (the stats topic's `json_rejected`)."""
    return {f"{what}:{reason}": count for (what, reason), count in sorted(rejections.items())}
