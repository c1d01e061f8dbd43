"""Configuration of the local sinks (`[sinks]`); MQTT has its own section (`[mqtt]`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from monitor.core.config import Section


class StdoutSinkSettings(Section):
    enabled: bool = True
    color: bool | None = None


class JsonlSinkSettings(Section):
    enabled: bool = False
    path: Path = Path("alerts.jsonl")


class SinkSettings(Section):
    stdout: StdoutSinkSettings = Field(default_factory=StdoutSinkSettings)
    jsonl: JsonlSinkSettings = Field(default_factory=JsonlSinkSettings)
