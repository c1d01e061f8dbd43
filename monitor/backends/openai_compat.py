"""Any OpenAI-compatible chat endpoint: OpenAI, vLLM, Ollama, llama.cpp, LM Studio.

The only module that imports `openai`. Failures are classified once, here:
429, 5xx, connection errors and attempt timeouts are transient and retried with
exponential backoff and jitter inside the total budget; everything else is fatal.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import structlog
from openai import AsyncOpenAI

from monitor.backends import ModelReply, ModelRequest, Usage, register_backend
from monitor.backends.openai_transport import http_client
from monitor.backends.settings import ModelSettings
from monitor.core.aio import Backoff
from monitor.core.errors import (
    BackendError,
    BackendTimeoutError,
    FatalBackendError,
    ImageInputUnsupportedError,
    TransientBackendError,
)
from monitor.core.text import shorten

log = structlog.get_logger(__name__)
_MAX_BACKOFF_S = 30.0


class OpenAICompatBackend:
    """Chat completions in JSON mode, with timeouts, retries and a concurrency limit."""

    name = "openai"

    def __init__(self, settings: ModelSettings, *, base_url: str | None = None) -> None:
        self.settings = settings
        self.model = settings.model
        self.accepts_images = settings.images_supported
        self.base_url = base_url or settings.base_url
        self._client: AsyncOpenAI | None = None
        self._url = ""
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        # Retries stay inside the total budget; a wide jitter spreads clients hitting one rate limit.
        self._backoff = Backoff(settings.backoff_base_s, _MAX_BACKOFF_S, jitter=0.5)
        self.last_success_at: float | None = None

    async def start(self) -> None:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else "not-needed"
        # Retries are ours (classified, bounded by the total budget), not the SDK's.
        self._client = AsyncOpenAI(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=self.settings.attempt_timeout_s,
            http_client=http_client(),
        )
        # Absolute: the client then parses the URL once instead of merging it with the base per call.
        self._url = str(self._client.base_url).rstrip("/") + "/chat/completions"

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def complete(self, request: ModelRequest) -> ModelReply:
        if request.has_images and not self.accepts_images:
            raise ImageInputUnsupportedError(
                f"model '{self.model}' at {self.base_url} is configured as text-only; "
                "set model.accepts_images = true if it takes images"
            )
        async with self._semaphore:
            try:
                async with asyncio.timeout(self.settings.total_timeout_s):
                    return await self._with_retries(request)
            except TimeoutError:
                raise BackendTimeoutError(
                    f"model '{self.model}' at {self.base_url}: no valid answer within "
                    f"total_timeout_s={self.settings.total_timeout_s}"
                ) from None

    async def _with_retries(self, request: ModelRequest) -> ModelReply:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(request, attempt)
            except TransientBackendError as exc:
                if attempt > self.settings.max_retries:
                    raise
                delay = self._backoff.delay(attempt)
                log.warning("model attempt failed, retrying", model=self.model, attempt=attempt,
                            error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def _attempt(self, request: ModelRequest, attempt: int) -> ModelReply:
        if self._client is None:
            raise FatalBackendError(f"backend for '{self.model}' used before start()")
        started = time.perf_counter()
        try:
            # The body is wire JSON already: posting it as it is skips the SDK's walk over its typed
            # parameters and its response model, about a third of the client's CPU per call.
            response = await self._client.post(self._url, cast_to=object, body=self._arguments(request),
                                               options={"timeout": self.settings.attempt_timeout_s})
        except openai.APIError as exc:
            raise self._classify(exc, request) from exc
        latency = time.perf_counter() - started
        self.last_success_at = time.time()
        return self._reply(response, latency, attempt)

    def _arguments(self, request: ModelRequest) -> dict[str, Any]:
        response_format: dict[str, Any] = {"type": "json_object"}
        if request.json_schema is not None and self.settings.json_schema_hint:
            # llama.cpp's server reads this non-standard key to constrain its grammar.
            response_format["schema"] = request.json_schema
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": list(request.messages),
            "response_format": response_format,
            "temperature": self.settings.temperature if request.temperature is None else request.temperature,
            "max_tokens": request.max_tokens or self.settings.max_tokens,
        }
        if request.seed is not None:
            arguments["seed"] = request.seed
        return arguments

    def _reply(self, response: object, latency: float, attempt: int) -> ModelReply:
        # The decoded JSON body (a str when the server did not send JSON): what is missing is empty,
        # and an empty reply is the validator's malformed reply, never a silent "safe".
        choices = _field(response, "choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        usage = _field(response, "usage")
        return ModelReply(
            text=str(_field(first, "message", "content") or ""),
            model=str(_field(response, "model") or self.model),
            usage=Usage(
                prompt_tokens=int(_field(usage, "prompt_tokens") or 0),
                completion_tokens=int(_field(usage, "completion_tokens") or 0),
                latency_s=latency,
                attempts=attempt,
            ),
        )

    def _classify(self, exc: openai.APIError, request: ModelRequest) -> BackendError:
        where = f"model '{self.model}' at {self.base_url}"
        if isinstance(exc, openai.APITimeoutError):
            return TransientBackendError(f"{where}: attempt timed out after {self.settings.attempt_timeout_s} s")
        if isinstance(exc, openai.APIConnectionError):
            return TransientBackendError(f"{where}: connection failed ({exc.__class__.__name__})")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status >= 500 and request.has_images:
                # llama.cpp answers 500 to an image part on a text-only model.
                return ImageInputUnsupportedError(
                    f"{where}: HTTP {status} on a request with images; the endpoint probably does not "
                    "accept images: use a vision model or set model.accepts_images = false"
                )
            if status == 429 or status >= 500 or status == 408:
                return TransientBackendError(f"{where}: HTTP {status}")
            return FatalBackendError(f"{where}: HTTP {status}: {shorten(exc.message, 300)}")
        return FatalBackendError(f"{where}: {exc.__class__.__name__}: {shorten(exc, 300)}")


def _field(data: Any, *path: str) -> Any:
    """`data[path[0]][path[1]]...` of a decoded JSON body, or None where a step is missing or not an object."""
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


@register_backend("openai")
def _create(settings: ModelSettings) -> OpenAICompatBackend:
    return OpenAICompatBackend(settings)
