"""structlog, configured once: JSON lines under systemd or in pipes, console on a terminal.

Logs go to stderr so that stdout stays a clean stream of alerts.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Literal

import structlog

from monitor.core.text import redact_value

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Key names that hold credentials; `prompt_tokens` and friends are counts, not secrets.
_SECRET_KEY = re.compile(r"(^|_)(api_?key|password|passwd|secret|token|authorization|credentials?)$", re.IGNORECASE)


def _redact_secrets(_: object, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    # Defence in depth: nothing should log a secret, but if a key looks like one, hide it.
    for key in list(event):
        if _SECRET_KEY.search(key):
            event[key] = "**********"
    return event


def _redact_urls(_: object, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    # `http://user:pass@host` can reach a log line in any field (a URL, an error, a traceback): hide it everywhere.
    for key, value in event.items():
        event[key] = redact_value(value)
    return event


def configure_logging(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Configure structlog for the whole process."""
    use_json = fmt == "json" or (fmt == "auto" and (not sys.stderr.isatty() or "JOURNAL_STREAM" in os.environ))
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            structlog.processors.format_exc_info,
            _redact_urls,  # after format_exc_info, so a traceback is covered too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
