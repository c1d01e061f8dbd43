"""The `feedback` and `history` command lines: only argparse here, so `monitor --help` stays quick.

What the commands do is in `monitor.history.cli`, imported when one of them runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from monitor.history.labels import ALERT_LABELS


def add_parsers(commands: Any) -> None:
    """Add `feedback` and `history` to the `monitor` command's subparsers."""
    feedback = commands.add_parser(
        "feedback", help="mark an alert helpful, false_alarm or unclear, report a missed hazard, or --list alerts",
        description="Examples: monitor feedback 3f9c0e6b2a1d4c55 false_alarm --note 'the hob is on low on purpose'; "
                    "monitor feedback --zone garage --missed --from 2026-01-03T18:00 --to 2026-01-03T18:10; "
                    "monitor feedback --list --since 7d")
    feedback.add_argument("alert_id", nargs="?", help="the alert's id (`id` in its MQTT or JSONL message)")
    feedback.add_argument("label", nargs="?", choices=ALERT_LABELS, help="what the alert was")
    feedback.add_argument("--missed", action="store_true", help="report a hazard the monitor missed (needs --zone)")
    feedback.add_argument("--zone", help="the zone of a missed hazard, or the zone to --list")
    feedback.add_argument("--from", dest="start", help="start of the missed hazard: ISO 8601 (local time unless it "
                                                       "carries a UTC offset such as +01:00), seconds since the "
                                                       "epoch, or a duration ago (20min)")
    feedback.add_argument("--to", dest="end", default=None, help="its end (default: now)")
    feedback.add_argument("--note", default="", help="what a person wants the record to say (500 characters)")
    feedback.add_argument("--list", action="store_true", help="list the alerts (with their latest label)")
    feedback.add_argument("--since", default="7d", help="--list: alerts since this time or duration ago (7d)")
    _where(feedback)

    history = commands.add_parser("history", help="the recorded history of assessed windows")
    actions = history.add_subparsers(dest="history_command", required=True)
    purge = actions.add_parser("purge", help="delete recorded windows and frames by age, zone, or all of them")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--zone", help="every record of this zone")
    which.add_argument("--all", action="store_true", help="everything")
    which.add_argument("--older-than", help="a duration: 30d, 12h, 90min, 2w (a bare 'm' is refused)")
    purge.add_argument("--keep-feedback", action="store_true",
                       help="keep the feedback and the alert index (deleted with the same rule by default)")
    purge.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    purge.add_argument("--yes", action="store_true",
                       help="delete without asking (needed when standard input is not a terminal)")
    _where(purge)


def _where(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="monitor config: its service.state_dir and [history]")
    where.add_argument("--state-dir", dest="state", type=Path,
                       help="the monitor's state directory (default: service.state_dir of the config or defaults; "
                            "under systemd the unit sets it: /var/lib/proactive-monitor)")
    where.add_argument("--state", dest="state", type=Path, help=argparse.SUPPRESS)  # the old spelling, unshown
