"""Configuration of the daemon (`[service]`) and its health endpoint (`[health]`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from monitor.core.config import PositiveFloat, Section


class HealthSettings(Section):
    """`/healthz`, `/readyz` and `/metrics` on one small HTTP server, loopback only by default."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1, description="bind address; keep it on loopback")
    port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port (logged at start-up)")
    ready_grace_s: PositiveFloat = Field(
        default=30.0, description="a source or sink may be offline this long (after start or a drop) and stay ready"
    )
    backend_fresh_s: PositiveFloat = Field(
        default=60.0, description="kept for older files: only paces the probe of a monitor that never assessed"
    )
    blind_after_s: PositiveFloat = Field(
        default=120.0,
        description="a zone whose observations wait this long with no successful assessment is blind",
    )
    probe_timeout_s: PositiveFloat = Field(
        default=2.0, description="when the model was idle: timeout of the GET <base_url>/models probe"
    )
    stall_after_s: PositiveFloat = Field(
        default=15.0, description="no scheduler tick for this long: the pipeline counts as stalled"
    )
    metrics: bool = Field(default=True, description="serve /metrics")


def default_state_dir() -> Path:
    """`$STATE_DIRECTORY` under systemd (`StateDirectory=`; the first one if several), else `./state`."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(os.path.abspath(systemd or "state"))


class ServiceSettings(Section):
    """The daemon itself."""

    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="durable state; default $STATE_DIRECTORY under systemd, else ./state; a relative path is "
                    "relative to the working directory (like every output path) and made absolute at load",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    shutdown_timeout_s: PositiveFloat = 10.0
    exit_when_sources_end: bool = Field(
        default=False, description="stop once every source has ended (replay demos), after the last assessment"
    )
    audit_log: Path | None = Field(default=None, description="JSONL of every decision: prompt, answer, verdict")

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Resolved once, at load: a later chdir cannot move it, and every log line names the real folder.
        return Path(os.path.abspath(value))
