"""Ordered fallbacks: a window goes to the first backend whose circuit breaker allows it.

`[model]` names the first backend; `model.fallbacks` the others, in order. Each has a
`CircuitBreaker`: it opens after `breaker.failures` failed calls in a row, or when
`breaker.failure_rate` of the last `breaker.rate_window` calls failed (timeouts, HTTP 5xx,
connection errors, 429 beyond its `Retry-After`, replies that are not a JSON object, any
typed backend error). An open breaker is skipped until its pause ends; then one real
assessment probes it (half-open): a success closes it, a failure reopens it for twice as
long (up to `breaker.max_open_s`).

A backend with a later backend still allowed is given `attempt_timeout_s` in all, not its
total budget: a failover never makes a window wait longer than that plus the fallback's
own latency. The slow call is cancelled then, so a late answer of the first backend never
becomes a second verdict for the same window. The last backend allowed gets its whole
budget. A reply from any backend but the first is marked `degraded`, with what that means
("assessed by ollama-qwen (fallback): frames not seen" when the window's images could not
be sent); a text-only fallback is given the window as text with its frames' pose facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import structlog

from monitor.backends import Message, ModelBackend, ModelReply, ModelRequest
from monitor.backends.settings import BreakerSettings, ModelSettings
from monitor.core.errors import BackendError, BackendTimeoutError, MalformedReplyError, TransientBackendError
from monitor.core.text import shorten

log = structlog.get_logger(__name__)
BreakerState = Literal["closed", "open", "half_open"]
BREAKER_STATES: tuple[BreakerState, ...] = ("closed", "open", "half_open")
_ERROR_CHARS = 200
# What an image's label says in a request sent without its images (the prompt's label said "image follows").
FRAME_NOT_SEEN = "not seen: this model takes no images"


class CircuitBreaker:
    """One backend's breaker: closed (called), open (skipped for a pause), half-open (one probe in flight)."""

    def __init__(self, settings: BreakerSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.state: BreakerState = "closed"
        self.consecutive = 0
        self.reason: str | None = None  # why it opened, while not closed
        self._recent: deque[bool] = deque(maxlen=settings.rate_window)  # True: the call failed
        self._pause = settings.open_s
        self._opened_at = 0.0
        self._probing = False
        self._entered = clock()
        self._spent: dict[BreakerState, float] = dict.fromkeys(BREAKER_STATES, 0.0)

    def would_allow(self) -> bool:
        """Whether a call now would be let through (without taking the half-open probe)."""
        if self.state == "open":
            return self._clock() >= self._opened_at + self._pause
        return self.state == "closed" or not self._probing

    def acquire(self) -> bool:
        """Let one call through, or not; an open breaker whose pause ended lets this one probe it."""
        if self.state == "open" and self._clock() >= self._opened_at + self._pause:
            self._enter("half_open")
        if self.state == "closed":
            return True
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._recent.append(False)
        self.consecutive = 0
        self._probing = False
        if self.state != "closed":
            self._pause = self.settings.open_s
            self.reason = None
            # The failures that opened it are paid for: the rate starts afresh from this answer.
            self._recent.clear()
            self._recent.append(False)
            self._enter("closed")

    def failure(self, why: str) -> None:
        self._recent.append(True)
        self.consecutive += 1
        if self.state == "half_open":
            self._probing = False
            self._open(f"the probe failed: {why}", min(self._pause * 2, self.settings.max_open_s))
        elif self.state == "closed" and (trip := self._tripped()) is not None:
            self._open(f"{trip}; last: {why}", self.settings.open_s)

    def release(self) -> None:
        """A call let through ended without an answer either way (cancelled): a probe may be tried again."""
        self._probing = False

    def seconds_in(self) -> dict[BreakerState, float]:
        """Time spent in each state since the breaker was made, the current stay included."""
        spent = dict(self._spent)
        spent[self.state] += self._clock() - self._entered
        return spent

    def retry_in_s(self) -> float:
        return max(0.0, self._opened_at + self._pause - self._clock()) if self.state == "open" else 0.0

    def _tripped(self) -> str | None:
        if self.consecutive >= self.settings.failures:
            return f"{self.consecutive} failures in a row"
        window = self.settings.rate_window
        if len(self._recent) == window and sum(self._recent) / window >= self.settings.failure_rate:
            return f"{sum(self._recent)} of the last {window} calls failed"
        return None

    def _open(self, reason: str, pause: float) -> None:
        self.reason, self._pause, self._opened_at = reason, pause, self._clock()
        self._enter("open")

    def _enter(self, state: BreakerState) -> None:
        now = self._clock()
        self._spent[self.state] += now - self._entered
        self.state, self._entered = state, now


@dataclass
class LinkBook:
    """What one backend of the chain did: calls, errors by kind, latency, for /metrics."""

    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_sum_s: float = 0.0
    answered: int = 0
    last_error: str | None = None


@dataclass
class Link:
    """One backend of the chain, its breaker and its books."""

    name: str
    backend: ModelBackend
    settings: ModelSettings
    breaker: CircuitBreaker
    book: LinkBook = field(default_factory=LinkBook)

    @property
    def state(self) -> str:
        """Its breaker state and why, for people."""
        if self.breaker.state == "closed":
            return "closed"
        return f"{self.breaker.state.replace('_', '-')} ({self.breaker.reason})"


class FailoverBackend:
    """A ModelBackend over an ordered chain of backends, each behind a circuit breaker."""

    name = "failover"

    def __init__(self, links: Sequence[Link]) -> None:
        if not links:
            raise ValueError("a failover needs at least one backend")
        self.links = list(links)
        first = self.links[0].backend
        self.model = first.model
        # Images go in when the first backend takes them; a text-only fallback gets the text version.
        self.accepts_images = first.accepts_images
        # The prompt shows the example answer unless every backend enforces the schema.
        self.enforces_schema = all(link.backend.enforces_schema for link in self.links)
        self.active = self.links[0].name  # the backend that answered last

    @classmethod
    def from_settings(cls, settings: ModelSettings, create: Callable[[ModelSettings], ModelBackend],
                      *, clock: Callable[[], float] = time.monotonic) -> FailoverBackend:
        """The chain `[model]` configures: its first backend, then `model.fallbacks` in order."""
        return cls([Link(name=part.display_name, backend=create(part), settings=part,
                         breaker=CircuitBreaker(settings.breaker, clock=clock)) for part in settings.chain])

    @property
    def base_url(self) -> str | None:
        return self.links[0].backend.base_url

    @property
    def primary(self) -> str:
        return self.links[0].name

    async def start(self) -> None:
        for link in self.links:
            await link.backend.start()

    async def close(self) -> None:
        for link in self.links:
            with contextlib.suppress(Exception):  # one backend failing to close must not keep the others open
                await link.backend.close()

    async def complete(self, request: ModelRequest) -> ModelReply:
        tried: list[str] = []
        last_error: BackendError | None = None
        for index, link in enumerate(self.links):
            if not link.breaker.acquire():
                tried.append(f"{link.name}: circuit {link.state}, retried in {link.breaker.retry_in_s():.0f} s")
                continue
            later = any(other.breaker.would_allow() for other in self.links[index + 1:])
            try:
                reply = await self._call(link, request, limit=link.settings.attempt_timeout_s if later else None)
            except BackendError as exc:
                tried.append(f"{link.name}: {exc.kind}: {shorten(exc, _ERROR_CHARS)}")
                last_error = exc
                if index + 1 < len(self.links):
                    log.warning("model backend failed; trying the next one", backend=link.name, kind=exc.kind,
                                error=shorten(exc, _ERROR_CHARS))
                continue
            self.active = link.name
            return replace(reply, backend=link.name, degraded=self._degraded(index, link, request))
        raise _all_failed(tried, last_error)

    async def _call(self, link: Link, request: ModelRequest, *, limit: float | None) -> ModelReply:
        """One backend's answer, counted in its books and its breaker; a typed error when it has none."""
        link.book.calls += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                reply = await link.backend.complete(self._for(link, request))
            _check_json(reply, request, link.name)
        except TimeoutError:
            waited = f"attempt_timeout_s={limit:g} s; the next backend is tried" if limit is not None else "its budget"
            error: BackendError = BackendTimeoutError(f"backend '{link.name}': no answer within {waited}")
            self._failed(link, error)
            raise error from None
        except BackendError as exc:
            self._failed(link, exc)
            raise
        except BaseException:  # cancelled (shutdown) or a bug: neither a success nor a failure of the backend
            link.breaker.release()
            raise
        finally:
            link.book.latency_sum_s += time.perf_counter() - started
        link.book.answered += 1
        was = link.breaker.state
        link.breaker.success()
        if was != "closed":
            log.info("model backend circuit closed", backend=link.name)
        return reply

    def _failed(self, link: Link, error: BackendError) -> None:
        link.book.errors[error.kind] = link.book.errors.get(error.kind, 0) + 1
        link.book.last_error = f"{error.kind}: {shorten(error, _ERROR_CHARS)}"
        was = link.breaker.state
        link.breaker.failure(link.book.last_error)
        if link.breaker.state == "open" and was != "open":
            log.warning("model backend circuit opened", backend=link.name, reason=link.breaker.reason,
                        retry_in_s=round(link.breaker.retry_in_s(), 1))

    def _for(self, link: Link, request: ModelRequest) -> ModelRequest:
        if not request.has_images or link.backend.accepts_images:
            return request
        return replace(request, messages=request.text_messages or text_only(request.messages), text_messages=None)

    def _degraded(self, index: int, link: Link, request: ModelRequest) -> str | None:
        if index == 0:
            return None
        lost = [*(["frames not seen"] if request.has_images and not link.backend.accepts_images else []),
                # Only with model.allow_embedded_fallback: said wherever the zone is shown.
                *(["the embedded plumbing model, not a judge of danger"] if link.settings.backend == "embedded"
                  else [])]
        return f"assessed by {link.name} (fallback)" + (f": {'; '.join(lost)}" if lost else "")

    def status(self) -> dict[str, object]:
        """The chain for people: the active backend and each backend's breaker (the hub's diagnostics, /readyz)."""
        return {"active": self.active, "primary": self.primary,
                "backends": {link.name: link.state for link in self.links}}


def text_only(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """The messages with their image parts left out (for a request that came without a text version); each
    image's label says the frame was not seen."""
    out: list[Message] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            texts = [_unseen(str(part.get("text", ""))) for part in content if part.get("type") == "text"]
            message = {**message, "content": "\n".join(texts)}
        out.append(message)
    return tuple(out)


def _unseen(text: str) -> str:
    """An image's label (`{"time": ..., "source": ..., "frame": "image follows"}`) saying it was not seen."""
    if '"image follows"' not in text:
        return text
    try:
        label = json.loads(text)
    except ValueError:
        return text
    if not isinstance(label, dict) or label.get("frame") != "image follows":
        return text
    return json.dumps({**label, "frame": FRAME_NOT_SEEN}, ensure_ascii=False)


def _check_json(reply: ModelReply, request: ModelRequest, name: str) -> None:
    """A reply to a JSON request that is not one JSON object is a failure of the backend, not an answer."""
    if request.json_schema is None:
        return
    text = reply.text.strip()
    if text.startswith("```"):  # some servers fence JSON even in JSON mode; the validator strips it too
        text = text.strip("`").removeprefix("json").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise MalformedReplyError(f"backend '{name}': the reply is not a JSON object", reply.text)


def _all_failed(tried: list[str], last: BackendError | None) -> BackendError:
    message = "no model backend answered: " + "; ".join(tried)
    if last is None:  # every breaker open: nothing was even tried
        return TransientBackendError(message)
    error = type(last)(message, last.raw) if isinstance(last, MalformedReplyError) else type(last)(message)
    return error



def chain_of(backend: object) -> FailoverBackend | None:
    """The failover chain inside `backend` (under its wrappers: metering, call capture), or None."""
    for _depth in range(8):  # wrappers are few; a cycle of `inner`s must not loop forever
        if isinstance(backend, FailoverBackend):
            return backend
        backend = getattr(backend, "inner", None)
        if backend is None:
            return None
    return None


def model_status(backend: object, settings: ModelSettings) -> dict[str, object]:
    """The model chain for people (the stats topic, /readyz): the active backend and each breaker.

    Without fallbacks there is no breaker: the one backend is always the one in use.
    """
    chain = chain_of(backend)
    if chain is not None:
        return chain.status()
    name = settings.display_name
    return {"active": name, "primary": name, "backends": {name: "no fallbacks configured"}}
