"""What a person can say about an alert: the labels of feedback (no imports, for the command line's parser)."""

from __future__ import annotations

from typing import Literal, get_args

Label = Literal["helpful", "false_alarm", "unclear", "missed"]
LABELS: tuple[Label, ...] = get_args(Label)
ALERT_LABELS: tuple[Label, ...] = ("helpful", "false_alarm", "unclear")  # `missed` is about a time, not an alert
