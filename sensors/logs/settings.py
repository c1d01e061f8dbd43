"""Configuration of activity-log sources (`[[sources]]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from monitor.core.config import Identifier, PositiveFloat, Section


class SourceSettings(Section):
    """One activity-log source. Sources that share a `zone` share one window."""

    id: Identifier
    kind: Literal["file", "stdin", "replay", "mqtt"] = "file"
    path: Path | None = None
    topic: str | None = Field(default=None, description="mqtt: topic of JSON activity events")
    format: Literal["auto", "jsonl", "text", "pasbench"] = "auto"
    zone: Identifier | None = Field(default=None, description="default: the source id")
    from_start: bool = Field(default=False, description="file: read existing content first instead of only appends "
                                                        "(when no read position is kept for it)")
    resume: bool = Field(default=True, description="file: continue after a restart where the last run stopped "
                                                   "(the position is kept in the state dir)")
    resume_max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=0, le=1024 * 1024 * 1024,
        description="file: most bytes written while the monitor was down read after a restart; older ones are "
                    "skipped and counted",
    )
    speed: float = Field(default=1.0, ge=0.0, description="replay: entries per interval scale; 0 = as fast as possible")
    interval_s: PositiveFloat = Field(default=2.0, description="replay: seconds between entries at speed 1")
    poll_interval_s: PositiveFloat = 0.25
    max_entry_chars: int = Field(
        default=4096, ge=256, le=1_000_000,
        description="longest text field of one entry; longer ones are cut, marked and counted",
    )
    max_payload_bytes: int = Field(
        default=64 * 1024, ge=1024, le=256 * 1024 * 1024,
        description="mqtt: larger activity payloads are rejected unread and counted",
    )

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
