"""The OpenAI-compatible backend against a scripted server on 127.0.0.1 (real socket, real client)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from monitor.backends import ModelReply, ModelRequest
from monitor.backends.openai_compat import MAX_BODY_BYTES, OpenAICompatBackend
from monitor.backends.settings import ModelSettings
from monitor.core.errors import (
    BackendTimeoutError,
    BadResponseError,
    FatalBackendError,
    ImageInputUnsupportedError,
    TransientBackendError,
)
from tests.support.openai_server import DANGER, Action, ScriptedOpenAIServer, reply

REQUEST = ModelRequest(messages=({"role": "user", "content": "hello"},))
IMAGE_REQUEST = ModelRequest(messages=({"role": "user", "content": [
    {"type": "text", "text": "look"},
    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
]},))


async def complete_once(server: ScriptedOpenAIServer, request: ModelRequest, **overrides: object) -> ModelReply:
    """Start a backend for `server`, send one request, close the backend."""
    backend = backend_for(server, **overrides)
    await backend.start()
    try:
        return await backend.complete(request)
    finally:
        await backend.close()


def backend_for(server: ScriptedOpenAIServer, **overrides: object) -> OpenAICompatBackend:
    fields: dict[str, object] = {
        "backend": "openai", "base_url": server.base_url, "model": "scripted-vlm",
        "attempt_timeout_s": 1.0, "total_timeout_s": 5.0, "max_retries": 2, "backoff_base_s": 0.01,
    }
    fields.update(overrides)
    return OpenAICompatBackend(ModelSettings.model_validate(fields))


async def test_reply_text_usage_and_json_mode_on_the_wire(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.push(reply(DANGER, prompt_tokens=120, completion_tokens=30))
    result = await complete_once(openai_server, REQUEST)
    assert json.loads(result.text) == DANGER
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.attempts) == (120, 30, 1)
    assert result.usage.latency_s > 0
    sent = openai_server.requests[0]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["model"] == "scripted-vlm"


async def test_http_500_and_429_are_retried_then_succeed(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.push(Action(status=500), Action(status=429), reply(DANGER))
    result = await complete_once(openai_server, REQUEST)
    assert result.usage.attempts == 3
    assert openai_server.calls == 3


async def test_retries_are_bounded(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.default = Action(status=503)
    with pytest.raises(TransientBackendError, match="HTTP 503"):
        await complete_once(openai_server, REQUEST, max_retries=2)
    assert openai_server.calls == 3


async def test_client_errors_are_fatal_and_not_retried(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.default = Action(status=400)
    with pytest.raises(FatalBackendError, match="HTTP 400"):
        await complete_once(openai_server, REQUEST)
    assert openai_server.calls == 1


async def test_attempt_timeout_is_retried_and_total_timeout_bounds_it(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.push(reply(DANGER, delay_s=1.5), reply(DANGER))
    backend = backend_for(openai_server, attempt_timeout_s=0.5)
    await backend.start()
    try:
        result = await backend.complete(REQUEST)
        assert result.usage.attempts == 2
        openai_server.default = reply(DANGER, delay_s=1.0)
        slow = backend_for(openai_server, attempt_timeout_s=0.3, total_timeout_s=0.8, max_retries=10)
        await slow.start()
        with pytest.raises(BackendTimeoutError, match=r"total_timeout_s=0\.8"):
            await slow.complete(REQUEST)
        await slow.close()
    finally:
        await backend.close()


async def test_connection_refused_is_transient() -> None:
    server = ScriptedOpenAIServer().start()
    server.stop()  # the port is now closed
    with pytest.raises(TransientBackendError, match="connection failed"):
        await complete_once(server, REQUEST, max_retries=1)


LLAMA_CPP_NO_MMPROJ = json.dumps({"error": {"code": 500, "type": "server_error", "message": (
    "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj")}}).encode()


@pytest.mark.parametrize("status", [500, 400])
async def test_a_server_that_says_it_takes_no_images_is_a_configuration_problem(
        openai_server: ScriptedOpenAIServer, status: int) -> None:
    """llama.cpp without a vision projector answers 500 and says so; an API that refuses image parts, 400."""
    openai_server.default = Action(status=status, body=LLAMA_CPP_NO_MMPROJ)
    with pytest.raises(ImageInputUnsupportedError, match="does not accept images") as caught:
        await complete_once(openai_server, IMAGE_REQUEST, accepts_images=True)
    assert "image input is not supported" in str(caught.value)  # the server's own words
    assert openai_server.calls == 1  # a configuration problem is not retried


async def test_a_plain_http_500_on_a_request_with_images_is_a_server_failure_not_an_image_problem(
        openai_server: ScriptedOpenAIServer) -> None:
    """Seen: a server failing every request with 500 was reported as "set model.accepts_images = false"."""
    openai_server.default = Action(status=500, body=b'{"error": {"message": "CUDA error: out of memory"}}')
    with pytest.raises(TransientBackendError) as caught:
        await complete_once(openai_server, IMAGE_REQUEST, accepts_images=True, max_retries=1)
    assert not isinstance(caught.value, ImageInputUnsupportedError)
    assert "accepts_images" not in str(caught.value)
    assert "HTTP 500" in str(caught.value) and "CUDA error: out of memory" in str(caught.value)
    assert openai_server.calls == 2  # a server failure is retried


async def test_text_only_backend_refuses_images_without_calling(openai_server: ScriptedOpenAIServer) -> None:
    with pytest.raises(ImageInputUnsupportedError, match="text-only"):
        await complete_once(openai_server, IMAGE_REQUEST, accepts_images=False)
    assert openai_server.calls == 0


async def test_concurrency_limit_is_respected(openai_server: ScriptedOpenAIServer) -> None:
    import asyncio
    import threading

    active = {"now": 0, "max": 0}
    lock = threading.Lock()

    def responder(body: dict[str, object]) -> Action:
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        import time

        time.sleep(0.1)
        with lock:
            active["now"] -= 1
        return reply(DANGER)

    openai_server.responder = responder
    backend = backend_for(openai_server, concurrency=2)
    await backend.start()
    try:
        await asyncio.gather(*(backend.complete(REQUEST) for _ in range(6)))
    finally:
        await backend.close()
    assert active["max"] == 2


async def test_a_body_without_a_length_is_read_no_further_than_the_cap() -> None:
    """A server that streams an endless chunked body (no Content-Length) is cut off after MAX_BODY_BYTES:
    a counted bad_response holding the body's start, never the whole body in memory."""
    sent = 0
    handlers: list[asyncio.Task[Any]] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b'{"choices": [{"message": {"content": "' + b"x" * 65536
        try:
            while sent < 4 * MAX_BODY_BYTES:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                await writer.drain()
                chunk = b"x" * 65536
        except (ConnectionError, OSError):
            pass  # the client hung up: what it should do
        finally:
            writer.close()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = OpenAICompatBackend(ModelSettings.model_validate({
        "backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "attempt_timeout_s": 10.0,
        "total_timeout_s": 20.0, "max_retries": 0}))
    await backend.start()
    try:
        with pytest.raises(BadResponseError, match="too big") as raised:
            await backend.complete(REQUEST)
    finally:
        await backend.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        server.close()
        await server.wait_closed()
    assert raised.value.kind == "bad_response" and raised.value.raw.startswith('{"choices"')
    assert len(raised.value.raw) == 2000
    assert sent < 4 * MAX_BODY_BYTES  # the client hung up (socket buffers hold a few MB more than it read)
