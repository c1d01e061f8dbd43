"""Configuration of the local sinks (`[sinks]`); MQTT has its own section (`[mqtt]`)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from monitor.core.config import Identifier, PositiveFloat, Section


class StdoutSinkSettings(Section):
    enabled: bool = True
    color: bool | None = None


class JsonlSinkSettings(Section):
    enabled: bool = False
    path: Path = Path("alerts.jsonl")


class SinkSettings(Section):
    stdout: StdoutSinkSettings = Field(default_factory=StdoutSinkSettings)
    jsonl: JsonlSinkSettings = Field(default_factory=JsonlSinkSettings)
    speaker: SpeakerSinkSettings = Field(default_factory=lambda: SpeakerSinkSettings())
    notify: NotifySinkSettings = Field(default_factory=lambda: NotifySinkSettings())


# --------------------------------------------------------------------------- the speaker (docs/escalation.md)

SPEECH_PLACEHOLDERS = ("text", "voice", "language", "rate", "wav")
DEFAULT_SPEECH_COMMAND = ["espeak-ng", "-v", "{voice}", "-s", "{rate}", "{text}"]


class SpeakerSinkSettings(Section):
    """`[sinks.speaker]`: say warnings aloud on this machine through a text-to-speech command."""

    enabled: bool = False
    optional: bool = Field(default=False, description="a missing engine or audio device is a counted failure, "
                                                      "not a start-up error")
    command: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SPEECH_COMMAND),
        description="argv template, never a shell string; placeholders {text} {voice} {language} {rate} {wav}; "
                    "without {text} the text goes to the command's standard input")
    language: str = Field(default="en", pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$",
                          description="language of the spoken framing words; {language}")
    voice: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,63}$",
                              description="{voice}, e.g. en-gb or en-us+f3 for espeak-ng (default: the language)")
    rate_wpm: int = Field(default=160, ge=80, le=450, description="{rate}: words per minute")
    wav_dir: Path | None = Field(default=None, description="with {wav} in the command: render each message to a "
                                                            "new WAV file here instead of a sound card")
    require_audio_device: bool = Field(default=True, description="check for a sound card or sound server at start "
                                                                 "(not when the command writes {wav})")
    queue_size: int = Field(default=8, ge=1, le=256)
    min_interval_s: float = Field(default=15.0, ge=0, description="per zone: repeats (updates) are said at most "
                                                                  "this often; new alerts and escalations always")
    timeout_s: PositiveFloat = 30.0
    close_timeout_s: float = Field(default=5.0, ge=0, description="at shutdown, time to finish what is queued")

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, command: list[str]) -> list[str]:
        if not command or not command[0].strip():
            raise ValueError("empty: give the program and its arguments, e.g. " + str(DEFAULT_SPEECH_COMMAND))
        for index, part in enumerate(command):
            try:
                names = [name for _, name, _, _ in string.Formatter().parse(part) if name is not None]
            except ValueError as exc:
                raise ValueError(f"[{index}] {part!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
            unknown = [n for n in names if n not in SPEECH_PLACEHOLDERS]
            if unknown:
                raise ValueError(f"[{index}] {part!r}: unknown placeholder {{{unknown[0]}}} "
                                 f"(known: {', '.join('{' + p + '}' for p in SPEECH_PLACEHOLDERS)})")
        return command

    @model_validator(mode="after")
    def _wav_needs_a_folder(self) -> SpeakerSinkSettings:
        if self.writes_files and self.wav_dir is None:
            raise ValueError("command uses {wav}: set sinks.speaker.wav_dir to the folder for the WAV files")
        return self

    @property
    def writes_files(self) -> bool:
        return any("{wav}" in part for part in self.command)


# --------------------------------------------------------------------------- push notifications (docs/notifications.md)


class NotifyTargetSettings(Section):
    """`[[sinks.notify.targets]]`: who is told what, through which Apprise URLs (secrets: never in the TOML)."""

    name: Identifier
    audience: Literal["household", "caregivers"] = Field(
        default="household", description="household: every new warning (level 0); caregivers: escalations from "
                                         "the caregivers' level on (docs/escalation.md)")
    urls_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
                                 description="environment variable holding the Apprise URLs, separated by "
                                             "spaces, commas or newlines")
    urls_file: Path | None = Field(default=None, description="secret file, one Apprise URL a line (# comments); "
                                                             "relative to $CREDENTIALS_DIRECTORY when set")
    urls: list[SecretStr] = Field(default_factory=list, description="inline URLs: only for tests, a config file "
                                                                    "is no place for secrets")
    zones: list[str] = Field(default_factory=list, description="only these zones (empty: every zone)")
    min_severity: Literal["info", "warning", "critical"] = "warning"

    @model_validator(mode="after")
    def _some_urls(self) -> NotifyTargetSettings:
        if self.urls_env is None and self.urls_file is None and not self.urls:
            raise ValueError(f"target '{self.name}': give urls_env (an environment variable) or urls_file (a "
                             "secret file) holding its Apprise URLs")
        return self


class NotifySinkSettings(Section):
    """`[sinks.notify]`: push notifications through Apprise, from a durable queue in the state dir."""

    enabled: bool = False
    targets: list[NotifyTargetSettings] = Field(default_factory=list)
    max_attempts: int = Field(default=8, ge=1, le=100, description="tries per notification before it counts "
                                                                    "as failed")
    retry_initial_s: PositiveFloat = 5.0
    retry_max_s: PositiveFloat = 600.0
    timeout_s: PositiveFloat = Field(default=30.0, description="one attempt, all of Apprise's network work")
    max_per_zone_per_hour: int = Field(default=6, ge=1, description="per target: notifications about one zone "
                                                                    "in any rolling hour")
    max_per_hour: int = Field(default=20, ge=1, description="per target, all zones, in any rolling hour")
    summary_after_s: float = Field(default=60.0, ge=0, description="past a limit: collect this long, then one "
                                                                   "summary")
    summary_every_s: PositiveFloat = Field(default=900.0, description="at most one summary this often per target")
    attach_evidence: bool = Field(default=True, description="attach the warning's evidence frame where the "
                                                            "service takes attachments")
    max_attachment_kb: int = Field(default=1024, ge=1, le=20_000)
    max_body_chars: int = Field(default=1000, ge=200, le=10_000)
    max_queued: int = Field(default=10_000, ge=10)
    language: Literal["en"] = "en"

    @model_validator(mode="after")
    def _targets(self) -> NotifySinkSettings:
        if self.enabled and not self.targets:
            raise ValueError("enabled without targets: add [[sinks.notify.targets]] (docs/notifications.md)")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique: {names}")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be >= retry_initial_s")
        return self
