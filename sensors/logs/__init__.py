"""Activity-log sensors: parsers for JSONL, plain text and PaSBench blocks, and async sources."""

from sensors.logs.parsers import (
    FORMATS,
    Format,
    FormatChoice,
    LogParser,
    PasbenchBlockParser,
    detect_format,
    is_format_choice,
    parse_jsonl_line,
    parse_pasbench_log,
    parse_text_line,
)
from sensors.logs.sources import FileTailSource, ReplayFileSource, StdinSource

__all__ = [
    "FORMATS",
    "FileTailSource",
    "Format",
    "FormatChoice",
    "LogParser",
    "PasbenchBlockParser",
    "ReplayFileSource",
    "StdinSource",
    "detect_format",
    "is_format_choice",
    "parse_jsonl_line",
    "parse_pasbench_log",
    "parse_text_line",
]
