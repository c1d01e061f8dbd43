"""`monitor run` as a real subprocess for lifecycle tests: its config, JSON logs, health endpoints,
and a real unix datagram socket standing in for systemd's NOTIFY_SOCKET.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests.support.openai_server import Action, ScriptedOpenAIServer, reply

DANGER_LADDER = {
    "danger": True, "severity": "warning", "hazard": "fall from ladder", "reason": "Leaning far out on a ladder.",
    "advice": "Climb down and move the ladder.", "evidence": ["leans out"], "confidence": 0.9,
}
DANGER_STOVE = {
    "danger": True, "severity": "critical", "hazard": "unattended hot stove", "reason": "Oil left on the burner.",
    "advice": "Go back and turn off the stove.", "evidence": ["walks away"], "confidence": 0.9,
}
DANGER_KNIFE = {
    "danger": True, "severity": "info", "hazard": "knife cut", "reason": "Cutting towards the hand.",
    "advice": "Cut away from your hand.", "evidence": ["knife"], "confidence": 0.6,
}
SAFE = {"danger": False, "severity": "info", "hazard": "", "reason": "Nothing risky.", "advice": "",
        "evidence": [], "confidence": 0.8}


def responder(delay_s: float = 0.0) -> Callable[[dict[str, Any]], Action]:
    """Answer by the observation in the prompt (windows hold one entry): ladder, stove, knife are dangers."""

    def answer(body: dict[str, Any]) -> Action:
        user = json.dumps(body.get("messages", [{}])[-1].get("content", "")).lower()
        for word, payload in (("ladder", DANGER_LADDER), ("stove", DANGER_STOVE), ("knife", DANGER_KNIFE)):
            if word in user:
                return reply(payload, delay_s=delay_s)
        return reply(SAFE, delay_s=delay_s)

    return answer


def write_config(path: Path, *, base_url: str, logs: dict[str, Path], alerts: Path, min_confidence: float = 0.0,
                 concurrency: int = 2, shutdown_timeout_s: float = 10.0, attempt_timeout_s: float = 10.0,
                 stdout: bool = False, extra: str = "") -> Path:
    """A daemon config: the OpenAI backend at `base_url`, one tailed JSONL log per source, a JSONL sink."""
    sources = "".join(
        f'\n[[sources]]\nid = "{source_id}"\npath = "{log}"\nformat = "jsonl"\npoll_interval_s = 0.05\n'
        for source_id, log in logs.items()
    )
    path.write_text(f"""
[service]
shutdown_timeout_s = {shutdown_timeout_s}

[model]
backend = "openai"
base_url = "{base_url}"
model = "scripted-vlm"
attempt_timeout_s = {attempt_timeout_s}
total_timeout_s = {attempt_timeout_s * 2}
max_retries = 0
concurrency = {concurrency}
{sources}
[windows]
min_interval_s = 0.0
max_entries = 1

[alerts]
min_confidence = {min_confidence}

[sinks.stdout]
enabled = {str(stdout).lower()}
color = false

