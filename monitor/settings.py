"""The whole configuration tree, assembled from each feature's own section, and its loading.

Precedence, highest first: `MONITOR_*` environment variables (nested with ``__``,
e.g. ``MONITOR_MODEL__BASE_URL``), secret files in ``$CREDENTIALS_DIRECTORY``
(systemd ``LoadCredential=``) or ``MONITOR_SECRETS_DIR`` (file names nest with
``__`` too: ``model__api_key``), then the TOML file (with keyword overrides from
tests on top of it). Unknown keys are errors everywhere.

This module holds only the tree and the checks that span sections; every
section lives beside the feature it configures.
"""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
import typing
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import NestedSecretsSettingsSource

from monitor.alerts import AlertSettings
from monitor.assess.settings import AssessmentSettings, KeyframeSettings
from monitor.backends.settings import ModelSettings
from monitor.core.errors import ConfigError
from monitor.core.files import secrets_dir
from monitor.daemon.settings import HealthSettings, ServiceSettings
from monitor.escalation.settings import EscalationSettings
from monitor.evidence import EvidenceSettings
from monitor.history.settings import HistorySettings
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.settings import SinkSettings
from monitor.windows import WindowSettings
from monitor.zones import ZoneSettings
from sensors.audio_config import MicrophoneSettings, alsa_device_problem
from sensors.camera_config import CameraSettings
from sensors.logs.settings import SourceSettings


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
    microphones: list[MicrophoneSettings] = Field(default_factory=list)
    keyframes: KeyframeSettings = Field(default_factory=KeyframeSettings)
    windows: WindowSettings = Field(default_factory=WindowSettings)
    assessment: AssessmentSettings = Field(default_factory=AssessmentSettings)
    zones: list[ZoneSettings] = Field(default_factory=list)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    sinks: SinkSettings = Field(default_factory=SinkSettings)
    mqtt: MqttSettings | None = Field(default=None, description="MQTT broker; alerts are published when set")
    health: HealthSettings = Field(default_factory=HealthSettings)
    history: HistorySettings = Field(default_factory=HistorySettings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)

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
                                   *(c.zone_id for c in self.cameras), *(m.zone_id for m in self.microphones)]))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load_settings` passes the TOML file's content as keyword arguments: the lowest layer.
        secrets = NestedSecretsSettingsSource(file_secret_settings, secrets_dir_missing="ok")
        return env_settings, secrets, init_settings


def load_settings(path: Path | None, *, secrets: bool = True, **overrides: Any) -> Settings:
    """Load and validate the configuration, or raise ConfigError with one line per problem.

    `secrets`: also read the API keys named by `api_key_env` and `api_key_file` (not for a check of the
    file alone, on a machine that may not have them).
    """
    label = str(path) if path is not None else "<defaults>"
    layer = _merge(_read_toml(path) if path is not None else {}, overrides)
    try:
        settings = Settings(_secrets_dir=secrets_dir(), **layer)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError([f"{label}: {_key_path(e['loc'])}: {_reason(e)}" for e in exc.errors()]) from None
    problems = check_camera_ids(settings) + check_microphone_ids(settings) + check_camera_capability(settings)
    if secrets:
        problems += resolve_api_keys(settings.model, os.environ, secrets_dir())
    if problems:
        raise ConfigError([f"{label}: {problem}" for problem in problems])
    if path is not None:
        _resolve_inputs(settings, path.resolve().parent)
    return settings


def resolve_api_keys(model: ModelSettings, environ: Mapping[str, str], folder: Path | None) -> list[str]:
    """Read each backend's key from its variable or file (the first backend's and every fallback's); one line
    per key that cannot be read, naming the key's place, the variable or the file, never a key."""
    problems = []
    places = [("model", model), *((f"model.fallbacks[{i}]", f) for i, f in enumerate(model.fallbacks))]
    for place, backend in places:
        try:
            backend.resolve_api_key(environ, folder)
        except ValueError as exc:
            problems.append(f"{place}.{exc}")
    return problems


# MONITOR_* variables that are not configuration sections but are read elsewhere.
_OTHER_VARIABLES = frozenset({"secrets_dir", "judge_api_key", "ha_python"})


def config_warnings(settings: Settings, environ: Mapping[str, str] | None = None, *, machine: bool = True) -> list[str]:
    """Things worth a person's attention in a valid configuration: one line each, naming the key.

    `machine`: also the input paths and devices on this machine (`check-config --config-only` leaves them out).
    """
    warnings: list[str] = []
    if not settings.sources and not settings.cameras and not settings.microphones:
        warnings.append("sources: none configured ([[sources]], [[cameras]] or [[microphones]]): the monitor watches "
                        "nothing and will warn about nothing; add an activity log, stdin, MQTT, camera or microphone")
    if settings.windows.queue_size is not None:
        warnings.append("windows.queue_size: ignored (a zone's newest window replaces a waiting one); remove it")
    key_variables = {m.api_key_env for m in settings.model.chain if m.api_key_env is not None}
    warnings += unknown_environment(os.environ if environ is None else environ, named=key_variables)
    warnings += mqtt_source_warnings(settings)
    if machine:
        warnings += input_path_warnings(settings)
    warnings += microphone_warnings(settings)
    return warnings


def mqtt_source_warnings(settings: Settings) -> list[str]:
    """MQTT activity sources without a persistent session: what is published while the monitor is away is lost."""
    if settings.mqtt is None or settings.mqtt.client_id is not None:
        return []
    return [f"sources[{index}]: MQTT activity source '{source.id}': events published while the monitor is down (a "
            "restart, a crash) are lost, unseen: set mqtt.client_id for a persistent session, in which the broker "
            "keeps them (docs/mqtt.md)"
            for index, source in enumerate(settings.sources) if source.kind == "mqtt"]


def notify_problems(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """The push notification URLs a start would refuse (imports Apprise only with the sink on)."""
    if not settings.sinks.notify.enabled:
        return []
    from monitor.sinks.notify import url_problems

    return url_problems(settings.sinks.notify, environ, secrets_dir())


def microphone_warnings(settings: Settings) -> list[str]:
    """ALSA capture devices that cannot exist here now (the microphone retries until one does; say so early)."""
    return [f"microphones[{index}].device: microphone '{mic.id}': ALSA device '{mic.device}': {problem}; it stays "
            "offline and is retried until it appears"
            for index, mic in enumerate(settings.microphones)
            if mic.device is not None and (problem := alsa_device_problem(mic.device)) is not None]


def unknown_environment(environ: Mapping[str, str], *, named: Set[str] = frozenset()) -> list[str]:
    """`MONITOR_*` variables whose section does not exist (`MONITOR_MODLE__BASE_URL`): pydantic ignores them.

    A misspelled key inside a known section is already an error ("unknown key"); only the value's name is shown.
    """
    sections = set(Settings.model_fields)
    problems = []
    for name in sorted(environ):
        if not name.upper().startswith("MONITOR_") or name in named:  # `named`: the config reads it (api_key_env)
            continue
        section = name[len("MONITOR_"):].split("__", 1)[0].lower()
        if section not in sections and section not in _OTHER_VARIABLES:
            problems.append(f"environment: {name}: no section '{section}' (sections: {', '.join(sorted(sections))});"
                            " the variable is ignored: check its spelling")
    return problems


def input_path_warnings(settings: Settings) -> list[str]:
    """Input files, folders and camera devices that do not exist or cannot be read now (sources wait or retry;
    say so early)."""
    checks: list[tuple[str, Path, Literal["file", "folder", "device"]]] = []
    for index, source in enumerate(settings.sources):
        if source.path is not None and source.kind in ("file", "replay"):
            checks.append((f"sources[{index}].path", source.path, "file"))
    for index, camera in enumerate(settings.cameras):
        if camera.path is not None:
            checks.append((f"cameras[{index}].path", camera.path, "folder" if camera.kind == "folder" else "file"))
        if camera.device is not None:
            checks.append((f"cameras[{index}].device", Path(f"/dev/video{camera.device}"), "device"))
    tls = settings.mqtt.tls if settings.mqtt is not None else None
    for name in ("ca_file", "cert_file", "key_file"):
        if tls is not None and (path := getattr(tls, name)) is not None:
            checks.append((f"mqtt.tls.{name}", path, "file"))
    for index, mic in enumerate(settings.microphones):
        if mic.path is not None:
            checks.append((f"microphones[{index}].path", mic.path, "file"))
    for key, model in _models(settings):
        if model.backend == "scripted" and model.script is not None:
            checks.append((f"{key}.script", model.script, "file"))
    return [f"{key}: {path}: {problem}" for key, path, want in checks if (problem := _path_problem(path, want))]


def _path_problem(path: Path, want: Literal["file", "folder", "device"]) -> str | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "does not exist (the source waits or retries until it does)"
    except OSError as exc:  # a symlink loop, a name too long, a folder on the way without permission
        return f"cannot be reached: {exc.strerror or exc}"
    if want == "file" and stat.S_ISDIR(info.st_mode):
        return "is a folder, not a file"
    if want == "folder" and not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if want == "device" and not stat.S_ISCHR(info.st_mode):
        return "is not a video device"
    mode = {"file": os.R_OK, "folder": os.R_OK | os.X_OK, "device": os.R_OK | os.W_OK}[want]
    if not os.access(path, mode):
        return "not readable by this user" if want != "device" else "not readable and writable by this user " \
                                                                    "(the service needs group video)"
    return None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, tables merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = _merge(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


def check_camera_capability(settings: Settings) -> list[str]:
    """Problems with cameras the configured model cannot see: one line each, naming the key.

    A camera needs a backend that accepts images, unless its pose pre-filter
    turns frames into text facts; the pre-filter needs the mediapipe extra.
    """
    from sensors.pose import pose_unavailable_reason

    problems: list[str] = []
    model = settings.model
    for index, camera in enumerate(settings.cameras):
        key = f"cameras[{index}]"
        if camera.pose_prefilter:
            reason = pose_unavailable_reason()
            if reason is not None:
                problems.append(f"{key}.pose_prefilter: camera '{camera.id}': {reason}")
        elif not model.images_supported:
            problems.append(
                f"{key}: camera '{camera.id}' (zone '{camera.zone_id}') needs a model that accepts images, but "
                f"model '{model.model}' (backend '{model.backend}') is text-only: use a vision model and set "
                f"model.accepts_images = true, or set {key}.pose_prefilter = true to send text facts instead"
            )
    return problems


def check_camera_ids(settings: Settings) -> list[str]:
    """Camera ids must be unique among cameras and activity-log sources (observations carry the id)."""
    problems: list[str] = []
    seen = {source.id for source in settings.sources}
    for index, camera in enumerate(settings.cameras):
        if camera.id in seen:
            problems.append(f"cameras[{index}].id: duplicate source id '{camera.id}'")
        seen.add(camera.id)
    return problems


def _models(settings: Settings) -> list[tuple[str, ModelSettings]]:
    """`[model]` and each of its fallbacks, with the key that names it in messages."""
    fallbacks = [(f"model.fallbacks[{i}]", fallback) for i, fallback in enumerate(settings.model.fallbacks)]
    return [("model", settings.model), *fallbacks]


def check_microphone_ids(settings: Settings) -> list[str]:
    """Microphone ids must be unique among all sources too."""
    seen = {source.id for source in settings.sources} | {camera.id for camera in settings.cameras}
    problems: list[str] = []
    for index, mic in enumerate(settings.microphones):
        if mic.id in seen:
            problems.append(f"microphones[{index}].id: duplicate source id '{mic.id}'")
        seen.add(mic.id)
    return problems


def _resolve_inputs(settings: Settings, base: Path) -> None:
    """Relative input paths (logs, scripts, weights) are relative to the config file's folder.

    Outputs (state dir, JSONL sink, audit log, history) stay relative to the working directory.
    """
    for source in settings.sources:
        if source.path is not None and not source.path.is_absolute():
            source.path = base / source.path
    for camera in settings.cameras:
        if camera.path is not None and not camera.path.is_absolute():
            camera.path = base / camera.path
    for mic in settings.microphones:
        if mic.path is not None and not mic.path.is_absolute():
            mic.path = base / mic.path
    for _key, model in _models(settings):  # the fallbacks' files too (docs/failover.md)
        if model.script is not None and not model.script.is_absolute():
            model.script = base / model.script
        gguf = model.embedded.gguf
        if gguf is not None and not gguf.is_absolute():
            model.embedded.gguf = base / gguf
    if settings.mqtt is not None and settings.mqtt.tls is not None:
        tls = settings.mqtt.tls
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, name)
            if value is not None and not value.is_absolute():
                setattr(tls, name, base / value)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, not a TOML file"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: not readable (permission denied)"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: <toml>: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: <toml>: not UTF-8 text ({exc.reason})"]) from None


def _nearest_key(loc: tuple[int | str, ...]) -> str | None:
    """The valid key closest to a misspelled one (`model.temprature` -> `temperature`), if one is close."""
    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = _model_in(field.annotation)
        if model is None:
            return None
    fields = getattr(model, "model_fields", {})
    names = [*fields, *(f.alias for f in fields.values() if f.alias)]
    found = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.7)
    return found[0] if found else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `X`, `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if (found := _model_in(argument)) is not None:
            return found
    return None


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
        nearest = _nearest_key(error["loc"])
        return f"unknown key (did you mean '{nearest}'?)" if nearest else "unknown key"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")
