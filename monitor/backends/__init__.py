"""The model boundary: one narrow interface and a registry.

Only `openai_compat` imports `openai`. Backends return raw text plus usage, or
raise a typed `BackendError`; validating the text is the caller's job, so the
same boundary serves every schema (assessment, propose, verify, judge).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.backends.settings import ModelSettings

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    """Accounting of one model call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    calls: int = 1

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            latency_s=self.latency_s + other.latency_s,
            attempts=self.attempts + other.attempts,
            calls=self.calls + other.calls,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": round(self.latency_s, 4),
            "attempts": self.attempts,
            "calls": self.calls,
        }


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """One chat request. `seed` and `trial` keep repeated samples independent."""

    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    tag: str = "assess"
    meta: dict[str, Any] = field(default_factory=dict)
    # The same request for a model that takes no images (a text-only fallback): the window's text and the
    # frames' pose facts. None: the messages with their images left out (`text_only`).
    text_messages: tuple[Message, ...] | None = None

    @property
    def has_images(self) -> bool:
        return any(
            isinstance(m.get("content"), list)
            and any(part.get("type") == "image_url" for part in m["content"])
            for m in self.messages
        )


@dataclass(frozen=True, slots=True)
class ModelReply:
    """The raw text a model answered, the model and the configured backend that answered, and the cost.

    `degraded` says what was lost when a fallback answered instead of the first backend (docs/failover.md).
    """

    text: str
    model: str
    usage: Usage
    backend: str = ""
    degraded: str | None = None
    # The server stopped at the token limit (finish_reason "length"): the text is cut off, so a
    # reply that fails to parse says why and what to raise (model.max_tokens), not just "not JSON".
    cut_off: bool = False


class ModelBackend(Protocol):
    """What the pipeline needs from a model. `start`/`close` bracket its life."""

    name: str
    model: str
    accepts_images: bool
    # The server constrains its answer to `ModelRequest.json_schema` (a grammar), so the prompt
    # need not show an example answer.
    enforces_schema: bool

    @property
    def base_url(self) -> str | None:
        """The endpoint it calls (for readiness probes and messages); None when it has none."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def complete(self, request: ModelRequest) -> ModelReply: ...


class BackendWrapper:
    """A ModelBackend around another: what it is and its life are the inner one's; subclasses add to `complete`."""

    def __init__(self, inner: ModelBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.accepts_images = inner.accepts_images
        self.enforces_schema = inner.enforces_schema

    @property
    def base_url(self) -> str | None:
        return self.inner.base_url

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def complete(self, request: ModelRequest) -> ModelReply:
        return await self.inner.complete(request)


BackendFactory = Callable[[ModelSettings], ModelBackend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Register a backend factory under the name used in `model.backend`."""

    def decorate(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return decorate


def create_backend(settings: ModelSettings) -> ModelBackend:
    """Build the backend the configuration selects."""
    # Imported for their registration side effect; kept here so importing the
    # boundary does not import openai for a process that never calls a model.
    from monitor.backends import embedded, openai_compat, scripted, stochastic  # noqa: F401

    if settings.fallbacks:
        from monitor.backends.failover import FailoverBackend

        return FailoverBackend.from_settings(settings, create_backend)
    try:
        factory = _REGISTRY[settings.backend]
    except KeyError:
        raise ValueError(f"unknown model backend '{settings.backend}'; known: {sorted(_REGISTRY)}") from None
    return factory(settings)
