"""`monitor inspect-log`: show how the monitor parses a log file, one JSON line per entry.

Besides log files in any supported format, it accepts a PaSBench eval file
(a JSON array of records whose `input` is a whole log) and parses every
record's log, tagging each line with `"record": index`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from monitor.core.errors import LogParseError
from monitor.core.jsonio import MAX_FILE_BYTES, loads_bounded
from sensors.logs.parsers import FORMATS, FormatChoice, LogParser, is_format_choice, parse_pasbench_log
from sensors.types import LogEntry


def inspect_log(path: Path, fmt: str, out: TextIO, *, err: TextIO | None = None) -> int:
    """Print each parsed entry of `path` to `out` as one JSON line; return an exit code.

    Problems go to `err` (stderr by default): a file that cannot be read gives 1,
    an unknown format 2; a bad line names file:line and parsing carries on.
    The result is 0 when at least one entry was parsed, else 1.
    """
    errors = err if err is not None else sys.stderr
    if not is_format_choice(fmt):
        print(f"inspect-log: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", file=errors)
        return 2
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        print(f"inspect-log: cannot read {path}: {exc.strerror or exc}", file=errors)
        return 1
    records = _pasbench_records(text) if fmt in ("auto", "pasbench") else None
    if records is not None:
        count = _inspect_records(path, records, out, errors)
    else:
        count = _inspect_lines(path, text, fmt, out, errors)
    if count == 0:
        print(f"inspect-log: {path}: no entries parsed", file=errors)
        return 1
    return 0


def _pasbench_records(text: str) -> list[Any] | None:
    """The records of a PaSBench eval file, or None when `text` is not one."""
    head = text.lstrip()
    # A PaSBench log itself starts with "[LOG START]": not worth a JSON parse.
    if not head.startswith("[") or head[1:].lstrip().upper().startswith("LOG"):
        return None
    try:
        data = loads_bounded(text, what="eval file", max_bytes=MAX_FILE_BYTES)
    except ValueError:  # JsonInputError: too large, nested too deep, not JSON
        return None
    if not isinstance(data, list) or not all(isinstance(item, dict) and "input" in item for item in data):
        return None
    return data


def _inspect_records(path: Path, records: list[Any], out: TextIO, errors: TextIO) -> int:
    count = 0
    for index, record in enumerate(records):
        log = record["input"]
        entries = parse_pasbench_log(log, source=str(path)) if isinstance(log, str) else []
        if not entries:
            # Image records carry a PNG name as `input`, not a log.
            print(f"inspect-log: {path}: record {index}: no log entries in 'input'", file=errors)
        for entry in entries:
            _write(out, entry, record=index)
        count += len(entries)
    return count


def _inspect_lines(path: Path, text: str, fmt: FormatChoice, out: TextIO, errors: TextIO) -> int:
    parser = LogParser(str(path), fmt)
    count = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        try:
            entries = parser.feed(line, lineno=lineno)
        except LogParseError as exc:
            print(f"inspect-log: {exc}", file=errors)  # the message starts with file:line
            continue
        count += _write_all(out, entries)
    return count + _write_all(out, parser.flush())


def _write_all(out: TextIO, entries: list[LogEntry]) -> int:
    for entry in entries:
        _write(out, entry)
    return len(entries)


def _write(out: TextIO, entry: LogEntry, **extra: Any) -> None:
    out.write(json.dumps({**entry.to_json(), **extra}, ensure_ascii=False) + "\n")
