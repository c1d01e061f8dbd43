"""A replay run as a real process that the tests kill mid-way, and the run-log lines it left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.paths import REPO


def run_log_lines(runs: Path, kind: str) -> list[dict[str, Any]]:
    """The records of type `kind` in a run log being written (a torn last line is skipped)."""
    if not runs.is_file():
        return []
    found = []
    for line in runs.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if record.get("type") == kind:
            found.append(record)
    return found


def kill_replay_after(args: list[str], runs: Path, *, kind: str, count: int, timeout_s: float,
                      ready: Callable[[], bool] | None = None) -> None:
    """Run `python -m replay.cli ARGS` and SIGKILL it once `runs` holds `count` records of type `kind`
    (and `ready()` is true, when given: e.g. once a --fresh run has set the earlier log aside)."""
    process = subprocess.Popen([sys.executable, "-m", "replay.cli", *args], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        # `ready` first: once it holds, the count is read from the file as it is from then on.
        while (ready is not None and not ready()) or len(run_log_lines(runs, kind)) < count:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, f"no {count} {kind} records within {timeout_s:g} s"
            time.sleep(0.02)
        process.kill()
    finally:
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
