"""Assessment: a window in, a validated verdict out (or a typed error)."""

from __future__ import annotations

from typing import Protocol

from monitor.assess.keyframes import choose_images_off_loop
from monitor.assess.prompt import ASSESSMENT_SCHEMA, build_messages, reject_echo
from monitor.assess.settings import KeyframeSettings
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import ModelBackend, ModelRequest
from monitor.windows import Window
from sensors.types import Frame


class Assessor(Protocol):
    """A strategy that turns one window into one verdict."""

    name: str

    async def assess(self, window: Window) -> Verdict: ...


class SingleCall:
    """One model call per window (the `single` strategy)."""

    name = "single"

    def __init__(self, backend: ModelBackend, *, temperature: float | None = None,
                 keyframes: KeyframeSettings | None = None) -> None:
        self.backend = backend
        self.temperature = temperature
        self.keyframes = keyframes

    async def images(self, window: Window) -> list[tuple[Frame, str]] | None:
        """The window's keyframes as data URLs, chosen and encoded off the loop; None for text-only models.

        Frames of a text-only model go in as their text facts (pose pre-filter), never as images.
        """
        if self.keyframes is None or not window.frames or not self.backend.accepts_images:
            return None
        return await choose_images_off_loop(window, self.keyframes)

    def request(self, window: Window, *, seed: int | None = None, temperature: float | None = None,
                images: list[tuple[Frame, str]] | None = None) -> ModelRequest:
        example = not self.backend.enforces_schema
        return ModelRequest(
            messages=build_messages(window, images=images, example=example),
            temperature=self.temperature if temperature is None else temperature,
            seed=seed,
            json_schema=ASSESSMENT_SCHEMA,
            meta={"window": window.id, "zone": window.zone},
            # For a text-only fallback: the window as a text-only model is given it (pose facts included).
            text_messages=build_messages(window, example=example) if images else None,
        )

    async def assess(self, window: Window) -> Verdict:
        return await self.assess_request(self.request(window, images=await self.images(window)))

    async def assess_request(self, request: ModelRequest) -> Verdict:
        reply = await self.backend.complete(request)
        # Raises MalformedReplyError (with the raw text) rather than guessing "safe"; a reply that
        # copies the prompt's template is malformed too, not a warning.
        assessment = reject_echo(Assessment.parse_reply(reply.text, cut_off=reply.cut_off), reply.text)
        return Verdict(assessment=assessment, model=reply.model, usage=reply.usage, raw=reply.text, strategy=self.name,
                       backend=reply.backend, degraded=reply.degraded)
