"""Response cache: a caching ModelBackend wrapper keyed by the full request and the trial index.

The key is the sha256 of the request as the model receives it (messages, temperature,
max_tokens, seed, schema, tag), the identity of the model behind it (backend, model,
endpoint, default temperature and max_tokens) and the trial index. `meta` is left
out: it holds window ids, which differ from run to run and never reach the model.
The trial index also sets the request seed, so the 16 trials of a sample are
independent samples of the model, and an identical re-run is answered from the cache.

Answers are kept in a JSONL file (one object per line, appended as they arrive), so
an interrupted run keeps every answer it paid for; a torn last line is ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from monitor.backends import Message, ModelBackend, ModelReply, ModelRequest, Usage
from monitor.core.errors import BackendError
from monitor.core.jsonio import MAX_LINE_BYTES, loads_bounded
from replay.appendfile import AppendFile, private_folder

log = structlog.get_logger(__name__)
_SEED_MIX = 1_000_003


def request_key(request: ModelRequest, *, identity: Mapping[str, Any], trial: int) -> str:
    """The cache key: sha256 over the model identity, the trial index and the full request."""
    payload = {
        "identity": dict(identity),
        "trial": trial,
        "messages": list(request.messages),
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "seed": request.seed,
        "json_schema": request.json_schema,
        "tag": request.tag,
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def trial_seed(trial: int, request_seed: int | None) -> int:
    """The seed a trial sends: the trial index, mixed with a strategy's own seed when it sets one."""
    if request_seed is None:
        return trial
    return (trial * _SEED_MIX + request_seed) % (2**31)


def redact_images(messages: tuple[Message, ...] | list[Message]) -> list[Message]:
    """The messages with every image data URL replaced by its sha256, for logs that must stay small."""
    redacted: list[Message] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            redacted.append(dict(message))
            continue
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = str(part.get("image_url", {}).get("url", ""))
                digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
                parts.append({"type": "image_url", "image_url": {"url": f"sha256:{digest}", "bytes": len(url)}})
            else:
                parts.append(part)
        redacted.append({**message, "content": parts})
    return redacted


class ResponseCache:
    """Answers by key, in memory and in an append-only JSONL file (None: memory only).

    Concurrent requests for the same key share one model call.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.hits = 0
        self.misses = 0
        self.torn_lines = 0
        self._entries: dict[str, ModelReply] = {}
        self._inflight: dict[str, asyncio.Future[ModelReply]] = {}
        self._file: AppendFile | None = None
        if path is not None:
            private_folder(path.parent)
            self._load(path)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def _load(self, path: Path) -> None:
        if not path.is_file():
            return
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    entry = loads_bounded(line, what="replay cache line", max_bytes=MAX_LINE_BYTES)
                    self._entries[str(entry["key"])] = _reply_of(entry)
                except (ValueError, KeyError, TypeError):
                    # A run killed mid-write leaves a torn last line: that answer is simply asked again.
                    self.torn_lines += 1
                    log.warning("cache line unreadable, ignored", path=str(path), line=number)

    async def fetch(
        self,
        key: str,
        call: Callable[[], Awaitable[ModelReply]],
        *,
        accept: Callable[[ModelReply], None] | None = None,
    ) -> tuple[ModelReply, bool]:
        """The cached reply for `key`, or `call()`'s (stored if `accept` does not raise); second item: cached?"""
        while True:
            if key in self._entries:
                self.hits += 1
                return self._entries[key], True
            pending = self._inflight.get(key)
            if pending is None:
                break
            await asyncio.wait([pending])
            if not pending.cancelled():
                self.hits += 1
                return pending.result(), True
            # The call we waited for failed: make our own.
        future: asyncio.Future[ModelReply] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            reply = await call()
            if accept is not None:
                accept(reply)
            self.misses += 1
            self._store(key, reply)
            future.set_result(reply)
            return reply, False
        finally:
            if not future.done():
                future.cancel()
            del self._inflight[key]

    def _store(self, key: str, reply: ModelReply) -> None:
        self._entries[key] = reply
        if self.path is None:
            return
        entry: dict[str, Any] = {"key": key, "at": round(time.time(), 3), "model": reply.model, "text": reply.text,
                                 "usage": reply.usage.to_json()}
        if reply.cut_off:  # a resumed run names a cut-off reply as the first did
            entry["cut_off"] = True
        if self._file is None:
            self._file = AppendFile(self.path)
        self._file.append(json.dumps(entry, ensure_ascii=False))


def _reply_of(entry: dict[str, Any]) -> ModelReply:
    usage = entry.get("usage") or {}
    return ModelReply(
        text=str(entry["text"]),
        model=str(entry.get("model", "")),
        cut_off=entry.get("cut_off") is True,
        usage=Usage(
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=float(usage.get("latency_s", 0.0)),
            attempts=int(usage.get("attempts", 1)),
        ),
    )


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One model call of a trial, as the run log keeps it."""

    key: str
    tag: str
    seed: int | None
    cached: bool
    prompt_tokens: int
    completion_tokens: int
    model_latency_s: float
    wall_s: float
    attempts: int
    request: list[Message]
    reply: str
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "tag": self.tag, "seed": self.seed, "cached": self.cached,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "model_latency_s": round(self.model_latency_s, 4), "wall_s": round(self.wall_s, 4),
            "attempts": self.attempts, "request": self.request, "reply": self.reply, "error": self.error,
        }


class CachingBackend:
    """A ModelBackend for one trial: seeds each request with the trial index and answers from the cache.

    `start`/`close` do nothing: the wrapped backend is shared by every trial and its
    life belongs to whoever created it. `calls` records every call for the run log.
    """

    name = "cached"

    def __init__(self, inner: ModelBackend, cache: ResponseCache, *, trial: int,
                 identity: Mapping[str, Any]) -> None:
        self.inner = inner
        self.cache = cache
        self.trial = trial
        self.identity = dict(identity)
        self.model = inner.model
        self.accepts_images = inner.accepts_images
        self.enforces_schema = inner.enforces_schema
        self.calls: list[CallRecord] = []

    @property
    def base_url(self) -> str | None:
        return self.inner.base_url

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def complete(self, request: ModelRequest) -> ModelReply:
        seeded = replace(request, seed=trial_seed(self.trial, request.seed))
        key = request_key(seeded, identity=self.identity, trial=self.trial)
        started = time.perf_counter()
        try:
            reply, cached = await self.cache.fetch(key, lambda: self.inner.complete(seeded))
        except BackendError as exc:
            self.calls.append(self._record(key, seeded, None, False, started, error=f"{exc.kind}: {exc}"))
            raise
        self.calls.append(self._record(key, seeded, reply, cached, started))
        return reply

    def _record(self, key: str, request: ModelRequest, reply: ModelReply | None, cached: bool,
                started: float, *, error: str | None = None) -> CallRecord:
        usage = reply.usage if reply is not None else Usage(calls=0)
        return CallRecord(
            key=key, tag=request.tag, seed=request.seed, cached=cached,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            model_latency_s=usage.latency_s, wall_s=time.perf_counter() - started, attempts=usage.attempts,
            request=redact_images(request.messages), reply=reply.text if reply is not None else "", error=error,
        )
