"""What the fault-injection suite shares: daemon configs with any sources, MQTT and sinks; metrics; a small disk.

Every fault test runs the real daemon (`tests/support/daemon.py`) against the scripted OpenAI-compatible
server and, where MQTT matters, a real mosquitto; each ends by checking that the daemon still assesses the
next window and still exits 0 on SIGTERM (`still_watching`, `stops_cleanly`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, alert_lines, wait_until
from tests.support.mosquitto import Mosquitto, Recorder, publish


def tail(source_id: str, path: Path, *, fmt: str = "jsonl", zone: str | None = None, **options: object) -> str:
    """A `[[sources]]` table: a tailed file."""
    lines = [f'id = "{source_id}"', f'path = "{path}"', f'format = "{fmt}"', "poll_interval_s = 0.05"]
    if zone:
        lines.append(f'zone = "{zone}"')
    lines += [f"{key} = {_toml(value)}" for key, value in options.items()]
    return "\n[[sources]]\n" + "\n".join(lines) + "\n"


def table(header: str, **options: object) -> str:
    """Any TOML table (`[[sources]]`, `[[cameras]]`) from keyword options: strings, numbers, flat dicts."""
    return f"\n{header}\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in options.items())


def _toml(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + "}"
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value)  # strings and numbers are written alike in JSON and TOML


@dataclass
class Rig:
    """A daemon's configuration, written to `tmp/monitor.toml`; the config file's folder is its working dir."""

    tmp: Path
    base_url: str
    sources: list[str] = field(default_factory=list)
    broker: Mosquitto | None = None
    prefix: str = field(default_factory=lambda: f"faults_{uuid.uuid4().hex[:8]}")
    jsonl: Path | None = None
    stdout: bool = False
    audit: Path | None = None
    state_dir: Path | None = None
    max_retries: int = 0
    attempt_timeout_s: float = 5.0
    total_timeout_s: float = 10.0
    windows: str = "max_entries = 1"
    extra: str = ""

    def write(self) -> Path:
        service = [f'state_dir = "{self.state_dir or self.tmp / "state"}"', "shutdown_timeout_s = 5.0"]
        if self.audit is not None:
            service.append(f'audit_log = "{self.audit}"')
        text = f"""
[service]
{chr(10).join(service)}

[model]
backend = "openai"
base_url = "{self.base_url}"
model = "scripted-vlm"
attempt_timeout_s = {self.attempt_timeout_s}
total_timeout_s = {self.total_timeout_s}
max_retries = {self.max_retries}
concurrency = 2
{"".join(self.sources)}
[windows]
min_interval_s = 0.0
{self.windows}

[sinks.stdout]
enabled = {str(self.stdout).lower()}
color = false

[sinks.jsonl]
enabled = {str(self.jsonl is not None).lower()}
path = "{self.jsonl or self.tmp / 'unused.jsonl'}"
"""
        if self.broker is not None:
            text += (f'\n[mqtt]\nhost = "127.0.0.1"\nport = {self.broker.port}\ntopic_prefix = "{self.prefix}"\n'
                     "reconnect_min_s = 0.2\nreconnect_max_s = 1.0\nclose_timeout_s = 3.0\n")
        path = self.tmp / "monitor.toml"
        path.write_text(text + self.extra)
        return path


def entry(text: str, ts: str | None = None) -> str:
    """One JSONL activity line; `ts` is raw JSON put in as is (`1796063737000`, `NaN`, `"9999-..."`), else now."""
    return '{"ts": ' + (ts if ts is not None else repr(time.time())) + ', "text": ' + json.dumps(text) + "}"


def append_lines(path: Path, *lines: str) -> None:
    with path.open("a") as handle:
        for line in lines:
            handle.write(line + "\n")


def still_watching(daemon: Daemon, log: Path | None, *, zone: str, text: str = "Sam climbs the ladder and leans out",
                   timeout: float = 15.0, broker: Mosquitto | None = None, topic: str = "") -> dict[str, object]:
    """The daemon assesses a new window of `zone` (fed by `log`, or by `topic` on `broker`): it was not blinded."""
    before = len(daemon.find("window assessed", zone=zone))
    if log is not None:
        append_lines(log, entry(text))
    else:
        assert broker is not None
        asyncio.run(publish(broker, topic, entry(text)))
    records = daemon.wait_log("window assessed", count=before + 1, timeout=timeout, zone=zone)
    return records[-1]


def stops_cleanly(daemon: Daemon, timeout: float = 20.0) -> None:
    """SIGTERM ends the daemon with status 0, its last log line `monitor stopped`."""
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=timeout) == 0, daemon.stderr_text()[-3000:]
    assert daemon.logs()[-1]["event"] == "monitor stopped"


def metric(daemon: Daemon, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    _status, body = daemon.http("/metrics")
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", re.MULTILINE)
    for found, value in pattern.findall(body.decode()):
        if ",".join(sorted(found.split(","))) == wanted or (not labels and not found):
            return float(value)
    return 0.0


def jsonl_whole(path: Path) -> list[dict[str, object]]:
    """Every line of a JSONL file, each parsed: a torn line fails the test."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path} ends in a torn line: {data[-120:]!r}"
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def wait_alerts(path: Path, count: int, timeout: float = 15.0) -> list[dict[str, object]]:
    found: list[dict[str, object]] = wait_until(lambda: (a := alert_lines(path)) and len(a) >= count and a,
                                                timeout, what=f"{count} alerts in {path}")
    return found


# --------------------------------------------------------------------------- a small file system


@contextlib.contextmanager
def small_disk(mountpoint: Path, size: str = "1m", *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` at `mountpoint` (needs root and mount rights); skips the test with the reason where not."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs at {mountpoint} (needs root and mount rights): "
                    f"{result.stderr.strip() or result.returncode}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def fill(disk: Path) -> Path:
    """Fill the file system of `disk` to the last byte with one file; delete it to give the space back."""
    filler = disk / "filler"
    with filler.open("ab", buffering=0) as handle:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    assert os.statvfs(disk).f_bavail == 0
    return filler


# --------------------------------------------------------------------------- a subscriber for sync tests


class Subscriber:
    """A real MQTT subscriber (`Recorder`) on its own event loop thread, for tests that drive a subprocess."""

    def __init__(self, broker: Mosquitto, *topics: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="subscriber", daemon=True)
        self._recorder = Recorder(broker, *topics)

    def __enter__(self) -> Subscriber:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._recorder.__aenter__(), self._loop).result(timeout=15)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._recorder.__aexit__(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def payloads(self, topic: str) -> list[dict[str, object]]:
        return [message.json() for message in list(self._recorder.messages) if message.topic == topic]

    def wait(self, topic: str, predicate: Callable[[list[dict[str, object]]], bool], timeout: float = 15.0,
             what: str = "messages") -> list[dict[str, object]]:
        found: list[dict[str, object]] = wait_until(lambda: predicate(p := self.payloads(topic)) and p, timeout,
                                                    what=f"{what} on {topic}")
        return found
