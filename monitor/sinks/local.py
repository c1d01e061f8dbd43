"""Local sinks: a readable stdout stream and a JSON-lines file."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

from monitor.alerts import AlertEvent

_COLORS = {"critical": "\033[1;31m", "warning": "\033[33m", "info": "\033[36m"}
_RESET = "\033[0m"


class StdoutSink:
    """Alerts for a person reading a terminal."""

    name = "stdout"

    connected = None  # a terminal has no connection to report
    backlog = None  # written before publish returns

    def __init__(self, *, stream: TextIO | None = None, color: bool | None = None, notice: str | None = None) -> None:
        self.stream = stream or sys.stdout
        self.color = self.stream.isatty() if color is None else color
        self.notice = notice

    async def start(self) -> None:
        """Print the notice, if any: the first thing a person reading the warnings should know."""
        if self.notice:
            self.stream.write(self.notice + "\n")
            self.stream.flush()

    async def publish(self, event: AlertEvent) -> None:
        self.stream.write(self.render(event) + "\n")
        self.stream.flush()

    def render(self, event: AlertEvent) -> str:
        alert = event.alert
        stamp = datetime.fromtimestamp(event.at).strftime("%H:%M:%S")
        label = f"{alert.severity.upper():8}"
        if self.color:
            label = f"{_COLORS[alert.severity]}{label}{_RESET}"
        head = f"[{stamp}] {label} {event.type:6} {alert.zone}: {alert.hazard}"
        if event.type == "end":
            return f"{head} (ended)"
        lines = [head, f"    why:  {alert.reason}", f"    do:   {alert.advice}"]
        if alert.evidence:
            lines.append(f"    seen: {'; '.join(alert.evidence[:3])}")
        lines.append(f"    ({alert.model}, {alert.latency_s:.2f} s, confidence {alert.confidence:.2f}, id {alert.id})")
        return "\n".join(lines)

    async def close(self) -> None:
        self.stream.flush()


class JsonlSink:
    """One alert event per line, flushed and fsynced before `publish` returns."""

    name = "jsonl"

    connected = None  # a local file has no connection to report
    backlog = None  # written and fsynced before publish returns

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")

    async def publish(self, event: AlertEvent) -> None:
        if self._handle is None:
            await self.start()
        assert self._handle is not None
        line = json.dumps(event.to_json(), ensure_ascii=False)
        await asyncio.to_thread(self._write, self._handle, line)

    @staticmethod
    def _write(handle: TextIO, line: str) -> None:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    async def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
