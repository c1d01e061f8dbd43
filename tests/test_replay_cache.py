"""The response cache: keys, seeds, persistence, torn lines, one call for concurrent twins."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from monitor.backends import ModelReply, ModelRequest, Usage
from monitor.core.errors import TransientBackendError
from replay.cache import CachingBackend, ResponseCache, redact_images, request_key, trial_seed

IDENTITY = {"backend": "openai", "model": "m", "base_url": "http://x/v1", "temperature": 0.2, "max_tokens": 400}


def _request(text: str = "hello", **kwargs: object) -> ModelRequest:
    return ModelRequest(messages=({"role": "user", "content": text},), **kwargs)  # type: ignore[arg-type]


class CountingBackend:
    """An in-process backend that counts calls and can be slowed down or made to fail."""

    name = "counting"
    model = "m"
    accepts_images = True
    enforces_schema = False

    def __init__(self, *, delay_s: float = 0.0, fail: bool = False) -> None:
        self.requests: list[ModelRequest] = []
        self.delay_s = delay_s
        self.fail = fail

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise TransientBackendError("scripted failure")
        text = json.dumps({"seed": request.seed, "n": len(self.requests)})
        return ModelReply(text=text, model="m", usage=Usage(prompt_tokens=10, completion_tokens=5, latency_s=0.5))


def test_key_covers_request_identity_and_trial_but_not_meta() -> None:
    base = request_key(_request(meta={"window": "scenario-1"}), identity=IDENTITY, trial=0)
    assert base == request_key(_request(meta={"window": "scenario-999"}), identity=IDENTITY, trial=0)
    assert base != request_key(_request(), identity=IDENTITY, trial=1)
    assert base != request_key(_request("other"), identity=IDENTITY, trial=0)
    assert base != request_key(_request(temperature=0.9), identity=IDENTITY, trial=0)
    assert base != request_key(_request(), identity={**IDENTITY, "model": "other"}, trial=0)


def test_trial_index_sets_the_seed_and_mixes_a_strategy_seed() -> None:
    assert [trial_seed(t, None) for t in range(3)] == [0, 1, 2]
    vote_seeds = {trial_seed(t, i) for t in range(16) for i in range(5)}
    assert len(vote_seeds) == 80


def test_images_are_redacted_to_digests() -> None:
    url = "data:image/jpeg;base64," + "A" * 1000
    messages = ({"role": "user", "content": [{"type": "text", "text": "t"},
                                              {"type": "image_url", "image_url": {"url": url}}]},)
    redacted = redact_images(messages)
    part = redacted[0]["content"][1]["image_url"]
    assert part["url"].startswith("sha256:") and part["bytes"] == len(url)
    assert messages[0]["content"][1]["image_url"]["url"] == url  # the original is untouched


async def test_trials_are_seeded_cached_and_persisted(tmp_path: Path) -> None:
    inner = CountingBackend()
    cache = ResponseCache(tmp_path / "cache.jsonl")
    first = CachingBackend(inner, cache, trial=3, identity=IDENTITY)
    reply = await first.complete(_request())
    assert inner.requests[0].seed == 3
    assert json.loads(reply.text)["seed"] == 3
    again = await CachingBackend(inner, cache, trial=3, identity=IDENTITY).complete(_request())
    assert again.text == reply.text and len(inner.requests) == 1
    await CachingBackend(inner, cache, trial=4, identity=IDENTITY).complete(_request())
    assert len(inner.requests) == 2
    call = first.calls[0]
    assert (call.cached, call.seed, call.prompt_tokens, call.model_latency_s) == (False, 3, 10, 0.5)
    # A new process reads the file: same answer, no call, usage preserved.
    reloaded = ResponseCache(tmp_path / "cache.jsonl")
    backend = CachingBackend(CountingBackend(), reloaded, trial=3, identity=IDENTITY)
    replayed = await backend.complete(_request())
    assert replayed.text == reply.text and replayed.usage.prompt_tokens == 10
    assert backend.calls[0].cached is True


async def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    inner = CountingBackend()
    await CachingBackend(inner, ResponseCache(path), trial=0, identity=IDENTITY).complete(_request())
    with path.open("a") as handle:
        handle.write('{"key": "abc", "te')
    cache = ResponseCache(path)
    assert (len(cache), cache.torn_lines) == (1, 1)


async def test_concurrent_identical_requests_share_one_call() -> None:
    inner = CountingBackend(delay_s=0.05)
    cache = ResponseCache(None)
    backends = [CachingBackend(inner, cache, trial=0, identity=IDENTITY) for _ in range(5)]
    replies = await asyncio.gather(*(b.complete(_request()) for b in backends))
    assert len(inner.requests) == 1
    assert len({r.text for r in replies}) == 1
    assert sorted(b.calls[0].cached for b in backends) == [False, True, True, True, True]


async def test_failures_are_recorded_and_not_cached() -> None:
    inner = CountingBackend(fail=True)
    cache = ResponseCache(None)
    backend = CachingBackend(inner, cache, trial=0, identity=IDENTITY)
    with pytest.raises(TransientBackendError):
        await backend.complete(_request())
    assert backend.calls[0].error is not None and backend.calls[0].error.startswith("transient:")
    assert len(cache) == 0
    inner.fail = False
    await backend.complete(_request())
    assert len(inner.requests) == 2


async def test_a_reply_cut_off_at_the_token_limit_reads_back_as_cut_off(tmp_path: Path) -> None:
    from monitor.backends import ModelReply, Usage

    path = tmp_path / "cache.jsonl"

    async def cut() -> ModelReply:
        return ModelReply(text='{"danger": true, "hazard": "hot oi', model="m", usage=Usage(), cut_off=True)

    async def whole() -> ModelReply:
        return ModelReply(text="{}", model="m", usage=Usage())

    cache = ResponseCache(path)
    await cache.fetch("cut", cut)
    await cache.fetch("whole", whole)
    reloaded = ResponseCache(path)
    assert (await reloaded.fetch("cut", cut))[0].cut_off is True
    assert (await reloaded.fetch("whole", whole))[0].cut_off is False
