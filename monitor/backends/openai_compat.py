"""Any OpenAI-compatible chat endpoint: OpenAI, vLLM, Ollama, llama.cpp, LM Studio.

The only module that imports `openai`. Failures are classified once, here:
429, 5xx, connection errors and attempt timeouts are transient and retried with
exponential backoff and jitter inside the total budget; everything else is fatal.
A request with images is refused for lack of image support only when the server
says so (its error text names images, vision or a projector), whatever the
status: a server failing with a plain 500 is a server failure, retried.
A `Retry-After` on 429 or 503 (seconds or an HTTP date) is honoured by every call
of this backend until it has passed: a call waits for it when its total budget
allows, else fails at once instead of hammering the server. An HTTP 200 whose
body is not a chat completion (not JSON, no choices) is a `BadResponseError`
that keeps the body, cut to `MAX_RAW_BODY_CHARS`; so is a body over
`MAX_BODY_BYTES`, read no further than that (a misbehaving server's 30 MB answer
never reaches memory whole, let alone the history).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from typing import Any

import openai
import structlog
from openai import AsyncOpenAI

try:  # the HTTP library under openai: httpx2 in recent releases, httpx before
    import httpx2 as httpx  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover (depends on the installed openai)
    import httpx  # type: ignore[import-not-found, no-redef, unused-ignore]

from monitor.backends import ModelReply, ModelRequest, Usage, register_backend
from monitor.backends.openai_transport import http_client
from monitor.backends.settings import ModelSettings
from monitor.core.aio import Backoff
from monitor.core.errors import (
    BackendError,
    BackendTimeoutError,
    BadResponseError,
    FatalBackendError,
    ImageInputUnsupportedError,
    TransientBackendError,
)
from monitor.core.jsonio import loads_bounded
from monitor.core.text import redact_credentials, shorten

log = structlog.get_logger(__name__)
_MAX_BACKOFF_S = 30.0
# A server may ask for a pause of any length; longer than this is treated as this long.
MAX_RETRY_AFTER_S = 300.0
MAX_RAW_BODY_CHARS = 2000
# A chat completion of model.max_tokens (16384 at most) is well under this, even with every character
# escaped; a bigger body is a misbehaving server's, refused as a bad response without reading the rest.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Asks the openai client to hand back the response unread (what its `with_streaming_response` sends).
_UNREAD = {"X-Stainless-Raw-Response": "stream"}


class OpenAICompatBackend:
    """Chat completions in JSON mode, with timeouts, retries and a concurrency limit."""

    name = "openai"

    def __init__(self, settings: ModelSettings, *, base_url: str | None = None) -> None:
        self.settings = settings
        self.model = settings.model
        self.accepts_images = settings.images_supported
        self.enforces_schema = settings.json_schema_hint
        self.base_url = base_url or settings.base_url
        self._client: AsyncOpenAI | None = None
        self._url = ""
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        # Retries stay inside the total budget; a wide jitter spreads clients hitting one rate limit.
        self._backoff = Backoff(settings.backoff_base_s, _MAX_BACKOFF_S, jitter=0.5)
        self.last_success_at: float | None = None
        # Until this monotonic time the server asked not to be called (its last Retry-After).
        self._not_before = 0.0

    @property
    def where(self) -> str:
        """The model and endpoint, for messages (credentials in the URL hidden)."""
        return f"model '{self.model}' at {redact_credentials(self.base_url or '')}"

    async def start(self) -> None:
        key = self.settings.api_key_value or "not-needed"
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
                f"{self.where} is configured as text-only; set model.accepts_images = true if it takes images"
            )
        async with self._semaphore:
            deadline = time.monotonic() + self.settings.total_timeout_s
            try:
                async with asyncio.timeout(self.settings.total_timeout_s):
                    return await self._with_retries(request, deadline)
            except TimeoutError:
                raise BackendTimeoutError(
                    f"{self.where}: no valid answer within total_timeout_s={self.settings.total_timeout_s}"
                ) from None

    async def _with_retries(self, request: ModelRequest, deadline: float) -> ModelReply:
        attempt = 0
        while True:
            attempt += 1
            await self._respect_retry_after(deadline)
            try:
                return await self._attempt(request, attempt)
            except TransientBackendError as exc:
                if attempt > self.settings.max_retries:
                    raise
                # A server that said when to come back is waited for in _respect_retry_after instead.
                delay = 0.0 if exc.retry_after_s else self._backoff.delay(attempt)
                log.warning("model attempt failed, retrying", model=self.model, attempt=attempt,
                            error=str(exc), retry_in_s=round(max(delay, self._not_before - time.monotonic()), 2))
                await asyncio.sleep(delay)

    async def _respect_retry_after(self, deadline: float) -> None:
        """Wait out the server's last Retry-After, or fail at once when it ends after this call's budget."""
        now = time.monotonic()
        wait = self._not_before - now
        if wait <= 0:
            return
        if now + wait >= deadline:
            raise TransientBackendError(
                f"{self.where}: the server asked not to be called for another {wait:.1f} s (Retry-After), "
                f"beyond this call's total_timeout_s={self.settings.total_timeout_s:g}",
                retry_after_s=wait,
            )
        await asyncio.sleep(wait)

    def _note_retry_after(self, seconds: float) -> None:
        self._not_before = max(self._not_before, time.monotonic() + min(seconds, MAX_RETRY_AFTER_S))

    async def _attempt(self, request: ModelRequest, attempt: int) -> ModelReply:
        if self._client is None:
            raise FatalBackendError(f"backend for '{self.model}' used before start()")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.attempt_timeout_s):  # a body that trickles in, too
                body = await self._read_body(request)
        except openai.APIError as exc:
            raise self._classify(exc, request) from exc
        except TimeoutError:
            raise TransientBackendError(
                f"{self.where}: attempt timed out after {self.settings.attempt_timeout_s} s") from None
        except httpx.HTTPError as exc:  # the connection broke while the body was read
            raise TransientBackendError(f"{self.where}: connection failed ({type(exc).__name__})") from None
        latency = time.perf_counter() - started
        try:
            reply = self._reply(loads_bounded(body, what="chat completion", max_bytes=MAX_BODY_BYTES), latency, attempt)
        except Exception as exc:  # not JSON, or JSON that is no chat completion: never let it escape unnamed
            raise BadResponseError(
                f"{self.where}: a successful HTTP reply with a body that is not a chat completion "
                f"({type(exc).__name__}: {shorten(exc, 200)})",
                shorten(body.decode("utf-8", errors="replace"), MAX_RAW_BODY_CHARS),
            ) from exc
        self.last_success_at = time.time()
        return reply

    async def _read_body(self, request: ModelRequest) -> bytes:
        """The response body, read in chunks up to MAX_BODY_BYTES; BadResponseError beyond that."""
        assert self._client is not None
        # The body is wire JSON already: posting it as it is skips the SDK's walk over its typed
        # parameters and its response model, about a third of the client's CPU per call.
        response = await self._client.post(self._url, cast_to=httpx.Response, body=self._arguments(request),
                                           options={"timeout": self.settings.attempt_timeout_s, "headers": _UNREAD})
        try:
            declared = response.headers.get("content-length", "")
            announced = int(declared) if declared.isdigit() else 0
            # Announced too big: read only the start, for the record of what the server sent.
            stop_at = MAX_RAW_BODY_CHARS if announced > MAX_BODY_BYTES else MAX_BODY_BYTES + 1
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= stop_at:
                    start = b"".join(chunks[:1] if len(chunks[0]) >= MAX_RAW_BODY_CHARS else chunks)
                    raise self._too_big(f"{announced} bytes announced" if announced > MAX_BODY_BYTES
                                        else f"more than {MAX_BODY_BYTES} bytes", start[:MAX_RAW_BODY_CHARS])
            return b"".join(chunks)
        finally:
            await response.aclose()

    def _too_big(self, size: str, start: bytes) -> BadResponseError:
        return BadResponseError(
            f"{self.where}: a successful HTTP reply with a body too big for a chat completion ({size}, "
            f"at most {MAX_BODY_BYTES} are read)", start.decode("utf-8", errors="replace"))

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

    @staticmethod
    def _text(response: Any) -> str:
        """The reply text of a decoded body; raises ValueError for one that is not a chat completion."""
        choices = _field(response, "choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError("no 'choices' in the response")
        content = _field(choices[0], "message", "content")
        if content is not None and not isinstance(content, str):
            raise ValueError(f"the message content is {type(content).__name__}, not text")
        return content or ""

    def _reply(self, response: Any, latency: float, attempt: int) -> ModelReply:
        text = self._text(response)
        usage = _field(response, "usage")
        return ModelReply(
            text=text,
            model=str(_field(response, "model") or self.model),
            backend=self.settings.display_name,
            cut_off=_cut_off(response),
            usage=Usage(
                prompt_tokens=int(_field(usage, "prompt_tokens") or 0),
                completion_tokens=int(_field(usage, "completion_tokens") or 0),
                latency_s=latency,
                attempts=attempt,
            ),
        )

    def _classify(self, exc: openai.APIError, request: ModelRequest) -> BackendError:
        where = self.where
        if isinstance(exc, openai.APITimeoutError):
            return TransientBackendError(f"{where}: attempt timed out after {self.settings.attempt_timeout_s} s")
        if isinstance(exc, openai.APIConnectionError):
            return TransientBackendError(f"{where}: connection failed ({exc.__class__.__name__})")
        if isinstance(exc, openai.APIStatusError):
            return self._classify_status(exc, request)
        return FatalBackendError(f"{where}: {exc.__class__.__name__}: {redact_credentials(shorten(exc, 300))}")

    def _classify_status(self, exc: openai.APIStatusError, request: ModelRequest) -> BackendError:
        """By what the server said, not by the status alone: a 500 is an image problem only when it says so."""
        where, status, said = self.where, exc.status_code, server_message(exc)
        if request.has_images and says_no_images(said):
            # llama.cpp without a vision projector answers 500 "image input is not supported"; APIs 400.
            return ImageInputUnsupportedError(
                f"{where}: HTTP {status}: {said}; the endpoint does not accept images: "
                "use a vision model or set model.accepts_images = false")
        if status in (429, 503) and (retry_after := retry_after_s(exc.response.headers)) is not None:
            self._note_retry_after(retry_after)
            return TransientBackendError(f"{where}: HTTP {status}, Retry-After {retry_after:g} s",
                                         retry_after_s=retry_after)
        detail = f": {said}" if said else ""
        if status == 429 or status >= 500 or status == 408:
            return TransientBackendError(f"{where}: HTTP {status}{detail}")
        return FatalBackendError(f"{where}: HTTP {status}{detail}")


# Words servers use when a model takes no images (llama.cpp: "image input is not supported ... mmproj";
# OpenAI: "image_url is only supported by certain models"; vLLM: "... is not a multimodal model").
_NO_IMAGE_WORDS = ("image", "multimodal", "multi-modal", "vision", "mmproj")


def server_message(exc: openai.APIStatusError) -> str:
    """The error text in the server's body (`{"error": {"message": ...}}` or plain text), short and redacted."""
    body: Any = exc.body
    if isinstance(body, dict):
        body = body.get("message", body.get("error", body))
    if body is None or body == "":
        body = exc.response.text if exc.response is not None else ""
    return redact_credentials(shorten(str(body), 300))


def says_no_images(message: str) -> bool:
    """Whether a server's error text is about image input."""
    text = message.lower()
    return any(word in text for word in _NO_IMAGE_WORDS)


def retry_after_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a server asked to wait: `Retry-After` in seconds or as an HTTP date (or `retry-after-ms`)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _cut_off(response: Any) -> bool:
    """Whether the first choice stopped at the token limit (OpenAI and llama.cpp say finish_reason "length")."""
    choices = _field(response, "choices")
    return isinstance(choices, list) and bool(choices) and _field(choices[0], "finish_reason") == "length"


def _field(data: Any, *path: str) -> Any:
    """`data[path[0]][path[1]]...` of a decoded JSON body, or None where a step is missing or not an object."""
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


@register_backend("openai")
def _create(settings: ModelSettings) -> OpenAICompatBackend:
    return OpenAICompatBackend(settings)
