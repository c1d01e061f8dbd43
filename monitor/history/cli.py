"""`monitor feedback` and `monitor history purge`: a person's side of the home's history.

Both work on the state dir of a configuration (`--config`, else the defaults and
`MONITOR_*` variables) or on a state dir given with `--state-dir`, and are safe while the
daemon runs: the feedback store is SQLite in WAL mode with a busy timeout, and a purge
takes the history folder's exclusive lock.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from monitor.core.errors import ConfigError
from monitor.core.jsonio import MAX_LINE_BYTES, loads_bounded
from monitor.history.feedback import Feedback, FeedbackError, FeedbackStore, missed
from monitor.history.files import HistoryFiles, Purged, PurgePreview
from monitor.history.settings import HistorySettings, feedback_path
from monitor.history.times import parse_duration, parse_time, utc_label

if TYPE_CHECKING:
    from monitor.settings import Settings


def _locate(args: argparse.Namespace) -> tuple[Path, HistorySettings]:
    """The state dir and history settings the command works on."""
    if args.state is not None:
        return args.state, HistorySettings()
    settings = _settings(args)
    return settings.service.state_dir, settings.history


def _settings(args: argparse.Namespace) -> Settings:
    from monitor.settings import load_settings

    return load_settings(args.config, secrets=False)  # the state dir and the zones: no model is called


def _check_zone(zone: str, args: argparse.Namespace, state: Path) -> None:
    """Refuse a zone the monitor does not watch (a typo would store a report nobody ever reads).

    With a configuration its zones are known; with only a state dir, the zones it has recorded."""
    if args.state is None:
        zones, whose = _settings(args).zone_ids(), "the configuration's zones"
    else:
        zones, whose = _recorded_zones(state), f"zones recorded in {state} (pass --config for the configured ones)"
    if zone not in zones:
        raise ConfigError([f"monitor feedback: --zone {zone!r} is not a zone the monitor watches; "
                           f"{whose}: {', '.join(zones) or 'none'}"])


def _recorded_zones(state: Path) -> list[str]:
    zones: dict[str, None] = {}
    if feedback_path(state).is_file():
        with FeedbackStore(feedback_path(state)) as store:
            zones.update(dict.fromkeys(row.zone for row in store.alerts(since=0.0)))
    files = HistoryFiles(HistorySettings().folder(state))
    for day in files.days() if files.folder.is_dir() else []:
        with files.day_file(day).open(encoding="utf-8", errors="replace") as lines:
            zones.update(dict.fromkeys(_zone_of(line) for line in lines))
    zones.pop("", None)
    return sorted(zones)


def _zone_of(line: str) -> str:
    """The zone of a history line ('' when it cannot be read: a torn or foreign line names none)."""
    try:
        record = loads_bounded(line, what="history line", max_bytes=MAX_LINE_BYTES)
    except ValueError:  # JsonInputError: counted by the reader
        return ""
    zone = record.get("zone") if isinstance(record, dict) else None
    return zone if isinstance(zone, str) else ""


def _store(state: Path) -> FeedbackStore:
    path = feedback_path(state)
    if not path.is_file():
        raise FeedbackError(f"no feedback store at {path.absolute()}: the monitor creates it when it runs with "
                            "history.feedback on (pass --state-dir or --config to point at its state dir)")
    return FeedbackStore(path).open()


# --------------------------------------------------------------------------- monitor feedback


def feedback_command(args: argparse.Namespace, out: TextIO) -> int:
    """`monitor feedback ...`: store one piece of feedback, or list the alerts."""
    state, _ = _locate(args)
    if args.list:
        return _list(state, args, out)
    feedback = _feedback(args)
    if args.missed:
        _check_zone(args.zone, args, state)
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
    """Every alert since `--since` with every label given to it, then the missed hazards reported."""
    try:
        since = parse_time(args.since)
    except ValueError as exc:
        raise ConfigError([f"monitor feedback --since: {exc}"]) from None
    with _store(state) as store:
        rows = store.alerts(since=since, zone=args.zone)
        entries = store.entries(zone=args.zone, since=since)
    labels: dict[str, list[str]] = {}
    for entry in entries:
        if entry.alert_id is not None:
            labels.setdefault(entry.alert_id, []).append(entry.label)
    for row in rows:
        print(f"{utc_label(row.created_at)}  {row.zone}  {row.id}  {row.severity}  {row.hazard}  "
              f"[{', '.join(labels.get(row.id, [])) or 'no feedback'}]", file=out)
    missed_reports = [entry for entry in entries if entry.label == "missed"]
    for entry in missed_reports:
        note = f"  {entry.note!r}" if entry.note else ""
        print(f"{utc_label(entry.start)}  {entry.zone}  missed hazard reported, {utc_label(entry.start)} to "
              f"{utc_label(entry.end)}{note}", file=out)
    print(f"{len(rows)} alerts and {len(missed_reports)} missed hazards reported since {utc_label(since)}", file=out)
    return 0


# --------------------------------------------------------------------------- monitor history


def history_command(args: argparse.Namespace, out: TextIO, answer: TextIO | None = None) -> int:
    """`monitor history purge ...`: shows what it will delete and asks first (unless `--yes` or `--dry-run`)."""
    state, settings = _locate(args)
    older = None
    if args.older_than is not None:
        try:
            older = parse_duration(args.older_than)
        except ValueError as exc:
            raise ConfigError([f"monitor history purge --older-than: {exc}"]) from None
    now = time.time()
    rule = {"older_than_s": older, "zone": args.zone, "everything": args.all, "now": now}
    preview = _purge(state, settings, rule, keep_feedback=args.keep_feedback, dry_run=True)
    if args.dry_run or not preview.anything:
        print(f"{preview.text}\n{'nothing to delete' if not preview.anything else 'dry run: nothing deleted'}",
              file=out)
        return 0
    if not args.yes and not _confirmed(preview.text, out, answer if answer is not None else sys.stdin):
        print("nothing deleted", file=out)
        return 1
    print(_purge(state, settings, rule, keep_feedback=args.keep_feedback, dry_run=False).text, file=out)
    return 0


@dataclass(frozen=True)
class _PurgeResult:
    text: str
    anything: bool


def _purge(state: Path, settings: HistorySettings, rule: dict[str, Any], *, keep_feedback: bool,
           dry_run: bool) -> _PurgeResult:
    """Purge (or, with `dry_run`, count) the history and the feedback store under one rule."""
    kind = PurgePreview if dry_run else HistoryFiles
    files = kind(settings.folder(state))
    purged = files.purge(**rule) if files.folder.is_dir() else Purged()
    lines = [f"{files.folder}: {purged.summary(dry_run=dry_run)}"]
    rows = 0
    if not keep_feedback and feedback_path(state).is_file():
        older = rule["older_than_s"]
        with FeedbackStore(feedback_path(state)) as store:
            rows = store.purge(before=None if older is None else rule["now"] - older, zone=rule["zone"],
                               everything=rule["everything"], dry_run=dry_run)
        lines.append(f"{feedback_path(state)}: {rows} feedback entries and indexed alerts "
                     f"{'would be removed' if dry_run else 'removed'}")
    return _PurgeResult("\n".join(lines), bool(purged.records or purged.frames or rows))


def _confirmed(preview: str, out: TextIO, answer: TextIO) -> bool:
    """Ask a person at a terminal; refuse (with the flag to use) when nobody can answer."""
    print(preview, file=out)
    if not answer.isatty():
        raise ConfigError(["monitor history purge: this deletes the records above; add --yes to confirm "
                           "(or --dry-run to only look): standard input is not a terminal to ask"])
    print("Delete them? [y/N] ", end="", file=out, flush=True)
    return answer.readline().strip().lower() in ("y", "yes")
