"""A command whose reader went away (`monitor replay compare ... | head`) ends quietly, like a Unix tool.

Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError, and the
interpreter's own flush of stdout at exit would print a second traceback. The
entry points catch it, point stdout at /dev/null so nothing more can fail, and exit
with 141 (128 + SIGPIPE), the status a tool killed by the signal has.
"""

from __future__ import annotations

import os
import sys

EXIT_BROKEN_PIPE = 128 + 13


def reader_gone() -> int:
    """Silence stdout for good after a BrokenPipeError; the exit code to return."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout replaced by something without a descriptor (tests): nothing to do
        pass
    return EXIT_BROKEN_PIPE
