"""Configuration of assessment: strategies (single, vote, verify, temporal) and keyframes."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from monitor.core.config import Section

StrategyName = Literal["single", "vote", "verify", "temporal"]
NoteLabel = Literal["false_alarm", "missed", "helpful", "unclear"]
DEFAULT_NOTE_LABELS: tuple[NoteLabel, ...] = ("false_alarm", "missed")


class VoteSettings(Section):
    """k samples at a temperature; warn when at least m agree on danger."""

    k: int = Field(default=3, ge=1, le=16)
    m: int = Field(default=2, ge=1, le=16)
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _m_within_k(self) -> VoteSettings:
        if self.m > self.k:
            raise ValueError(f"m={self.m} must not exceed k={self.k}")
        return self


class VerifySettings(Section):
    """Propose candidate risks (high recall), then verify each one against the observations."""

    max_candidates: int = Field(default=3, ge=1, le=10)
    propose_temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    verify_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    min_verify_confidence: float = Field(default=0.0, ge=0.0, le=1.0)


class TemporalSettings(Section):
    """Evidence per hazard accumulates over successive windows and decays between them.

    After each window: score = decay * score + confidence (if the inner strategy warned about
    that hazard). A hazard warns once its score reaches `threshold`.
    """

    inner: Literal["single", "vote", "verify"] = "single"
    decay: float = Field(default=0.6, ge=0.0, le=1.0)
    threshold: float = Field(default=1.0, gt=0.0, le=16.0)


class FeedbackContextSettings(Section):
    """The home's own recent feedback, given to the model as quoted data (off by default).

    A few short notes (alerts this home marked as false alarms, hazards it reported
    as missed, in the same zone) go inside the observations block, never into the
    instructions. Whether they help a given model is measured with `monitor replay
    history`; nothing here claims they do (docs/history.md).
    """

    enabled: bool = False
    max_notes: int = Field(default=4, ge=1, le=20, description="notes per window at most, newest first")
    max_chars: int = Field(default=800, ge=100, le=4000,
                           description="characters of all notes together at most (JSON as sent)")
    days: float = Field(default=30.0, gt=0.0, le=3650.0, description="only feedback about the last N days")
    labels: list[NoteLabel] = Field(
        default_factory=lambda: list(DEFAULT_NOTE_LABELS), min_length=1,
        description="which feedback becomes a note")


class AssessmentSettings(Section):
    """How a zone's windows are assessed, and at what cost."""

    strategy: StrategyName = "single"
    vote: VoteSettings = Field(default_factory=VoteSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    feedback_context: FeedbackContextSettings = Field(default_factory=FeedbackContextSettings)

    @property
    def label(self) -> str:
        """A short name: single, vote(2/3), verify, temporal(verify); "+feedback" when notes are given."""
        suffix = "+feedback" if self.feedback_context.enabled else ""
        if self.strategy == "vote":
            return f"vote({self.vote.m}/{self.vote.k}){suffix}"
        if self.strategy == "temporal":
            inner = self.model_copy(update={"strategy": self.temporal.inner,
                                            "feedback_context": FeedbackContextSettings()})
            return f"temporal({inner.label}){suffix}"
        return self.strategy + suffix

    def recorded(self) -> dict[str, Any]:
        """The settings as run logs and the history keep them; without `feedback_context` while it is off,
        so records written before it existed still compare equal."""
        exclude = None if self.feedback_context.enabled else {"feedback_context"}
        return self.model_dump(mode="json", exclude=exclude)


class KeyframeSettings(Section):
    """Which frames of a window go to the model, how large, and how many tokens they may cost.

    Token estimate per image, `estimate = tiles` (OpenAI's published rule for detail=high):
    scale to fit 2048x2048, then the shortest side down to 768, then
    `85 + 170 * tiles` with 512 px tiles. `fixed`: `tokens_per_image` each
    (e.g. 258 for Gemini; check your local model's vision encoder).
    """

    max_frames: int = Field(default=4, ge=1, le=32, description="K: frames per request at most")
    longest_side: int = Field(default=768, ge=64, le=4096)
    jpeg_quality: int = Field(default=80, ge=10, le=100)
    min_change: float = Field(
        default=0.005, ge=0.0, le=1.0,
        description="a frame this close to every chosen frame of its camera adds nothing and is left out",
    )
    estimate: Literal["tiles", "fixed"] = Field(default="tiles", description="how image tokens are estimated")
    tokens_per_image: int = Field(default=258, ge=1, le=100_000, description="estimate = fixed: tokens per image")
    max_image_tokens: int = Field(default=3000, ge=1, le=1_000_000, description="image tokens per request at most")

    @model_validator(mode="after")
    def _one_image_fits(self) -> KeyframeSettings:
        worst = self.estimate_tokens(self.longest_side, self.longest_side)
        if worst > self.max_image_tokens:
            raise ValueError(
                f"max_image_tokens ({self.max_image_tokens}) is below the estimate for one "
                f"{self.longest_side}x{self.longest_side} image ({worst}); raise it or lower longest_side"
            )
        return self

    def estimate_tokens(self, width: int, height: int) -> int:
        """Estimated prompt tokens of one image of this size."""
        if self.estimate == "fixed":
            return self.tokens_per_image
        return openai_image_tokens(width, height)


def openai_image_tokens(width: int, height: int) -> int:
    """OpenAI's detail=high estimate: 85 + 170 per 512 px tile after its two downscales."""
    scale = min(1.0, 2048 / max(width, height))
    scale *= min(1.0, 768 / (min(width, height) * scale))
    return 85 + 170 * math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
