"""`monitor feedback` and `monitor history purge`: a person's side of the home's history.

Both work on the state dir of a configuration (`--config`, else the defaults and
`MONITOR_*` variables) or on a state dir given with `--state`, and are safe while the
daemon runs: the feedback store is SQLite in WAL mode with a busy timeout, and a purge
takes the history folder's exclusive lock.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, TextIO

from monitor.core.errors import ConfigError
from monitor.history.feedback import ALERT_LABELS, Feedback, FeedbackError, FeedbackStore, missed
from monitor.history.files import HistoryFiles, Purged
from monitor.history.settings import HistorySettings, feedback_path
from monitor.history.times import parse_duration, parse_time, utc_label


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
    feedback.add_argument("--from", dest="start", help="start of the missed hazard: ISO 8601 (local time unless a "
                                                       "zone is given), seconds since the epoch, or a duration ago")
    feedback.add_argument("--to", dest="end", default=None, help="its end (default: now)")
    feedback.add_argument("--note", default="", help="what a person wants the record to say (500 characters)")
    feedback.add_argument("--list", action="store_true", help="list the alerts (with their latest label)")
    feedback.add_argument("--since", default="7d", help="--list: alerts since this time or duration ago (7d)")
    _where(feedback)

    history = commands.add_parser("history", help="the recorded history of assessed windows")
    actions = history.add_subparsers(dest="history_command", required=True)
    purge = actions.add_parser("purge", help="delete recorded windows and frames by age, zone, or all of them")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--older-than", help="a duration: 30d, 12h, 2w")
    which.add_argument("--zone", help="every record of this zone")
    which.add_argument("--all", action="store_true", help="everything")
    purge.add_argument("--keep-feedback", action="store_true",
                       help="keep the feedback and the alert index (deleted with the same rule by default)")
    _where(purge)


def _where(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="monitor config: its service.state_dir and [history]")
    where.add_argument("--state-dir", "--state", dest="state", type=Path,
                       help="the monitor's state directory (default: service.state_dir of the config or defaults)")


def _locate(args: argparse.Namespace) -> tuple[Path, HistorySettings]:
    """The state dir and history settings the command works on."""
    if args.state is not None:
        return args.state, HistorySettings()
    from monitor.settings import load_settings

    settings = load_settings(args.config)
    return settings.service.state_dir, settings.history


def _store(state: Path) -> FeedbackStore:
    path = feedback_path(state)
    if not path.is_file():
        raise FeedbackError(f"no feedback store at {path.absolute()}: the monitor creates it when it runs with "
                            "history.feedback on (pass --state or --config to point at its state dir)")
    return FeedbackStore(path).open()


# --------------------------------------------------------------------------- monitor feedback


def feedback_command(args: argparse.Namespace, out: TextIO) -> int:
    """`monitor feedback ...`: store one piece of feedback, or list the alerts."""
    state, _ = _locate(args)
    if args.list:
        return _list(state, args, out)
    feedback = _feedback(args)
    with _store(state) as store:
        entry = store.add(feedback)
    about = (f"alert {entry.alert_id} ({entry.zone}, {entry.hazard!r}, {len(entry.windows)} windows)"
             if entry.alert_id else f"zone {entry.zone}, {utc_label(entry.start)} to {utc_label(entry.end)}")
    print(f"stored: {entry.label} on {about} in {feedback_path(state)}", file=out)
    return 0


def _feedback(args: argparse.Namespace) -> Feedback:
    note = args.note.strip()
    if len(note) > 500:
        raise ConfigError([f"monitor feedback: --note has {len(note)} characters; at most 500, please"])
    if args.missed:
        if args.alert_id or args.label:
            raise ConfigError(["monitor feedback: --missed is about a zone and a time range, not an alert"])
        if not args.zone or not args.start:
            raise ConfigError(["monitor feedback: --missed needs --zone and --from (and --to, default now)"])
        now = time.time()
        try:
            start, end = parse_time(args.start, now=now), parse_time(args.end, now=now) if args.end else now
        except ValueError as exc:
            raise ConfigError([f"monitor feedback: {exc}"]) from None
        return missed(args.zone, start, end, note=note, via="cli", now=now)
    if not args.alert_id or not args.label:
        raise ConfigError(["monitor feedback: give ALERT_ID and a label (helpful, false_alarm, unclear), "
                           "or --zone Z --missed --from T, or --list"])
    return Feedback(args.label, alert_id=args.alert_id, note=note, via="cli")


def _list(state: Path, args: argparse.Namespace, out: TextIO) -> int:
    try:
        since = parse_time(args.since)
    except ValueError as exc:
        raise ConfigError([f"monitor feedback --since: {exc}"]) from None
    with _store(state) as store:
        rows = store.alerts(since=since, zone=args.zone)
    for row in rows:
        print(f"{utc_label(row.created_at)}  {row.zone}  {row.id}  {row.severity}  {row.hazard}  "
              f"[{row.label or 'no feedback'}]", file=out)
    print(f"{len(rows)} alerts since {utc_label(since)}", file=out)
    return 0


# --------------------------------------------------------------------------- monitor history


def history_command(args: argparse.Namespace, out: TextIO) -> int:
    """`monitor history purge ...`."""
    state, settings = _locate(args)
    files = HistoryFiles(settings.folder(state))
    older = None
    if args.older_than is not None:
        try:
            older = parse_duration(args.older_than)
        except ValueError as exc:
            raise ConfigError([f"monitor history purge --older-than: {exc}"]) from None
    now = time.time()
    purged = files.purge(older_than_s=older, zone=args.zone, everything=args.all, now=now) \
        if files.folder.is_dir() else Purged()
    print(f"{files.folder}: {purged.summary()}", file=out)
    if not args.keep_feedback and feedback_path(state).is_file():
        with FeedbackStore(feedback_path(state)) as store:
            rows = store.purge(before=None if older is None else now - older, zone=args.zone, everything=args.all)
        print(f"{feedback_path(state)}: {rows} feedback entries and indexed alerts removed", file=out)
    return 0
