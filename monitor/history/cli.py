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
from typing import TextIO

from monitor.core.errors import ConfigError
from monitor.history.feedback import Feedback, FeedbackError, FeedbackStore, missed
from monitor.history.files import HistoryFiles, Purged
from monitor.history.settings import HistorySettings, feedback_path
from monitor.history.times import parse_duration, parse_time, utc_label


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
