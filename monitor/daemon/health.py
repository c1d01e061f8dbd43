"""Health, readiness and metrics over HTTP, on loopback by default.

- `/healthz`: the process and its event loop answer, and the pipeline's stages
  are making progress (the same test the systemd watchdog uses). 200 or 503.
- `/readyz`: every source online or within its grace period, no zone blind,
  the model backend's last real call succeeded and none has hung (a monitor
  that has never assessed anything probes `GET <base_url>/models` instead),
  every sink that reports a connection is connected, every sink took the last
  alert it was given (`delivery`: a full disk, a broken outbox), and no task the
  daemon depends on died recently (`tasks`). 200 or 503; the JSON body names
  each check and lists the failed ones.
- `/metrics`: the Prometheus text format.

A tiny HTTP/1.1 server on asyncio streams: three GET routes need no framework.
Connections are bounded (each holds a descriptor the model calls need too), and
a request's head must arrive within `_HEADER_TIMEOUT_S`. At the bound, the
oldest connection still sending its head gives way to the new one: a flood of
slow or idle sockets (slowloris) cannot keep a quick probe out, because every
new probe pushes the oldest idler out instead of being refused itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

from monitor.alerts import AlertEvent
from monitor.core.text import shorten
from monitor.daemon.settings import HealthSettings
from monitor.observer import Observer

log = structlog.get_logger("monitor.health")

# A probe sends its head in one packet at once; a client still sending after 2 s is slow or hostile.
_HEADER_TIMEOUT_S = 2.0
_RESPONSE_TIMEOUT_S = 5.0  # a client that does not read its answer gives way
_MAX_REQUEST_BYTES = 16 * 1024
# Idle connections held open cost a file descriptor each, and the model calls need descriptors too:
# beyond this many at once, the oldest still sending its head is closed (counted), or if every one is
# being answered, the new one.
MAX_CONNECTIONS = 32
_REJECT_LOG_INTERVAL_S = 60.0
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


# --------------------------------------------------------------------------- readiness


@dataclass
class BackendStatus:
    """What readiness needs to know about the model backend. `api_key` is only sent, never shown.

    `last_error` describes the newest failed call; `oldest_call_s` is how long the longest call still
    running has waited, and `hung_after_s` how long a call may take before it counts as hanging.
    """

    name: str
    last_success_at: float | None
    last_error_at: float | None
    base_url: str | None
    api_key: str | None = field(default=None, repr=False)
    last_error: str | None = None
    oldest_call_s: float = 0.0
    hung_after_s: float | None = None


@dataclass
class Snapshot:
    """The service as readiness sees it at one moment. `zones` maps each zone to its state and reason."""

    state: str  # starting | running | reloading | stopping | stopped
    sources: Mapping[str, bool]
    sinks: Mapping[str, bool | None]
    backend: BackendStatus | None
    zones: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Per source: its clock skew and observations not assessed, when there is something to say.
    source_notes: Mapping[str, str] = field(default_factory=dict)
    delivery: Mapping[str, str | None] = field(default_factory=dict)  # each sink: why it cannot deliver, or None
    tasks: Mapping[str, str | None] = field(default_factory=dict)  # each supervised task: its recent death, or None
    # The model chain (active backend, each breaker) and the zones a fallback assesses: shown, never a failure.
    model: Mapping[str, Any] = field(default_factory=dict)
    degraded: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Check:
    ok: bool
    detail: Any

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


Probe = Callable[[str, str | None, float], tuple[bool, str]]


def probe_models(base_url: str, api_key: str | None, timeout_s: float) -> tuple[bool, str]:
    """`GET <base_url>/models`: the cheapest request every OpenAI-compatible server answers."""
    url = base_url.rstrip("/") + "/models"
    if urlsplit(url).scheme not in ("http", "https"):
        return False, "not an http(s) URL"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked above)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason)


class Readiness:
    """Decides readiness from snapshots; remembers since when each part has been down."""

    def __init__(self, settings: HealthSettings, *, probe: Probe = probe_models,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._probe = probe
        self._clock = clock
        self._wall = wall
        self._down_since: dict[str, float] = {}
        self._probe_ok_at: float | None = None
        self._probe_failed: tuple[float, str] | None = None
        self._probe_lock = asyncio.Lock()
        self.last_ready: bool | None = None

    def track(self, snapshot: Snapshot) -> None:
        """Note which sources and sinks are down now (call often: it dates the start of each outage)."""
        now = self._clock()
        up = {f"source:{k}": v for k, v in snapshot.sources.items()}
        up.update({f"sink:{k}": v for k, v in snapshot.sinks.items() if v is not None})
        for key, online in up.items():
            if online:
                self._down_since.pop(key, None)
            else:
                self._down_since.setdefault(key, now)
        for key in set(self._down_since) - set(up):
            del self._down_since[key]  # removed by a reload

    async def check(self, snapshot: Snapshot) -> tuple[bool, dict[str, Any]]:
        """The readiness verdict and its JSON body."""
        self.track(snapshot)
        checks = {
            "service": Check(snapshot.state == "running" or snapshot.state == "reloading", snapshot.state),
            "sources": self._within_grace("source", snapshot.sources, snapshot.source_notes),
            "zones": _zones(snapshot.zones),
            "backend": await self._backend(snapshot.backend),
            "sinks": self._within_grace("sink", snapshot.sinks),
            "delivery": _problems(snapshot.delivery, ok="delivering"),
            "tasks": _problems(snapshot.tasks, ok="running"),
        }
        failed = [name for name, check in checks.items() if not check.ok]
        self.last_ready = not failed
        body = {"ready": not failed, "failed": failed, "checks": {k: c.to_json() for k, c in checks.items()}}
        if snapshot.model:
            # Degraded zones are watched (ready), but named: a fallback assesses them (docs/failover.md).
            body.update(model=dict(snapshot.model), degraded=dict(snapshot.degraded))
        return not failed, body

    def _within_grace(self, kind: str, parts: Mapping[str, bool | None],
                      notes: Mapping[str, str] | None = None) -> Check:
        now = self._clock()
        detail: dict[str, str] = {}
        ok = True
        for name, online in parts.items():
            if online is None:
                detail[name] = "no connection to report"
            elif online:
                detail[name] = "online"
            else:
                down_for = now - self._down_since.get(f"{kind}:{name}", now)
                within = down_for < self.settings.ready_grace_s
                ok = ok and within
                state = "within grace" if within else "offline"
                detail[name] = f"{state} for {down_for:.1f} s (ready_grace_s={self.settings.ready_grace_s:g})"
            if notes and name in notes:  # information, never a failure: the observations are still placed
                detail[name] += f"; {notes[name]}"
        return Check(ok, detail)

    async def _backend(self, backend: BackendStatus | None) -> Check:
        """Real assessment calls decide: the newest outcome, and no call hanging. The probe stands in only
        for a monitor that has not called the model yet: a listed model says nothing about 500s, 429s,
        401s or hangs on the calls that matter."""
        if backend is None:
            return Check(False, "not started")
        now = self._wall()
        hung = backend.hung_after_s is not None and backend.oldest_call_s > backend.hung_after_s
        if hung:
            return Check(False, f"a model call has waited {backend.oldest_call_s:.1f} s "
                                f"(longer than model.attempt_timeout_s={backend.hung_after_s:g})")
        success, error = backend.last_success_at, backend.last_error_at
        if error is not None and (success is None or error > success):
            return Check(False, f"the last model call failed {now - error:.1f} s ago: {backend.last_error or 'error'}")
        if success is not None:
            return Check(True, f"the last model call succeeded {now - success:.1f} s ago")
        if backend.base_url is None:
            return Check(True, f"{backend.name}: not called yet, nothing to probe")
        return await self._probe_backend(backend)

    async def _probe_backend(self, backend: BackendStatus) -> Check:
        url = _without_credentials(backend.base_url or "")
        async with self._probe_lock:  # one probe at a time; concurrent checks share its result
            failed = self._probe_failed
            retry_after = min(5.0, self.settings.backend_fresh_s / 2)
            if failed is not None and self._wall() - failed[0] < retry_after:
                return Check(False, f"probe GET {url}/models failed: {failed[1]}")
            if self._probe_ok_at is not None and self._wall() - self._probe_ok_at <= retry_after:
                return Check(True, f"probe GET {url}/models ok")
            ok, detail = await asyncio.to_thread(
                self._probe, backend.base_url or "", backend.api_key, self.settings.probe_timeout_s)
            if ok:
                self._probe_ok_at, self._probe_failed = self._wall(), None
                return Check(True, f"idle; probe GET {url}/models ok")
            self._probe_failed = (self._wall(), detail)
            return Check(False, f"probe GET {url}/models failed: {detail}")


def _problems(parts: Mapping[str, str | None], *, ok: str) -> Check:
    """Not ready while any part has a problem; each part named with its problem (or `ok`)."""
    return Check(all(problem is None for problem in parts.values()),
                 {name: problem or ok for name, problem in parts.items()})


class DeliveryWatch(Observer):
    """Which sinks failed to take the last alert event they were given (a pipeline observer).

    The pipeline reports each sink that failed an event, then the event as published: a sink that
    failed is a problem until it takes a later event. So a full disk under the JSONL sink or the
    MQTT outbox shows on `/readyz` and the hub's problem entity with the first alert it costs.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._failed_now: dict[str, set[str]] = {}  # message id -> sinks that failed it
        self.failing: dict[str, tuple[float, str]] = {}  # sink -> (since, last error)

    def sink_failed(self, sink: str, event: AlertEvent, error: Exception) -> None:
        self._failed_now.setdefault(event.message_id, set()).add(sink)
        since = self.failing.get(sink, (self._clock(), ""))[0]
        self.failing[sink] = (since, f"{type(error).__name__}: {shorten(str(error), 300)}")

    def alert_published(self, event: AlertEvent) -> None:
        failed = self._failed_now.pop(event.message_id, set())
        for sink in [s for s in self.failing if s not in failed]:
            del self.failing[sink]

    def problem(self, sink: str) -> str | None:
        if sink not in self.failing:
            return None
        since, error = self.failing[sink]
        return f"failing to take alerts for {self._clock() - since:.0f} s: {error}"


