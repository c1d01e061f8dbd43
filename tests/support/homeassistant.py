"""A real Home Assistant core on 127.0.0.1 for tests and benchmarks, with its MQTT integration on a given broker.

HA needs Python 3.13, so it runs from its own venv (`make ha-venv` makes `<repo>/.venv-ha`; the environment
variable MONITOR_HA_PYTHON names another interpreter or venv) as `python -m homeassistant --skip-pip`, in a
process group of its own, with a throwaway config directory that is seeded before the first start:

- `configuration.yaml`: only `homeassistant:` (UTC, metric), `http:` on a free loopback port, `api:` and
  `logger:` (warnings, plus INFO from the MQTT integration). HA also sets up its always-on integrations
  (frontend, backup, network, ...), as any install does.
- `.storage/core.config_entries`: the MQTT config entry (HA no longer reads broker settings from YAML) with
  discovery on under `discovery_prefix`.
- `.storage/auth`: an owner and a long-lived access token (an HS256 JWT signed here with the token's key), so
  the REST API and the websocket API are usable at once; `.storage/onboarding`: onboarding done.

`HomeAssistant` reads states over REST (urllib) and the entity and device registries over the websocket API
(a minimal RFC 6455 client on the standard library, so the project venv needs nothing new). It waits for
"started" as: `GET /api/` answers, HA's state is RUNNING, the MQTT config entry is loaded, and the MQTT
client is connected (`connected` in the entry's diagnostics). Every wait has a deadline; failures carry the
tail of HA's log. `problems()` returns the WARNING/ERROR records of `home-assistant.log` that mention MQTT
or discovery, optionally only those after a `mark()`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.mosquitto import free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_HA_VENV = REPO / ".venv-ha"
HA_PYTHON_ENV = "MONITOR_HA_PYTHON"
DISCOVERY_PREFIX = "homeassistant"
LOG_NAME = "home-assistant.log"
# The levels `problems()` reports by default.
PROBLEM_LEVELS = ("WARNING", "ERROR", "CRITICAL")
# HA reports some discovery payload flaws only at INFO (e.g. "MQTT device information always needs to include a
# name"); the log config lets INFO through from the MQTT integration alone, so this is a strict check's levels.
NOTICE_LEVELS = ("INFO", *PROBLEM_LEVELS)
_PROBE_ID = "pm_ready_probe"
_PROBLEM_WORDS = re.compile(r"mqtt|discovery", re.IGNORECASE)
# "2025-04-30 12:00:00.123 WARNING (MainThread) [homeassistant.components.mqtt.entity] message"
_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ([A-Z]+) \(([^)]*)\) \[([^\]]+)\] ?(.*)$")


class HomeAssistantError(RuntimeError):
    """HA did not start, stop or answer as expected; the message carries the tail of its log."""


class HttpError(HomeAssistantError):
    """HA answered a REST call with an HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- finding the HA interpreter


def ha_python() -> Path | None:
    """The Python of the HA venv, or None. MONITOR_HA_PYTHON may name an interpreter or a venv directory."""
    configured = os.environ.get(HA_PYTHON_ENV)
    candidate = Path(configured) if configured else DEFAULT_HA_VENV
    if candidate.is_dir():
        candidate = candidate / "bin" / "python"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def missing_ha_reason() -> str:
    configured = os.environ.get(HA_PYTHON_ENV)
    where = f"{HA_PYTHON_ENV}={configured}" if configured else str(DEFAULT_HA_VENV)
    return f"no Home Assistant venv at {where}: run `make ha-venv` (Python 3.13, about 2.5-4.5 minutes, 820 MB)"


def ha_python_or_skip() -> Path:
    """The HA interpreter; skips the calling test (with the reason naming `make ha-venv`) when there is none."""
    python = ha_python()
    if python is None:
        import pytest

        pytest.skip(missing_ha_reason())
    return python


