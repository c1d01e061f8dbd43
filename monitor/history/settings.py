"""Configuration of the recorded history and of feedback on alerts (`[history]`)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator

from monitor.core.config import Section

HISTORY_DIR = "history"
FEEDBACK_FILE = "feedback.sqlite3"


class HistorySettings(Section):
    """What the monitor keeps of its own work, for how long, and whether it takes feedback."""

    enabled: bool = Field(default=True, description="record every assessed window (docs/history.md)")
    path: Path | None = Field(default=None, description="the history folder; default <service.state_dir>/history")
    record_frames: bool = Field(
        default=False, description="also keep the camera keyframes sent to the model (privacy: off by default)")
    max_age_days: float = Field(default=30.0, gt=0.0, le=3650.0, description="records older than this are deleted")
    frames_max_age_days: float = Field(default=7.0, gt=0.0, le=3650.0,
                                       description="recorded frames older than this are deleted")
    max_mb: float = Field(default=1024.0, gt=0.0, le=10_000_000.0,
                          description="size of the history folder at most (frames go first, then the oldest days)")
    feedback: bool = Field(
        default=True,
        description="take feedback on alerts (MQTT <prefix>/feedback, Home Assistant buttons) and keep the "
                    "index of alerts in <service.state_dir>/feedback.sqlite3")

    @model_validator(mode="after")
    def _frames_within_records(self) -> HistorySettings:
        if self.frames_max_age_days > self.max_age_days:
            raise ValueError(f"frames_max_age_days ({self.frames_max_age_days:g}) must not exceed max_age_days "
                             f"({self.max_age_days:g}): a frame outliving its record is never replayed")
        return self

    def folder(self, state_dir: Path) -> Path:
        """The history folder for this state dir (a configured `history.path` that is a symlink: where it points,
        the folders the monitor makes itself must not be links)."""
        return Path(os.path.realpath(self.path)) if self.path is not None else state_dir / HISTORY_DIR


def feedback_path(state_dir: Path) -> Path:
    """The feedback store of a state dir (the daemon and `monitor feedback` share it)."""
    return state_dir / FEEDBACK_FILE