def _zones(zones: Mapping[str, tuple[str, str]]) -> Check:
    """Not ready while any zone is blind; unknown and off are not failures (nothing to see, or by choice), nor
    is degraded (a fallback backend watches the zone; the body names it)."""
    detail = {zone: f"{state}: {reason}" for zone, (state, reason) in zones.items()}
    return Check(all(state != "blind" for state, _ in zones.values()), detail)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")


# --------------------------------------------------------------------------- the HTTP server

Liveness = Callable[[], tuple[bool, dict[str, Any]]]
ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


class HealthServer:
    """Serves `/healthz`, `/readyz` and `/metrics` until closed."""

    def __init__(self, settings: HealthSettings, *, liveness: Liveness, readiness: ReadinessCheck,
                 metrics: Callable[[], bytes] | None = None, metrics_content_type: str = "text/plain",
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.settings = settings
        self._liveness = liveness
        self._readiness = readiness
        self._metrics = metrics
        self._metrics_type = metrics_content_type
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # The connections still sending their head, oldest first (a dict keeps insertion order).
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self.max_connections = max_connections
        self.rejected_connections = 0
        self.evicted_connections = 0
        self._rejects_logged_at: float | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.settings.host, self.settings.port,
                                                  limit=_MAX_REQUEST_BYTES)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("health server listening", host=self.settings.host, port=self.port,
                 url=f"http://{self.settings.host}:{self.port}/readyz")

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    def _make_room(self, writer: asyncio.StreamWriter) -> bool:
        """At the limit: close the oldest connection still sending its head, else the new one (counted)."""
        oldest = next(iter(self._waiting), None)
        if oldest is not None:
            del self._waiting[oldest]
            self._writers.discard(oldest)
            oldest.transport.abort()
            self.evicted_connections += 1
        else:
            self.rejected_connections += 1
            writer.transport.abort()
        self._log_limit()
        return oldest is not None

    def _log_limit(self) -> None:
        """Say so at most once a minute, with the counts."""
        now = time.monotonic()
        if self._rejects_logged_at is None or now - self._rejects_logged_at >= _REJECT_LOG_INTERVAL_S:
            self._rejects_logged_at = now
            log.warning("health server at its connection limit; the oldest idle connections closed",
                        max_connections=self.max_connections, evicted_total=self.evicted_connections,
                        rejected_total=self.rejected_connections)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.max_connections and not self._make_room(writer):
            return
        self._writers.add(writer)
        self._waiting[writer] = None
        try:
            async with asyncio.timeout(_HEADER_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            self._waiting.pop(writer, None)
            method, _, rest = head.decode("latin-1").partition(" ")
            path = urlsplit(rest.partition(" ")[0]).path
            status, content_type, body = await self._route(method, path)
            async with asyncio.timeout(_RESPONSE_TIMEOUT_S):
                await self._respond(writer, status, content_type, b"" if method == "HEAD" else body, len(body))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass  # a client that hung up, was too slow or sent junk gets nothing
        finally:
            self._waiting.pop(writer, None)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "application/json", _json({"error": "only GET and HEAD"})
        if path == "/healthz":
            ok, body = self._liveness()
            return (200 if ok else 503), "application/json", _json(body)
        if path == "/readyz":
            ok, body = await self._readiness()
            return (200 if ok else 503), "application/json", _json(body)
        if path == "/metrics" and self._metrics is not None:
            return 200, self._metrics_type, self._metrics()
        return 404, "application/json", _json({"error": "not found", "paths": ["/healthz", "/readyz", "/metrics"]})

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, content_type: str, body: bytes,
                       length: int) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
        writer.write(head.encode("latin-1") + body)
        await writer.drain()


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, indent=1).encode("utf-8") + b"\n"