# --------------------------------------------------------------------------- the seeded config directory


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_jwt(claims: dict[str, Any], key: str) -> str:
    """A JSON Web Token signed with HMAC-SHA256, as HA's `auth.async_create_access_token` makes them."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def _store(key: str, data: dict[str, Any], *, version: int = 1, minor_version: int = 1) -> str:
    return json.dumps({"version": version, "minor_version": minor_version, "key": key, "data": data}, indent=2)


@dataclass(frozen=True)
class Seed:
    """What `seed_config_dir` wrote: the HTTP port, the access token and the MQTT config entry id."""

    http_port: int
    token: str
    mqtt_entry_id: str


def seed_config_dir(config_dir: Path, *, http_port: int, mqtt_host: str, mqtt_port: int,
                    mqtt_username: str | None = None, mqtt_password: str | None = None,
                    discovery_prefix: str = DISCOVERY_PREFIX, extra_yaml: str = "") -> Seed:
    """Write a minimal HA config with the MQTT config entry, an owner with a long-lived token, onboarding done."""
    storage = config_dir / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(f"""\
homeassistant:
  name: proactive-monitor test
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: NL
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {http_port}
api:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
{extra_yaml}""")

    now = datetime.now(UTC)
    mqtt_entry_id = secrets.token_hex(13)
    broker: dict[str, Any] = {"broker": mqtt_host, "port": mqtt_port}
    if mqtt_username is not None:
        broker["username"] = mqtt_username
    if mqtt_password is not None:
        broker["password"] = mqtt_password
    entry: dict[str, Any] = {
        "created_at": now.isoformat(), "modified_at": now.isoformat(), "data": broker, "discovery_keys": {},
        "disabled_by": None, "domain": "mqtt", "entry_id": mqtt_entry_id, "minor_version": 2, "version": 1,
        "options": {"discovery": True, "discovery_prefix": discovery_prefix},
        "pref_disable_new_entities": False, "pref_disable_polling": False, "source": "user", "subentries": [],
        "title": mqtt_host, "unique_id": None,
    }
    # Config entry store 1.5 (HA 2025.4); an older HA refuses a newer store, a newer HA migrates it.
    (storage / "core.config_entries").write_text(
        _store("core.config_entries", {"entries": [entry]}, minor_version=5))

    user_id, token_id, jwt_key = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(64)
    ten_years = 10 * 365 * 24 * 3600
    (storage / "auth").write_text(_store("auth", {
        "users": [{"id": user_id, "group_ids": ["system-admin"], "is_owner": True, "is_active": True,
                   "name": "proactive-monitor tests", "system_generated": False, "local_only": False}],
        "groups": [{"id": "system-admin", "name": "Administrators"}, {"id": "system-users", "name": "Users"},
                   {"id": "system-read-only", "name": "Read Only"}],
        "credentials": [],
        "refresh_tokens": [{
            "id": token_id, "user_id": user_id, "client_id": None, "client_name": "proactive-monitor tests",
            "client_icon": None, "token_type": "long_lived_access_token", "created_at": now.isoformat(),
            "access_token_expiration": float(ten_years), "token": secrets.token_hex(64), "jwt_key": jwt_key,
            "last_used_at": None, "last_used_ip": None, "expire_at": None, "credential_id": None, "version": None,
        }],
    }))
    (storage / "onboarding").write_text(
        _store("onboarding", {"done": ["user", "core_config", "analytics", "integration"]}, version=4))
    issued = int(now.timestamp()) - 60
    token = hs256_jwt({"iss": token_id, "iat": issued, "exp": issued + ten_years}, jwt_key)
    return Seed(http_port, token, mqtt_entry_id)


# --------------------------------------------------------------------------- HA's log


@dataclass(frozen=True)
class LogRecord:
    time: str
    level: str
    thread: str
    logger: str
    message: str  # with continuation lines (tracebacks, multi-line payloads)

    def __str__(self) -> str:
        return f"{self.time} {self.level} [{self.logger}] {self.message}"


def parse_log(text: str) -> list[LogRecord]:
    """HA's log lines as records; lines that do not start a record belong to the one before."""
    records: list[LogRecord] = []
    for line in text.splitlines():
        if match := _RECORD.match(line):
            records.append(LogRecord(*match.groups()))
        elif records:
            last = records[-1]
            records[-1] = LogRecord(last.time, last.level, last.thread, last.logger, f"{last.message}\n{line}")
    return records


