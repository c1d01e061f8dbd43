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
from collections import Counter
from itertools import accumulate
from typing import Any

from monitor.core.errors import JsonInputError

DEFAULT_MAX_DEPTH = 64
# Bounds for the monitor's own files read back (run logs, caches, scores, scripts): far above anything it
# writes, so only a file that is not its own is refused.
MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_FILE_BYTES = 1024 * 1024 * 1024
# Every byte but the four brackets, deleted in one `bytes.translate`; then +1 for an opener, -1 for a closer.
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1

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
    if max(accumulate(map(_STEP.__getitem__, _outside_strings(text))), default=0) > max_depth:
        raise _refuse(what, "too_deep", f"nested more than {max_depth} levels deep")


def _outside_strings(text: str) -> bytes:
    """The brackets of `text` that are not inside a string, in order.

    Without escapes every quote delimits a string. So escaped backslashes go first (pairs, left to right,
    as a string's escapes pair them), then escaped quotes; the quotes left split the text into outside
    (even) and inside (odd) parts. Everything runs in C: a 500 KB document costs about a millisecond. Text
    outside strings is ASCII in valid JSON; anything else there becomes `?`, which is no bracket. An
    unterminated string counts as outside: such a text is invalid, and refused either way. A closer
    without its opener only ever follows the end of the top-level value, where the parser stops before
    reading on ("Extra data"), so the running sum needs no floor at zero.
    """
    if "\\" in text:
        text = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(text.split('"')[0::2])
    return outside.encode("latin-1", "replace").translate(None, _NOT_BRACKETS)


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
