"""`monitor run | check-config | inspect-log | feedback | history | ack | replay`: the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor import __version__
from monitor.core.errors import ConfigError, MonitorError, report

# This module is the one place where the service and the replay tool meet. Everything
# heavier than argparse is imported by the command that needs it, so `--help` is quick.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitor", description="Real-time proactive safety monitor.")
    parser.add_argument("--version", action="version", version=f"proactive-monitor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the monitor until SIGINT/SIGTERM (or the end of replayed sources)")
    run.add_argument("--config", type=Path, help="TOML config file (default: built-in defaults + MONITOR_* env)")

    check = commands.add_parser(
        "check-config", help="check a config file and this machine as `monitor run` would at start; exit 1 with one "
                             "line per problem",
        description="Check a config file, and everything `monitor run --config FILE` would refuse at start on this "
                    "machine as this user (state dir, output paths, speech engine and audio device, the model's "
                    "local parts), with the same lines. Nothing is created.")
    check.add_argument("config", type=Path, metavar="FILE", help="the TOML config file to check (as `monitor run "
                                                                  "--config FILE` would load it, env and secrets too)")
    check.add_argument("--config-only", action="store_true",
                       help="check the file only, not this machine (CI, or a user other than the service's)")
    check.add_argument("--online", action="store_true",
                       help="also ask the model endpoint for its models and connect to the MQTT broker (5 s each)")

    inspect = commands.add_parser("inspect-log", help="print the entries the monitor parses from a log, as JSON lines")
    inspect.add_argument("file", type=Path, metavar="FILE",
                         help="an activity log (JSON lines, plain text, PaSBench blocks) or a PaSBench eval JSON array")
    inspect.add_argument("--format", choices=["auto", "jsonl", "text", "pasbench"], default="auto")
    from monitor.history.parser import add_parsers

    add_parsers(commands)

    ack = commands.add_parser("ack", help="acknowledge a warning in the running monitor: stops its escalation",
                              description="Acknowledge one alert (ALERT_ID) or every open alert of a zone (--zone) "
                                          "in the monitor running with the same state directory.")
    ack.add_argument("alert_id", nargs="?", metavar="ALERT_ID", help="the alert's id (in every alert event)")
    ack.add_argument("--zone", help="acknowledge every open alert of this zone (with ALERT_ID: only if it is there)")
    ack.add_argument("--config", type=Path,
                     help="the config the monitor runs with (its service.state_dir, and the zones --zone may name)")
    ack.add_argument("--state-dir", dest="state_dir", type=Path,
                     help="the monitor's state directory (overrides the config; under systemd the unit sets it: "
                          "/var/lib/proactive-monitor)")
    ack.add_argument("--state", dest="state_dir", type=Path, help=argparse.SUPPRESS)  # the old spelling, unshown
    ack.add_argument("--by", help="who acknowledges (default: cli:<your user name>)")
    ack.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the monitor's answer")
    from replay.cli import add_replay_parser

    add_replay_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _command(args)
        sys.stdout.flush()  # here, not at exit: a reader that went away is then seen below
        return code
    except BrokenPipeError:  # `monitor ... | head`: the reader is gone, end quietly
        from monitor.core.pipes import reader_gone

        return reader_gone()


def _command(args: argparse.Namespace) -> int:
    try:
        if args.command == "check-config":
            return _check_config(args.config, machine=not args.config_only, online=args.online)
        if args.command == "inspect-log":
            from monitor.inspect_log import inspect_log

            return inspect_log(args.file, args.format, sys.stdout)
        if args.command == "run":
            return _run(args.config)
        if args.command in ("feedback", "history"):
            from monitor.history.cli import feedback_command, history_command

            return (feedback_command if args.command == "feedback" else history_command)(args, sys.stdout)
        if args.command == "ack":
            return _ack(args)
        if args.command == "replay":
            from replay.cli import run_replay

            return run_replay(args)
    except MonitorError as exc:
        return report(exc)
    except KeyboardInterrupt:
        return 130
    return 2


def _check_config(path: Path, *, machine: bool = True, online: bool = False) -> int:
    from monitor.core.text import redact_credentials
    from monitor.daemon.preflight import StartCheck, check_start, probe_online
    from monitor.settings import config_warnings, load_settings

    settings = load_settings(path, secrets=machine)  # the keys' variables and files are this machine's
    checked = check_start(settings) if machine else StartCheck()
    warnings = config_warnings(settings, machine=machine) + checked.warnings
    if online:
        import asyncio

        probed = asyncio.run(probe_online(settings))
        notes, errors = probed.warnings, checked.errors + probed.errors
    else:
        notes, errors = [], checked.errors
    for warning in warnings:
        print(f"{path}: warning: {warning}")
    for note in notes:
        print(f"{path}: {redact_credentials(note)}")
    for line in errors:
        print(redact_credentials(line), file=sys.stderr)
    if errors:
        return 1
    print(f"{path}: ok ({len(settings.sources)} log sources, {len(settings.cameras)} cameras, "
          f"{len(settings.microphones)} microphones, "
          f"zones {', '.join(settings.zone_ids()) or 'none'}, backend '{settings.model.backend}', "
          f"strategy '{settings.assessment.strategy}')" + ("" if machine else "; this machine not checked"))
    return 0


def _ack(args: argparse.Namespace) -> int:
    import getpass

    from monitor.escalation.spool import request_ack

    if args.alert_id is None and args.zone is None:
        print("error: name an alert (ALERT_ID) or a zone (--zone ZONE) to acknowledge", file=sys.stderr)
        return 2
    if args.alert_id is not None:
        from monitor.alerts import ALERT_ID

        if not ALERT_ID.match(args.alert_id.lower()):
            print(f"error: {args.alert_id!r} is not an alert id (16 hex digits, the `id` of an alert event)",
                  file=sys.stderr)
            return 2
        args.alert_id = args.alert_id.lower()
    state_dir = args.state_dir
    if state_dir is None or args.config is not None:  # under systemd both: the unit names the state dir
        from monitor.settings import load_settings

        settings = load_settings(args.config, secrets=False)  # the zones and the state dir: no model is called
        if args.zone is not None and args.zone not in settings.zone_ids():
            print(f"error: --zone {args.zone!r} is not a zone of this configuration; its zones: "
                  f"{', '.join(settings.zone_ids()) or 'none'}", file=sys.stderr)
            return 2
        state_dir = state_dir or settings.service.state_dir
    answer = request_ack(state_dir, alert_id=args.alert_id, zone=args.zone,
                         by=args.by or f"cli:{getpass.getuser()}", timeout_s=args.timeout)
    status = answer.get("status")
    print(_ack_sentence(status, answer, args))
    return 0 if status in ("acknowledged", "already_acknowledged") else 1


def _ack_sentence(status: object, answer: dict[str, object], args: argparse.Namespace) -> str:
    """One sentence a person reads: what was acknowledged, or why nothing was."""
    ids = answer.get("alert_ids")
    named = ", ".join(str(i) for i in ids) if isinstance(ids, list) and ids else None
    where = f" in zone {args.zone}" if args.zone else ""
    if status == "acknowledged":
        count = len(ids) if isinstance(ids, list) else 0
        return f"Acknowledged {count} alert{'s' if count != 1 else ''}{where}: {named}."
    if status == "already_acknowledged":
        return f"Already acknowledged{where}: {answer.get('detail', named)}."
    if status == "not_found":
        what = f"alert {args.alert_id}" if args.alert_id else "alert"
        return f"Nothing acknowledged: no open {what}{where}."
    return f"Nothing acknowledged ({status}): {answer.get('detail', '')}"


def _run(config: Path | None) -> int:
    import os

    import structlog

    from monitor.core.logging import configure_logging
    from monitor.settings import config_warnings, load_settings

    # What the monitor writes (alerts, the outbox, the audit log) is about a person: for its user only,
    # with or without systemd's UMask=0077.
    os.umask(0o077)
    settings = load_settings(config)
    configure_logging(settings.service.log_level, settings.service.log_format)
    log = structlog.get_logger("monitor.cli")
    for warning in config_warnings(settings):
        log.warning("configuration warning", config=str(config or "<defaults>"), warning=warning)
    from monitor.daemon.preflight import check_start

    checked = check_start(settings)  # what check-config refuses, in the same words, before anything is made
    for warning in checked.warnings:
        log.warning("start warning", config=str(config or "<defaults>"), warning=warning)
    if checked.errors:
        log.info("start refused before anything was made", state_dir=str(settings.service.state_dir))
        raise ConfigError(checked.errors)
    from monitor.core.aio import run_loop
    from monitor.daemon.service import serve

    return run_loop(serve(settings, config))