@dataclass(frozen=True)
class LogMark:
    """A point in HA's log across restarts: the run and the byte offset in that run's log."""

    run: int
    offset: int


# --------------------------------------------------------------------------- a minimal websocket client


class _WebSocket:
    """Text frames over one TCP connection (RFC 6455, client side: masked frames, no extensions)."""

    _GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, host: str, port: int, path: str, timeout: float) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            self._sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = self._sock.recv(4096)
                if not chunk:
                    raise ConnectionError(f"websocket handshake: connection closed after {response!r}")
                response += chunk
            head, self._buffer = response.split(b"\r\n\r\n", 1)
            status = head.split(b"\r\n", 1)[0]
            accept = base64.b64encode(hashlib.sha1((key + self._GUID).encode()).digest())  # noqa: S324 (RFC 6455)
            if b" 101 " not in status or accept not in head:
                raise ConnectionError(f"websocket handshake refused: {head.decode(errors='replace')}")
        except BaseException:
            self._sock.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, b"")
        self._sock.close()

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        mask = os.urandom(4)
        self._sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self._sock.recv(max(65536, n - len(self._buffer)))
            if not chunk:
                raise ConnectionError("websocket closed by Home Assistant")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def send_json(self, message: dict[str, Any]) -> None:
        self._send_frame(0x1, json.dumps(message).encode())

    def receive_json(self) -> Any:
        parts: list[bytes] = []
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if second & 0x80 else b""
            payload = self._read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError(f"websocket closed by Home Assistant: {payload[2:].decode(errors='replace')}")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if first & 0x80:
                    return json.loads(b"".join(parts))


# --------------------------------------------------------------------------- the HA process


