"""Parsers that turn activity-log lines into `LogEntry` values.

Three formats: JSONL (one JSON object per line), plain text (one entry per
line) and PaSBench-style blocks (`[Time]` / `[Location]` /
`[Environmental Observation]` / `[Behavioral Observation]`, written in many
markdown dialects). Every parser takes one line at a time, so the same code
serves a live tail and a whole file. The only exception any of them raises is
`LogParseError`, and only for a JSONL line that is not a valid entry.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeGuard, get_args

from monitor.core.errors import JsonInputError, LogParseError
from monitor.core.jsonio import loads_bounded
from monitor.core.text import shorten, truncate
from sensors.types import LogEntry

Format = Literal["jsonl", "text", "pasbench"]
FormatChoice = Literal["auto", "jsonl", "text", "pasbench"]
FORMATS: tuple[str, ...] = get_args(FormatChoice)
Clock = Callable[[], float]

# The longest text field of one entry, by default ("a few KiB"): one runaway line must not become the prompt.
DEFAULT_MAX_ENTRY_CHARS = 4096
# The sources hold at most 1 MiB of a line; a JSONL line is never longer than what they pass.
MAX_JSONL_LINE_BYTES = 4 * 1024 * 1024
# Timestamps: seconds since 1970 up to the last second of year 9999 (what a datetime can show).
MAX_EPOCH_S = 253_402_300_799.0
# Larger epoch numbers are milliseconds, microseconds or nanoseconds (JavaScript, Go, OpenTelemetry loggers):
# each scale covers the years 1973 to 5138, so the ranges never overlap.
_EPOCH_SCALES = ((1e11, 1.0), (1e14, 1e3), (1e17, 1e6), (1e20, 1e9))


def is_format_choice(name: str) -> TypeGuard[FormatChoice]:
    """True when `name` is a format a `LogParser` accepts (auto included)."""
    return name in FORMATS


# --------------------------------------------------------------------------- JSONL


def parse_jsonl_line(line: str, *, source: str, lineno: int, now: float) -> LogEntry:
    """Parse one JSONL line: an object with `text` and optional `ts`, `location`, ...

    `ts` is epoch seconds or an ISO-8601 string (naive times are taken as UTC so
    a log means the same on every machine); without it the entry gets `now`.
    """
    where = f"{source}:{lineno}"
    try:
        obj = loads_bounded(line, what="jsonl log line", max_bytes=MAX_JSONL_LINE_BYTES)
    except JsonInputError as exc:  # too large, nested too deep, not JSON: named and counted by the reader
        raise LogParseError(f"{where}: {shorten(exc.detail, 80)}") from None
    if not isinstance(obj, dict):
        raise LogParseError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        raise LogParseError(f"{where}: 'text' must be a string, got {_type_name(text)}")
    if not text.strip():
        raise LogParseError(f"{where}: 'text' is empty")
    behaviour = _optional_str(obj, "behaviour", where)
    return LogEntry(
        source=source,
        ts=_timestamp(obj.get("ts"), now=now, where=where),
        text=_utf8_safe(text.strip()),
        clock=_optional_str(obj, "clock", where),
        location=_optional_str(obj, "location", where),
        environment=_optional_str(obj, "environment", where),
        behaviour=behaviour if behaviour is not None else _optional_str(obj, "behavior", where),
        actor=_optional_str(obj, "actor", where),
        raw=line.strip(),
    )


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise LogParseError(f"{where}: '{key}' must be a string, got {_type_name(value)}")
    return _utf8_safe(value.strip()) or None


def _timestamp(value: object, *, now: float, where: str) -> float:
    if value is None:
        return now
    # bool is an int subclass, but `"ts": true` is a mistake, not second 1.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return epoch_seconds(value, where=where)
    if isinstance(value, str):
        return _iso_timestamp(value, where)
    raise LogParseError(f"{where}: 'ts' must be a number or ISO-8601 string, got {_type_name(value)}")


def epoch_seconds(value: float, *, where: str) -> float:
    """An epoch number as seconds: milli-, micro- and nanosecond epochs are recognised by size and converted.

    Raises LogParseError for what is not a time since 1970 up to the year 9999.
    """
    try:
        ts = float(value)
    except OverflowError:
        raise LogParseError(f"{where}: 'ts' {shorten(value, 40)} is out of range") from None
    if not math.isfinite(ts):
        raise LogParseError(f"{where}: 'ts' must be finite, got {ts}")
    if ts < 0:
        raise LogParseError(f"{where}: 'ts' {ts:g} is before 1970; expected seconds (or ms, us, ns) since 1970")
    for bound, per_second in _EPOCH_SCALES:
        if ts < bound:
            return ts / per_second
    raise LogParseError(f"{where}: 'ts' {ts:g} is out of range for seconds, ms, us or ns since 1970")


def _iso_timestamp(value: str, where: str) -> float:
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ts = moment.timestamp()
    except (ValueError, OverflowError, OSError):
        raise LogParseError(f"{where}: 'ts' {value[:40]!r} is not an ISO-8601 time") from None
    # 9999-12-31T23:59:59-01:00 is a valid time that no UTC datetime can hold.
    if not 0.0 <= ts <= MAX_EPOCH_S:
        raise LogParseError(f"{where}: 'ts' {value[:40]!r} is out of range (1970 to 9999-12-31 UTC)")
    return ts


def cap_entry(entry: LogEntry, max_chars: int) -> tuple[LogEntry, int]:
    """`entry` with every text field cut to `max_chars` (marked where cut), and how many characters were cut."""
    fields = (entry.text, entry.raw, entry.clock, entry.location, entry.environment, entry.behaviour, entry.actor)
    if all(value is None or len(value) <= max_chars for value in fields):
        return entry, 0
    cut_total = 0

    def cap(value: str | None) -> str | None:
        nonlocal cut_total
        if value is None:
            return None
        kept, cut = truncate(value, max_chars)
        cut_total += cut
        return kept

    capped = replace(entry, text=cap(entry.text) or "", raw=cap(entry.raw) or "", clock=cap(entry.clock),
                     location=cap(entry.location), environment=cap(entry.environment),
                     behaviour=cap(entry.behaviour), actor=cap(entry.actor))
    return capped, cut_total


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _utf8_safe(text: str) -> str:
    # JSON escapes can smuggle in lone surrogates, which every UTF-8 writer downstream would choke on.
    return text.encode("utf-8", "replace").decode("utf-8")


# --------------------------------------------------------------------------- plain text


def parse_text_line(line: str, *, source: str, now: float) -> LogEntry | None:
    """One stripped line is one entry (text = behaviour); blank lines give None."""
    text = line.strip()
    if not text:
        return None
    return LogEntry(source=source, ts=now, text=text, behaviour=text, raw=text)


# --------------------------------------------------------------------------- PaSBench blocks

_LABEL_WORDS = (
    r"time|location"
    r"|environment(?:al)?(?:\s+observations?)?"
    r"|behaviou?r(?:al)?(?:\s+observations?)?"
)
# "[Behavioral Observation Continued]" carries on the entry it follows (it often holds the act itself).
_CONTINUED = r"\s*[(（]?\s*continued\s*[)）]?"
_LABEL_RE = re.compile(
    rf"^(?P<pre>[\s\-•*#>_]*(?:[\[【][\s*_]*)?)(?P<label>{_LABEL_WORDS})\b(?P<continued>{_CONTINUED})?"
    rf"(?P<post>[\s:：\]】*_]*)(?P<value>.*)$",
    re.IGNORECASE,
)
# A label written inside a line ("[07:00 AM] [Location] Kitchen [Behavioral Observation] ...").
_INLINE_LABEL_RE = re.compile(
    rf"(?=(?:\*\*)?[\[【]\s*(?:{_LABEL_WORDS})(?:{_CONTINUED})?\s*[:：]?\s*[\]】])"
    rf"|(?=\*\*\s*(?:{_LABEL_WORDS})\s*(?:[:：]\s*\*\*|\*\*\s*[:：]))",
    re.IGNORECASE,
)
_MARKER_RE = re.compile(r"([\[【]\s*LOG\s*(?:START|END)\s*[\]】])", re.IGNORECASE)
_CLOCK = r"(?:\d{4}-\d{2}-\d{2}[ T])?\d{1,2}[:：]\d{2}(?:[:：]\d{2})?(?:\s*[ap]\.?\s*m\.?(?![a-z]))?"
_TIME_RE = re.compile(
    rf"^[\s\-•*#>_\[【(]*(?:time\s*[:：]?\s*)?(?P<clock>{_CLOCK})(?P<rest>.*)$",
    re.IGNORECASE,
)
_HEADER_RE = re.compile(r"^[\s\-•*#>_\[【(]*(?:log\s+)?entry\s*(?:#|no\.?)?\s*\d+\b(?P<rest>.*)$", re.IGNORECASE)
_SEPARATOR_RE = re.compile(r"^\s*([-*_=~])(?:\s*\1){2,}\s*$")
_DECORATION_RE = re.compile(r"^[\s*_#>\-•]*$")
_FIELD_OF_LABEL = {"t": "time", "l": "location", "e": "environment", "b": "behaviour"}


@dataclass(frozen=True, slots=True)
class _Marker:
    end: bool


@dataclass(frozen=True, slots=True)
class _Separator:
    pass


@dataclass(frozen=True, slots=True)
class _Decoration:
    pass


@dataclass(frozen=True, slots=True)
class _Header:
    clock: str | None
    location: str | None


@dataclass(frozen=True, slots=True)
class _TimeLine:
    clock: str
    location: str | None


@dataclass(frozen=True, slots=True)
class _Label:
    name: str
    value: str
    continued: bool = False


@dataclass(frozen=True, slots=True)
class _Content:
    value: str


_Piece = _Marker | _Separator | _Decoration | _Header | _TimeLine | _Label | _Content


def _split_line(line: str) -> list[str]:
    """Split a line at LOG markers and at labels written mid-line."""
    pieces: list[str] = []
    for part in _MARKER_RE.split(line):
        pieces.extend(_INLINE_LABEL_RE.split(part) if part else [])
    if len(pieces) <= 1:
        return pieces or [line]
    return _merge_decorations([p for p in pieces if p.strip()])


def _merge_decorations(pieces: list[str]) -> list[str]:
    # "**[Location]**" splits into "**" and "[Location]**": glue bare markup onto what follows.
    merged: list[str] = []
    carry = ""
    for piece in pieces:
        if _DECORATION_RE.match(piece):
            carry += piece
        else:
            merged.append(carry + piece)
            carry = ""
    return merged + ([carry] if carry else [])


def _classify(piece: str) -> _Piece:
    if _MARKER_RE.search(piece):
        # _split_line isolates markers, so the rest of such a piece is markup.
        return _Marker(end="END" in piece.upper())
    if _SEPARATOR_RE.match(piece):
        return _Separator()
    if _DECORATION_RE.match(piece):
        return _Decoration()
    return _as_label(piece) or _as_time(piece) or _as_header(piece) or _Content(_clean_value(piece))


def _as_label(piece: str) -> _Label | None:
    match = _LABEL_RE.match(piece)
    if match is None:
        return None
    pre, post, value = match["pre"], match["post"], match["value"].strip()
    delimited = any(c in pre for c in "[【") or any(c in post for c in ":：]】") or ("*" in pre and "*" in post)
    # Without brackets, colon or bold, "Time flies ..." is prose, not a label.
    if not delimited and value:
        return None
    name = _FIELD_OF_LABEL[match["label"][0].lower()]
    return _Label(name, _clean_value(value), continued=bool(match["continued"]))


def _as_time(piece: str) -> _TimeLine | None:
    start = _split_clock(piece)
    if start is None:
        return None
    clock, location = start
    # "06:45 AM - 07:30 AM": a time range, one level deep (no recursion on hostile input).
    end = _split_clock(location) if location else None
    if end is not None:
        clock, location = f"{clock} - {end[0]}", end[1]
    return _TimeLine(clock, _clean_value(location) or None)


def _split_clock(piece: str) -> tuple[str, str] | None:
    """A line that is a clock time, maybe followed by a location: (clock, location or "")."""
    match = _TIME_RE.match(piece)
    if match is None:
        return None
    location = _time_tail(match["rest"])
    return None if location is None else (_clean_value(match["clock"]), location)


def _time_tail(rest: str) -> str | None:
    """What follows a clock: "" (nothing), a raw location, or None (prose: not a time line)."""
    closed = re.match(r"^\s*(?:\*\*|[\]】)])", rest) is not None
    tail = _strip_edges(rest, _SPACE + "*]】)")
    if not tail:
        return ""
    separated = re.match(r"^[-–—|,]\s*", tail)
    if separated:
        return tail[separated.end() :]
    return tail if closed else None


def _as_header(piece: str) -> _Header | None:
    match = _HEADER_RE.match(piece)
    if match is None:
        return None
    rest = _strip_edges(match["rest"], " \t:.-–—()*[]【】")
    timed = _as_time(rest) if rest else None
    return _Header(timed.clock, timed.location) if timed else _Header(None, None)


_SPACE = " \t\r\n\x0b\x0c\xa0\u3000"


def _strip_edges(text: str, chars: str) -> str:
    """Strip `chars` from both edges, but keep a ")" that closes a "(" of the value.

    "08:00 AM - Construction Site (East Renmin Park)**" keeps its location whole; a
    closing parenthesis only goes when it closes nothing ("(08:00 AM)").
    """
    start, end = 0, len(text)
    while start < end and text[start] in chars:
        start += 1
    while end > start and text[end - 1] in chars:
        end -= 1
    while end < len(text) and text[end] == ")" and text.count("(", start, end) > text.count(")", start, end):
        end += 1
    return text[start:end].strip(_SPACE)


def _clean_value(text: str) -> str:
    """Strip markdown bold, stray brackets and colons from the edges of a field value."""
    value = text.replace("**", "").lstrip(_SPACE + ":：]】").rstrip(_SPACE + "[【")
    value = _drop_unpaired_brackets(value)
    # A "*" from "*italic*" pairs is kept; an odd one at an edge is markup debris.
    if value.count("*") % 2 == 1:
        value = value[1:] if value.startswith("*") else value[:-1] if value.endswith("*") else value
    return value.strip()


def _drop_unpaired_brackets(value: str) -> str:
    """Drop edge brackets that have no partner ("[Kitchen" -> "Kitchen"), keep "[sic]"."""
    opens = value.count("[") + value.count("【")
    closes = value.count("]") + value.count("】")
    start, end = 0, len(value)
    # Indexes, not slicing in a loop: a line of 50,000 "[" must stay linear.
    while start < end and opens > closes and value[start] in "[【" + _SPACE:
        opens -= value[start] in "[【"
        start += 1
    while start < end and closes > opens and value[end - 1] in "]】" + _SPACE:
        closes -= value[end - 1] in "]】"
        end -= 1
    return value[start:end].strip()


@dataclass(slots=True)
class _Block:
    """The entry being assembled: one time block and its fields."""

    clock: str | None = None
    time_location: str | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)

    def has_observations(self) -> bool:
        return "environment" in self.fields or "behaviour" in self.fields

    def is_entry(self) -> bool:
        return self.clock is not None or bool(self.fields)


class PasbenchBlockParser:
    """Incremental parser for PaSBench-style activity logs.

    `feed` takes one line and returns the entries that line completed: an entry
    is complete when the next block starts (a time line, a `[Time]` label, an
    `Entry N` header, a label repeated within the block) or at `[LOG END]`.
    `flush` completes the pending entry at the end of the input. Never raises.
    """

    def __init__(self, source: str, *, clock: Clock = time.time) -> None:
        self._source = source
        self._clock = clock
        self._block = _Block()
        self._field: str | None = None
        self._noise: list[str] = []

    def feed(self, line: str) -> list[LogEntry]:
        """Consume one line; return the entries it completed."""
        done: list[LogEntry] = []
        for one_line in line.rstrip("\r\n").split("\n"):  # callers may hand over several lines at once
            for piece in _split_line(one_line.rstrip("\r")):
                done.extend(self._consume(piece, _classify(piece)))
        return done

    def flush(self) -> list[LogEntry]:
        """End of input: return the pending entry, if any, and start afresh."""
        return self._finish()

    @property
    def holding(self) -> bool:
        """Whether lines fed so far wait for a later line to complete their entry (an open block)."""
        return bool(self._block.raw)

    def _consume(self, piece: str, kind: _Piece) -> list[LogEntry]:
        if isinstance(kind, _Marker):
            return self._finish()
        if isinstance(kind, _Separator):
            return []
        if isinstance(kind, _Decoration):
            # Blank and bare "**" lines belong to whichever block the next real line lands in.
            self._noise.append(piece)
            return []
        if isinstance(kind, (_Header, _TimeLine)):
            return self._on_time(piece, kind)
        if isinstance(kind, _Label):
            return self._on_label(piece, kind)
        return self._on_content(piece, kind.value)

    def _on_time(self, piece: str, kind: _Header | _TimeLine) -> list[LogEntry]:
        starts_block = isinstance(kind, _Header) or self._block.clock is not None
        done = self._finish() if starts_block or self._block.has_observations() else []
        self._take(piece)
        if kind.clock is not None:
            self._block.clock = kind.clock
            self._block.time_location = kind.location
        self._field = None
        return done

    def _on_label(self, piece: str, label: _Label) -> list[LogEntry]:
        if label.name == "time":
            return self._on_time_label(piece, label.value)
        if label.continued and label.name in self._block.fields:
            self._take(piece)
            self._block.fields[label.name] += [label.value] if label.value else []
            self._field = label.name
            return []
        done = self._finish() if label.name in self._block.fields else []
        self._take(piece)
        self._block.fields[label.name] = [label.value] if label.value else []
        self._field = label.name
        return done

    def _on_time_label(self, piece: str, value: str) -> list[LogEntry]:
        block = self._block
        done = self._finish() if block.clock is not None or block.has_observations() else []
        self._take(piece)
        self._field = None
        if not value:
            self._field = "time"  # the clock is on the next line
            return done
        timed = _as_time(value)
        self._block.clock = timed.clock if timed else value
        self._block.time_location = timed.location if timed else None
        return done

    def _on_content(self, piece: str, value: str) -> list[LogEntry]:
        self._take(piece)
        if self._field == "time":
            timed = _as_time(piece)
            self._block.clock = timed.clock if timed else value
            self._block.time_location = timed.location if timed else None
            self._field = None
        elif self._field is not None:
            self._block.fields[self._field].append(value)
        else:
            self._block.orphans.append(value)
        return []

    def _take(self, piece: str) -> None:
        self._block.raw.extend(self._noise)
        self._block.raw.append(piece)
        self._noise.clear()

    def _finish(self) -> list[LogEntry]:
        block, self._block, self._field = self._block, _Block(), None
        self._noise.clear()
        entry = self._build(block)
        return [entry] if entry is not None else []

    def _build(self, block: _Block) -> LogEntry | None:
        if not block.is_entry():
            return None  # a preamble or stray lines: nothing to observe
        behaviour = _joined(block.fields.get("behaviour"))
        if behaviour is None:
            # Unlabelled text (a log with times but no labels) is what the person did; better there than lost.
            behaviour = _joined(block.orphans)
        location = _joined(block.fields.get("location")) or block.time_location
        environment = _joined(block.fields.get("environment"))
        raw = "\n".join(block.raw).strip("\n")
        return LogEntry(
            source=self._source,
            ts=self._clock(),
            text=_summary(block.clock, location, environment, behaviour) or _one_line(raw),
            clock=block.clock,
            location=location,
            environment=environment,
            behaviour=behaviour,
            raw=raw,
        )


def _joined(lines: list[str] | None) -> str | None:
    kept = [line for line in lines or () if line]
    return "\n".join(kept) if kept else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _summary(clock: str | None, location: str | None, environment: str | None, behaviour: str | None) -> str:
    parts = [clock or "", location or ""]
    parts += [f"Environment: {environment}" if environment else "", f"Behaviour: {behaviour}" if behaviour else ""]
    return " | ".join(_one_line(p) for p in parts if p)


def parse_pasbench_log(text: str, *, source: str, clock: Clock = time.time) -> list[LogEntry]:
    """Parse a whole PaSBench log (one record's `input`) into its entries."""
    parser = PasbenchBlockParser(source, clock=clock)
    entries = [entry for line in text.split("\n") for entry in parser.feed(line)]
    return entries + parser.flush()


# --------------------------------------------------------------------------- format detection

_Guess = Literal["jsonl", "text", "pasbench", "maybe"]


def _guess(line: str) -> _Guess | None:
    """What one line says about the format; None for lines that say nothing."""
    stripped = line.strip()
    if _DECORATION_RE.match(stripped) or _SEPARATOR_RE.match(stripped):
        return None
    if stripped.startswith("{"):
        return "jsonl"
    if _MARKER_RE.search(stripped) or _as_header(stripped) or _is_label_line(stripped):
        return "pasbench"
    timed = _as_time(stripped)
    if timed is None:
        return "text"
    # "07:30 - door opened" is as likely a plain log line as a block heading.
    return "maybe" if timed.location else "pasbench"


def _is_label_line(line: str) -> bool:
    label = _as_label(line)
    return label is not None and (bool(label.value) or line.lstrip(" -*#>_")[:1] in "[【" or "*" in line)


def _decide(first: _Guess, second: _Guess | None) -> Format:
    if first != "maybe":
        return first
    return "pasbench" if second == "pasbench" else "text"


def detect_format(sample: str) -> Format:
    """Guess the format from the first meaningful line(s) of a log."""
    guesses = [g for g in map(_guess, sample.split("\n")[:200]) if g is not None]
    if not guesses:
        return "text"
    return _decide(guesses[0], guesses[1] if len(guesses) > 1 else None)


# --------------------------------------------------------------------------- LogParser


class LogParser:
    """One line-at-a-time parser for any format; `auto` decides on the first line(s).

    `feed` returns the entries a line completed; for JSONL a bad line raises
    `LogParseError` naming the source and line, and the parser carries on with
    the next line. `flush` returns what is pending at the end of the input.
    """

    def __init__(self, source: str, fmt: FormatChoice = "auto", *, clock: Clock = time.time) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown log format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.source = source
        self._clock = clock
        self._format: Format | None = None if fmt == "auto" else fmt
        self._blocks = PasbenchBlockParser(source, clock=clock)
        self._pending: list[tuple[str, int]] = []
        self._first: _Guess | None = None
        self._lineno = 0

    @property
    def format(self) -> Format | None:
        """The format in use, or None while `auto` is still undecided."""
        return self._format

    def feed(self, line: str, *, lineno: int | None = None) -> list[LogEntry]:
        """Consume one line (`lineno` overrides the parser's own count in messages)."""
        self._lineno = lineno if lineno is not None else self._lineno + 1
        if self._format is None:
            return self._feed_undecided(line, self._lineno)
        return self._dispatch(self._format, line, self._lineno)

    def flush(self) -> list[LogEntry]:
        """End of input: decide if still undecided, and return pending entries."""
        done = self._settle(None) if self._format is None and self._first is not None else []
        return done + (self._blocks.flush() if self._format == "pasbench" else [])

    @property
    def holding(self) -> bool:
        """Whether lines fed so far wait in the parser for a later line (an undecided start, an open block).

        A followed file keeps its read position only up to lines nothing waits on, so a restart
        reads a held entry's lines again instead of losing them."""
        return bool(self._pending) or (self._format == "pasbench" and self._blocks.holding)

    def _feed_undecided(self, line: str, lineno: int) -> list[LogEntry]:
        guess = _guess(line)
        self._pending.append((line, lineno))
        if guess is None:
            return []
        if self._first is None and guess == "maybe":
            self._first = guess  # wait for one more line to tell a block heading from a text line
            return []
        if self._first is None:
            self._first = guess
            return self._settle(None)
        return self._settle(guess)

    def _settle(self, second: _Guess | None) -> list[LogEntry]:
        assert self._first is not None
        fmt = self._format = _decide(self._first, second)
        pending, self._pending = self._pending, []
        if fmt != "pasbench":
            # Lines seen before the decision were blank or markup, except the deciding ones.
            pending = [(line, n) for line, n in pending if _guess(line) is not None]
        done: list[LogEntry] = []
        for line, n in pending:
            done.extend(self._dispatch(fmt, line, n))
        return done

    def _dispatch(self, fmt: Format, line: str, lineno: int) -> list[LogEntry]:
        if fmt == "pasbench":
            return self._blocks.feed(line)
        if not line.strip():
            return []
        if fmt == "jsonl":
            return [parse_jsonl_line(line, source=self.source, lineno=lineno, now=self._clock())]
        entry = parse_text_line(line, source=self.source, now=self._clock())
        return [entry] if entry is not None else []
