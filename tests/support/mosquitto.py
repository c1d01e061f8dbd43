"""A real mosquitto broker on 127.0.0.1 for tests, and a real subscribing client.

`Mosquitto` writes a config into a temp dir (anonymous, or a password file made
with `mosquitto_passwd` and optionally an ACL file; optionally a TLS listener with certificates made by
`make_tls_files` using the `openssl` CLI) and starts/stops/restarts the broker
on the same free port. `Recorder` is an aiomqtt subscriber that reconnects on
its own and keeps every message it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from monitor.alerts import Alert, AlertEvent, EventType
from monitor.assess.verdict import Severity

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _signed(name: str, subject: str, extensions: str, cwd: Path) -> tuple[Path, Path]:
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-sha256", "-extfile", f"{name}.ext", cwd=cwd)
    return cwd / f"{name}.crt", cwd / f"{name}.key"


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate a throwaway CA plus server and client certificates (EC P-256, valid two days)."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=proactive-monitor test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    server_cert, server_key = _signed(
        "server", "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", directory)
    client_cert, client_key = _signed("client", "/CN=monitor", "extendedKeyUsage=clientAuth\n", directory)
    return TlsFiles(directory / "ca.crt", server_cert, server_key, client_cert, client_key)


# --------------------------------------------------------------------------- the broker


class Mosquitto:
    """One mosquitto process on 127.0.0.1:<free port>; `stop()` and `start()` keep the port."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, users: Mapping[str, str] | None = None, tls: TlsFiles | None = None,
                 persistence: bool = False, acl: str | None = None) -> None:
        self.workdir = workdir
        self.users = dict(users or {})
        self.acl = acl  # the text of a mosquitto ACL file (with `users`)
        self.tls = tls
        self.persistence = persistence
        self.port = free_port()
        self.log_path = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self._write_config()

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"user {getpass.getuser()}",
            "max_queued_messages 100000",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
        ]
        if self.users:
            lines.append(f"password_file {self._password_file()}")
        if self.acl is not None:
            acl = self.workdir / "acl"
            acl.write_text(self.acl)
            acl.chmod(0o600)
            lines.append(f"acl_file {acl}")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}", f"keyfile {self.tls.server_key}",
                      "require_certificate true", "tls_version tlsv1.2"]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _password_file(self) -> Path:
        path = self.workdir / "passwords"
        path.touch(mode=0o600)
        for user, password in self.users.items():
            subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True,
                           timeout=10)
        os.chmod(path, 0o600)
        return path

    def reconfigure(self, *, users: Mapping[str, str]) -> None:
        """Replace the users (takes effect at the next start)."""
        self.users = dict(users)
        (self.workdir / "passwords").unlink(missing_ok=True)
        self.config_path = self._write_config()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        assert not self.running, "mosquitto already running"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}: {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto not listening on {self.port} after {timeout} s: {self.log()}")

    def stop(self) -> None:
        """SIGTERM: mosquitto disconnects every client (and saves its state when persistent)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client_kwargs(self, *, username: str | None = None, password: str | None = None) -> dict[str, Any]:
        """aiomqtt.Client keyword arguments to reach this broker (TLS with the client certificate, if any)."""
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port, "username": username,
                                  "password": password}
        if self.tls is not None:
            kwargs["tls_params"] = aiomqtt.TLSParameters(
                ca_certs=str(self.tls.ca), certfile=str(self.tls.client_cert), keyfile=str(self.tls.client_key),
                cert_reqs=ssl.CERT_REQUIRED)
        return kwargs


# --------------------------------------------------------------------------- a real subscriber


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode()


class Recorder:
    """A subscriber that reconnects by itself and records every message, in arrival order.

    `persistent=True` uses a fixed client id and a persistent session, so the
    broker queues QoS 1 messages for it while it is disconnected.
    """

    def __init__(self, broker: Mosquitto, *topics: str, persistent: bool = False, client_id: str | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.broker = broker
        self.topics = topics
        self.persistent = persistent
        self.client_id = client_id or (f"recorder-{os.getpid()}-{id(self)}" if persistent else None)
        self.username = username
        self.password = password
        self.messages: list[Received] = []
        self.connects = 0
        self._changed = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(10):
            await self._subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                client = aiomqtt.Client(**self.broker.client_kwargs(username=self.username, password=self.password),
                                        identifier=self.client_id,
                                        clean_session=False if self.persistent else None, keepalive=5)
                async with client:
                    self.connects += 1
                    await client.subscribe([(t, 1) for t in self.topics])
                    self._subscribed.set()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self.messages.append(Received(str(message.topic), payload, message.retain, message.qos))
                        self._changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Received | None:
        found = self.on(topic)
        return found[-1] if found else None

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """Wait until `predicate()` holds; fail with the messages seen so far."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            seen = [(m.topic, m.payload[:80]) for m in self.messages[-20:]]
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last messages: {seen}") from None

    async def wait_topic(self, topic: str, payload: bytes | None = None, timeout: float = 10.0) -> Received:
        """Wait for a message on `topic` (with `payload`, if given) and return it."""
        def found() -> Received | None:
            return next((m for m in reversed(self.on(topic)) if payload is None or m.payload == payload), None)

        await self.wait_for(lambda: found() is not None, timeout, what=f"{topic} {payload!r}")
        message = found()
        assert message is not None
        return message


async def retained(broker: Mosquitto, topic_filter: str, *, quiet_s: float = 0.3, timeout: float = 5.0,
                   **credentials: str) -> dict[str, Received]:
    """The retained messages under `topic_filter`, as a fresh subscriber sees them."""
    async with Recorder(broker, topic_filter, **credentials) as recorder:  # type: ignore[arg-type]
        # Retained messages arrive right after the subscription; stop once they stop coming.
        deadline = time.monotonic() + timeout
        seen = -1
        while seen != (count := sum(m.retain for m in recorder.messages)) and time.monotonic() < deadline:
            seen = count
            await asyncio.sleep(quiet_s)
    return {m.topic: m for m in recorder.messages if m.retain}


async def publish(broker: Mosquitto, topic: str, payload: bytes | str, *, retain: bool = False,
                  **credentials: str) -> None:
    """Publish one message with QoS 1 from a separate client."""
    async with aiomqtt.Client(**broker.client_kwargs(**credentials)) as client:
        await client.publish(topic, payload, qos=1, retain=retain)


@contextlib.contextmanager
def running(broker: Mosquitto) -> Iterator[Mosquitto]:
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def alert_event(zone: str, n: int, *, kind: EventType = "new", severity: Severity = "warning",
                alert_id: str | None = None, updates: int = 0) -> AlertEvent:
    """A realistic alert event; `n` makes the alert id (and so the message id) unique."""
    now = time.time()
    alert = Alert(
        id=alert_id or f"alert{n:05d}", zone=zone, sources=(f"{zone}-log",), created_at=now, updated_at=now,
        severity=severity, hazard=f"hot oil fire {n}", reason="Wet food is about to go into smoking oil.",
        advice="Turn off the burner now.", evidence=("dense smoke above the pan",), confidence=0.9,
        model="scripted-vlm", strategy="single", window_id=f"{zone}-{n}", latency_s=0.25, prompt_tokens=120,
        completion_tokens=40, updates=updates,
    )
    return AlertEvent(kind, alert, at=now)