class HomeAssistant:
    """One HA core process on 127.0.0.1:<free port>, MQTT on the given broker; `restart()` keeps config and port."""

    host = "127.0.0.1"

    def __init__(self, config_dir: Path, *, mqtt_host: str, mqtt_port: int, mqtt_username: str | None = None,
                 mqtt_password: str | None = None, discovery_prefix: str = DISCOVERY_PREFIX,
                 python: Path | None = None, extra_yaml: str = "", start_timeout: float = 120.0) -> None:
        self.config_dir = config_dir
        self.python = python or ha_python_or_skip()
        self.discovery_prefix = discovery_prefix
        self.start_timeout = start_timeout
        seed = seed_config_dir(config_dir, http_port=free_port(), mqtt_host=mqtt_host, mqtt_port=mqtt_port,
                               mqtt_username=mqtt_username, mqtt_password=mqtt_password,
                               discovery_prefix=discovery_prefix, extra_yaml=extra_yaml)
        self.port = seed.http_port
        self.token = seed.token
        self._mqtt = (mqtt_host, mqtt_port, mqtt_username, mqtt_password)
        self.mqtt_entry_id = seed.mqtt_entry_id
        self.log_path = config_dir / LOG_NAME
        self.console_path = config_dir / "console.log"
        self.startup_s: float | None = None  # seconds from spawn to "MQTT connected", of the last start
        self._process: subprocess.Popen[bytes] | None = None
        self._earlier_runs: list[str] = []  # the logs of runs before the current one (HA rolls its log over)
        self._run = -1
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy

    # ----------------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float | None = None) -> HomeAssistant:
        """Spawn HA and wait until it is running with MQTT connected (or raise with its log's tail)."""
        assert not self.running, "Home Assistant already running"
        if self._run >= 0:
            self._earlier_runs.append(self._read_log())
        self._run += 1
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        began = time.monotonic()
        with self.console_path.open("ab") as console:
            self._process = subprocess.Popen(
                [str(self.python), "-m", "homeassistant", "--config", str(self.config_dir), "--skip-pip",
                 "--log-no-color", "--log-file", str(self.log_path)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, env=env,
                cwd=self.config_dir, start_new_session=True)
        try:
            self.wait_ready(timeout if timeout is not None else self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to HA's process group (HA shuts down in stages), SIGKILL after `timeout`."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # Anything HA left in its group (it starts none of its own here, but be sure).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def restart(self, timeout: float | None = None) -> HomeAssistant:
        """Stop and start again with the same config directory, port and token."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> HomeAssistant:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> None:
        """Until `GET /api/` answers, HA is RUNNING, the MQTT entry is loaded, its client is connected and
        MQTT discovery is subscribed (a discovery message published before that would be lost: a test run
        first or alone would then wait for an entity HA never heard of)."""
        deadline = time.monotonic() + timeout
        stage = "GET /api/"
        while True:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise HomeAssistantError(f"Home Assistant exited with {code} while waiting for {stage}"
                                         f"{self._tail()}")
            try:
                if stage == "GET /api/":
                    self.api("GET", "/api/", timeout=2)
                    stage = "state RUNNING"
                if stage == "state RUNNING" and self.api("GET", "/api/config", timeout=2).get("state") == "RUNNING":
                    stage = "MQTT entry loaded"
                if stage == "MQTT entry loaded":
                    entry = self.mqtt_entry()
                    if entry.get("state") in ("setup_error", "migration_error"):
                        raise HomeAssistantError(
                            f"MQTT config entry is {entry.get('state')}: {entry.get('reason')}{self._tail()}")
                    if entry.get("state") == "loaded":
                        stage = "MQTT connected"
                if stage == "MQTT connected" and self.mqtt_connected():
                    stage = "MQTT discovery subscribed"
                if stage == "MQTT discovery subscribed" and self._discovery_probe_seen():
                    return
            except HttpError as error:
                if error.status in (401, 403):  # the seeded token is not accepted: waiting will not help
                    raise HomeAssistantError(f"{error}{self._tail()}") from None
            except (OSError, ValueError):  # not listening yet, or an answer cut short
                pass
            if time.monotonic() > deadline:
                raise HomeAssistantError(f"Home Assistant not ready after {timeout} s (waiting for {stage})"
                                         f"{self._tail()}")
            time.sleep(0.2)

    def _discovery_probe_seen(self) -> bool:
        """Publish a throwaway discovery config (not retained: a missed one is simply sent again) and say
        whether HA made an entity of it; once it has, remove it again."""
        import paho.mqtt.publish as mqtt_publish  # the project venv has paho (aiomqtt's client)

        host, port, username, password = self._mqtt
        auth = {"username": username, "password": password} if username else None
        unique_id = f"{_PROBE_ID}_{self._run}"
        topic = f"{self.discovery_prefix}/sensor/{unique_id}/probe/config"
        config = {"name": _PROBE_ID, "unique_id": unique_id, "state_topic": f"pm_ready_probe/{self._run}",
                  "device": {"identifiers": [unique_id], "name": _PROBE_ID}}
        if self.entity_by_unique_id(unique_id) is None:
            mqtt_publish.single(topic, json.dumps(config), qos=1, hostname=host, port=port, auth=auth)
            return False
        mqtt_publish.single(topic, "", qos=1, hostname=host, port=port, auth=auth)
        return True

    # ----------------------------------------------------------------------- REST

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Any:
        """One authenticated REST call; the decoded JSON answer. Raises HomeAssistantError on HTTP errors."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={  # noqa: S310 (http://127.0.0.1)
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            with error:
                detail = error.read().decode(errors="replace")[:500]
            raise HttpError(f"{method} {path}: HTTP {error.code} {detail}", error.code) from None
        return json.loads(raw) if raw else None

    def states(self) -> list[dict[str, Any]]:
        """`GET /api/states`: every entity's state object."""
        result: list[dict[str, Any]] = self.api("GET", "/api/states")
        return result

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """`GET /api/states/<entity_id>`, or None when HA has no such entity."""
        try:
            result: dict[str, Any] = self.api("GET", f"/api/states/{urllib.parse.quote(entity_id)}")
        except HttpError as error:
            if error.status == 404:
                return None
            raise
        return result

    def wait_state(self, entity_id: str, expected: str | Callable[[dict[str, Any]], bool] | None = None,
                   timeout: float = 15.0) -> dict[str, Any]:
        """Poll until the entity exists (and its state is `expected`, or `expected(state_obj)` holds)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while True:
            last = self.state(entity_id)
            if last is not None and _matches(last, expected):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{entity_id}: waited {timeout} s for state {expected!r}, last seen {last!r}; "
                    f"MQTT problems in HA's log: {[str(r) for r in self.problems()][-5:]}")
            time.sleep(0.1)

    async def async_wait_state(self, entity_id: str,
                               expected: str | Callable[[dict[str, Any]], bool] | None = None,
                               timeout: float = 15.0) -> dict[str, Any]:
        """`wait_state` for async tests: polls from a thread, so the test's event loop keeps running."""
        import asyncio

        return await asyncio.to_thread(self.wait_state, entity_id, expected, timeout)

    def mqtt_entry(self) -> dict[str, Any]:
        """The MQTT config entry as `/api/config/config_entries/entry` lists it (has `state`, `reason`)."""
        entries: list[dict[str, Any]] = self.api("GET", "/api/config/config_entries/entry?domain=mqtt")
        for entry in entries:
            if entry.get("entry_id") == self.mqtt_entry_id:
                return entry
        raise HomeAssistantError(f"no MQTT config entry {self.mqtt_entry_id} in {entries}")

    def mqtt_diagnostics(self) -> dict[str, Any]:
        """The MQTT entry's diagnostics: `connected`, devices with their entities, and per-entity debug info
        (the discovery payloads and the subscriptions with their last messages)."""
        result: dict[str, Any] = self.api("GET", f"/api/diagnostics/config_entry/{self.mqtt_entry_id}")
        data: dict[str, Any] = result.get("data", result)
        return data

    def mqtt_connected(self) -> bool:
        return bool(self.mqtt_diagnostics().get("connected"))

    # ----------------------------------------------------------------------- websocket (registries)

    def ws(self, *commands: dict[str, Any], timeout: float = 10.0) -> list[Any]:
        """Run websocket commands (`{"type": ...}`, ids are added) on one authenticated connection; their
        results in order. Raises HomeAssistantError when a command fails."""
        conn = _WebSocket(self.host, self.port, "/api/websocket", timeout)
        try:
            hello = conn.receive_json()
            if hello.get("type") != "auth_required":
                raise HomeAssistantError(f"websocket: expected auth_required, got {hello}")
            conn.send_json({"type": "auth", "access_token": self.token})
            if (auth := conn.receive_json()).get("type") != "auth_ok":
                raise HomeAssistantError(f"websocket authentication failed: {auth}")
            results: list[Any] = []
            for number, command in enumerate(commands, start=1):
                conn.send_json({**command, "id": number})
                while (answer := conn.receive_json()).get("id") != number:
                    pass
                if not answer.get("success"):
                    raise HomeAssistantError(f"websocket {command.get('type')}: {answer.get('error')}")
                results.append(answer.get("result"))
            return results
        finally:
            conn.close()

    def entity_registry(self) -> list[dict[str, Any]]:
        """`config/entity_registry/list`: entity_id, unique_id, platform, device_id, original_name, ..."""
        result: list[dict[str, Any]] = self.ws({"type": "config/entity_registry/list"})[0]
        return result

    def device_registry(self) -> list[dict[str, Any]]:
        """`config/device_registry/list`: id, identifiers, name, manufacturer, model, sw_version, ..."""
        result: list[dict[str, Any]] = self.ws({"type": "config/device_registry/list"})[0]
        return result

    def entity_by_unique_id(self, unique_id: str, platform: str = "mqtt") -> dict[str, Any] | None:
        return next((e for e in self.entity_registry()
                     if e.get("unique_id") == unique_id and e.get("platform") == platform), None)

    def wait_entity(self, unique_id: str, timeout: float = 15.0, platform: str = "mqtt") -> dict[str, Any]:
        """Poll the entity registry until an entity with this unique_id is there; its registry entry."""
        deadline = time.monotonic() + timeout
        while (entry := self.entity_by_unique_id(unique_id, platform)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {platform} entity with unique_id {unique_id!r} after {timeout} s; "
                    f"MQTT problems in HA's log: {[str(r) for r in self.problems()][-5:]}")
            time.sleep(0.2)
        return entry

    # ----------------------------------------------------------------------- the log

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self, since: LogMark | None = None) -> str:
        """HA's log from `since` (default: the current run's start) to now."""
        if since is None:
            return self._read_log()
        runs = [*self._earlier_runs, self._read_log()]
        return runs[since.run][since.offset:] + "".join(runs[since.run + 1:])

    def all_logs(self) -> str:
        """Every run's log, oldest first."""
        return "".join([*self._earlier_runs, self._read_log()])

    def mark(self) -> LogMark:
        """The current end of HA's log, to read only what comes after (`problems(since=mark)`)."""
        text = self._read_log()
        return LogMark(max(self._run, 0), text.rfind("\n") + 1)  # a line HA is still writing comes after it

    def records(self, since: LogMark | None = None, levels: tuple[str, ...] = PROBLEM_LEVELS) -> list[LogRecord]:
        """Log records at `levels` since `since` (default: since the first start)."""
        text = self.log(since) if since is not None else self.all_logs()
        return [r for r in parse_log(text) if r.level in levels]

    def problems(self, since: LogMark | None = None, levels: tuple[str, ...] = PROBLEM_LEVELS) -> list[LogRecord]:
        """Records at `levels` (default WARNING and up; `NOTICE_LEVELS` adds the MQTT integration's INFO notices)
        that come from the MQTT integration or mention MQTT or discovery, since `since` (default: first start)."""
        return [r for r in self.records(since, levels)
                if (_PROBLEM_WORDS.search(r.logger) or _PROBLEM_WORDS.search(r.message))
                and _PROBE_ID not in r.message]  # the harness's own readiness probe (wait_ready)

    def wait_problem(self, predicate: Callable[[LogRecord], bool] = lambda _r: True, *,
                     since: LogMark | None = None, levels: tuple[str, ...] = PROBLEM_LEVELS,
                     timeout: float = 10.0) -> LogRecord:
        """Poll HA's log until a `problems()` record satisfies `predicate`; that record."""
        deadline = time.monotonic() + timeout
        while not (found := [r for r in self.problems(since, levels) if predicate(r)]):
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching MQTT problem in HA's log after {timeout} s; "
                                     f"the log since then:\n{self.log(since)[-3000:]}")
            time.sleep(0.1)
        return found[0]

    async def async_wait_problem(self, predicate: Callable[[LogRecord], bool] = lambda _r: True, *,
                                 since: LogMark | None = None, levels: tuple[str, ...] = PROBLEM_LEVELS,
                                 timeout: float = 10.0) -> LogRecord:
        """`wait_problem` for async tests."""
        import asyncio

        return await asyncio.to_thread(self.wait_problem, predicate, since=since, levels=levels, timeout=timeout)

    def _tail(self, chars: int = 6000) -> str:
        log = self._read_log()[-chars:]
        try:
            console = self.console_path.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            console = ""
        return (f"\n--- tail of {self.log_path} ---\n{log or '(empty)'}"
                f"\n--- tail of {self.console_path} ---\n{console or '(empty)'}")




def _matches(state: dict[str, Any], expected: str | Callable[[dict[str, Any]], bool] | None) -> bool:
    if expected is None:
        return True
    if callable(expected):
        return expected(state)
    return state.get("state") == expected


@contextlib.contextmanager
def home_assistant(config_dir: Path, *, mqtt_host: str, mqtt_port: int, **kwargs: Any) -> Iterator[HomeAssistant]:
    """A started HA (MQTT connected to mqtt_host:mqtt_port, discovery on); stopped, process group and all, on
    exit. Skips the calling test when there is no HA venv."""
    ha = HomeAssistant(config_dir, mqtt_host=mqtt_host, mqtt_port=mqtt_port, **kwargs)
    try:
        yield ha.start()
    finally:
        ha.stop()
