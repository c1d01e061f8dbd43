"""Configuration of assessment strategies (single, vote, verify, temporal)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from monitor.config_base import Identifier, Section

StrategyName = Literal["single", "vote", "verify", "temporal"]


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


class AssessmentSettings(Section):
    """How a zone's windows are assessed, and at what cost."""

    strategy: StrategyName = "single"
    vote: VoteSettings = Field(default_factory=VoteSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)


class ZoneSettings(Section):
    """A zone groups sources (by their `zone` key) and may override the assessment strategy."""

    id: Identifier
    name: str | None = None
    assessment: AssessmentSettings | None = None
