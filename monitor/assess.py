"""Assessment: a window in, a validated verdict out (or a typed error)."""

from __future__ import annotations

from typing import Protocol

from monitor.assessment import Assessment, Verdict
from monitor.backends import ModelBackend, ModelRequest
from monitor.prompt import ASSESSMENT_SCHEMA, build_messages
from monitor.windows import Window


class Assessor(Protocol):
    """A strategy that turns one window into one verdict."""

    name: str

    async def assess(self, window: Window) -> Verdict: ...


class SingleCall:
    """One model call per window (the `single` strategy)."""

    name = "single"

    def __init__(self, backend: ModelBackend, *, temperature: float | None = None) -> None:
        self.backend = backend
        self.temperature = temperature

    def request(self, window: Window, *, seed: int | None = None, temperature: float | None = None) -> ModelRequest:
        return ModelRequest(
            messages=build_messages(window),
            temperature=self.temperature if temperature is None else temperature,
            seed=seed,
            json_schema=ASSESSMENT_SCHEMA,
            meta={"window": window.id, "zone": window.zone},
        )

    async def assess(self, window: Window) -> Verdict:
        return await self.assess_request(self.request(window))

    async def assess_request(self, request: ModelRequest) -> Verdict:
        reply = await self.backend.complete(request)
        # Raises MalformedReplyError (with the raw text) rather than guessing "safe".
        assessment = Assessment.parse_reply(reply.text)
        return Verdict(assessment=assessment, model=reply.model, usage=reply.usage, raw=reply.text, strategy=self.name)