[sinks.jsonl]
enabled = true
path = "{alerts}"
{extra}""")
    return path


def append(log: Path, *texts: str) -> None:
    with log.open("a") as handle:
        for text in texts:
            handle.write(json.dumps({"ts": time.time(), "text": text}) + "\n")


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not met within {timeout} s")


class KillableOpenAIServer(ScriptedOpenAIServer):
    """A scripted server whose `stop()` also drops open keep-alive connections, as a dying process would."""

    def start(self) -> KillableOpenAIServer:
        super().start()
        server = self._server
        assert server is not None
        connections: set[socket.socket] = set()
        self._connections = connections
        process_request = server.process_request

        def tracked(request: Any, client_address: Any) -> None:
            connections.add(request)
            process_request(request, client_address)

        server.process_request = tracked  # type: ignore[method-assign]
        return self

    def stop(self) -> None:
        super().stop()
        for connection in list(getattr(self, "_connections", ())):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self._connections = set()


class Daemon:
    """One `python -m monitor run --config ...` process with JSON logs on stderr."""

    def __init__(self, config: Path, workdir: Path, *, env: dict[str, str] | None = None, stdin: bool = False,
                 max_open_files: int | None = None) -> None:
        self.config = config
        self.stderr_path = workdir / "daemon.stderr"
        self.stdout_path = workdir / "daemon.stdout"
        self.env = {**os.environ, "MONITOR_SERVICE__LOG_FORMAT": "json", "MONITOR_HEALTH__PORT": "0",
                    **(env or {})}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            if env is None or name not in env:
                self.env.pop(name, None)
        self.stdin = stdin  # a pipe the test writes to (a `stdin` source), else the test's own stdin
        self.max_open_files = max_open_files  # RLIMIT_NOFILE of the daemon, to run it out of descriptors
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self, *, ready_timeout: float = 20.0) -> Daemon:
        limit = self.max_open_files

        def limit_files() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with self.stderr_path.open("wb") as stderr, self.stdout_path.open("wb") as stdout:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(self.config)],
                stdout=stdout, stderr=stderr, env=self.env, cwd=self.config.parent,
                stdin=subprocess.PIPE if self.stdin else None, preexec_fn=limit_files if limit else None,
            )
        self.started_at = time.monotonic()
        self.wait_log("monitor ready", timeout=ready_timeout)
        time.sleep(0.3)  # the tails open their files at the end right after start-up
        return self

    def write_stdin(self, *lines: str) -> None:
        """Write lines to the daemon's standard input (started with `stdin=True`)."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write("".join(line + "\n" for line in lines).encode())
        self.process.stdin.flush()

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    # -- logs ---------------------------------------------------------------------------
    def logs(self) -> list[dict[str, Any]]:
        records = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.logs() if r.get("event") == event and all(r.get(k) == v for k, v in fields.items())]

    def wait_log(self, event: str, *, count: int = 1, timeout: float = 15.0, **fields: Any) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode} waiting for {event!r}:\n"
                                     + self.stderr_path.read_text()[-3000:])
            records = self.find(event, **fields)
            return records if len(records) >= count else None

        try:
            result: list[dict[str, Any]] = wait_until(found, timeout, what=f"log {event!r} x{count} {fields}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log tail ---\n{self.stderr_path.read_text()[-3000:]}") from None
        return result

    # -- health endpoints ------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.wait_log("health server listening")[0]["port"])

    def http(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def json(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body = self.http(path)
        return status, json.loads(body)

    # -- process ------------------------------------------------------------------------------
    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()

    def __enter__(self) -> Daemon:
        try:
            return self.start()
        except BaseException:
            self.kill()  # a daemon that never got ready must not outlive the test
            raise

    def __exit__(self, *exc: object) -> None:
        self.kill()


def alert_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class NotifySocket:
    """A unix datagram socket to pass as NOTIFY_SOCKET; collects what the daemon sends.

    By default bound in the abstract namespace (`@name`), as systemd itself does on recent versions.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"proactive-monitor-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive(self, timeout: float = 0.05) -> None:
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
            self.sock.settimeout(0.0)

    def with_field(self, key: str, value: str | None = None) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m and (value is None or m[key] == value)]

    def wait_for(self, key: str, value: str | None = None, *, count: int = 1,
                 timeout: float = 15.0) -> list[tuple[float, dict[str, str]]]:
        def found() -> list[tuple[float, dict[str, str]]] | None:
            self.receive()
            hits = self.with_field(key, value)
            return hits if len(hits) >= count else None

        result: list[tuple[float, dict[str, str]]] = wait_until(found, timeout, what=f"notify {key}={value} x{count}")
        return result

    def close(self) -> None:
        self.sock.close()


def keys(messages: Iterable[tuple[float, dict[str, str]]]) -> list[str]:
    return [",".join(sorted(m)) for _, m in messages]
