"""`monitor replay pasbench | score`: run the benchmark through the monitor, and re-score a run log.

Wired into `monitor` by monitor/cli.py (`add_replay_parser(commands)` and
`run_replay(args)`); also runnable alone as `python -m replay.cli ...`.

Exit codes: 0 done; 1 configuration, data or model error; 3 some trials failed or
stayed unjudged (run the same command again to retry only those).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from monitor.errors import ConfigError, MonitorError

JUDGE_KEY_ENV = "MONITOR_JUDGE_API_KEY"
JUDGE_KEY_SECRET = "judge_api_key"  # noqa: S105 (a file name in the secrets dir, not a secret)


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `replay pasbench` and `replay score` to a parent's subparsers; return the `replay` parser."""
    replay: argparse.ArgumentParser = subparsers.add_parser(
        "replay", help="replay a benchmark through the monitor, and score runs")
    commands = replay.add_subparsers(dest="replay_command", required=True)

    run = commands.add_parser("pasbench", help="run PaSBench scenarios through the pipeline (or --list them)")
    run.add_argument("--data", type=Path, required=True, help="the release folder (text/image JSON, severity.json)")
    run.add_argument("--out", type=Path, help="output folder: runs.jsonl, caches, scores.json, report.md/.html")
    run.add_argument("--list", action="store_true", help="print one JSON line per scenario and exit")
    run.add_argument("--protocol", choices=["paper", "stream"], default="paper")
    run.add_argument("--modality", choices=["text", "image", "all"], default="all")
    run.add_argument("--trials", type=_positive, default=16, help="trials per sample (default 16, as the paper)")
    run.add_argument("--limit", type=_positive, help="only the first K records of each modality (and K safe logs)")
    run.add_argument("--config", type=Path, help="monitor config (model, windows, alerts); sources are ignored")
    run.add_argument("--concurrency", type=_positive, help="trials at once (default: model.concurrency)")
    run.add_argument("--speed", type=float, default=0.0,
                     help="stream protocol: entries every interval/speed s; 0 (default) = lockstep, as fast as "
                          "possible and deterministic")
    run.add_argument("--interval", type=float, default=2.0, help="stream seconds between entries (default 2.0)")
    run.add_argument("--no-safe-controls", dest="safe_controls", action="store_false",
                     help="do not run the bundled safe logs (no false-alarm measure)")
    run.add_argument("--safe-controls-dir", type=Path, help="another folder of safe *.log files")
    run.add_argument("--cache", type=Path, help="response cache file (default OUT/cache.jsonl)")
    run.add_argument("--judge-base-url", help="OpenAI-compatible judge endpoint (default: offline approximate judge)")
    run.add_argument("--judge-model", help="judge model name, e.g. gpt-4.1")
    run.add_argument("--judge-api-key-file", type=Path,
                     help=f"file holding the judge key (else ${JUDGE_KEY_ENV}, else the secrets dir)")
    run.add_argument("--judge-concurrency", type=_positive, default=8)
    _common(run)

    score = commands.add_parser("score", help="re-score a run log (never calls a model)")
    score.add_argument("--runs", type=Path, required=True, help="OUT/runs.jsonl of a replay")
    score.add_argument("--out", type=Path, required=True, help="where to write scores.json and the reports")
    _common(score)
    return replay


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="warning")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run_replay(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run `replay pasbench` or `replay score`; return the exit code."""
    from monitor.logging import configure_logging

    stdout = out if out is not None else sys.stdout
    configure_logging(args.log_level, "auto")
    try:
        if args.replay_command == "score":
            return _score(args.runs, args.out, stdout)
        if args.list:
            return _list(args, stdout)
        return _pasbench(args, stdout)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except MonitorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished trials are in the run log; run the same command to resume", file=sys.stderr)
        return 130


def _score(runs: Path, out_dir: Path, stdout: TextIO) -> int:
    from replay.report import write_reports
    from replay.runlog import read_run_log
    from replay.score import score_run

    scores = score_run(read_run_log(runs))
    paths = write_reports(scores, out_dir)
    print(_headline(scores), file=stdout)
    print("wrote " + ", ".join(str(p) for p in paths), file=stdout)
    return 0


def _headline(scores: dict[str, Any]) -> str:
    from replay.report import pct_ci

    judge = scores["judge"]
    label = " (APPROXIMATE offline judge)" if judge.get("approximate") else f" (judge {judge.get('model')})"
    text = (f"{scores['protocol']}: accuracy {pct_ci(scores, 'accuracy')}, potential {pct_ci(scores, 'potential')}, "
            f"robustness {pct_ci(scores, 'robustness')} over {scores['n_samples']} samples / "
            f"{scores['n_trials']} trials{label}")
    alarms = scores.get("false_alarms")
    if alarms:
        text += f"; false alarms {pct_ci(alarms, 'rate')} of safe trials"
    skipped = scores["coverage"]["skipped"]["count"]
    if skipped:
        text += f"; {skipped} samples skipped (see report)"
    return text


def _settings(config: Path | None) -> Any:
    from monitor.settings import load_settings

    return load_settings(config)


def _judge_key(args: argparse.Namespace) -> str | None:
    if args.judge_api_key_file is not None:
        try:
            return str(args.judge_api_key_file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError([f"{args.judge_api_key_file}: cannot read the judge key: {exc.strerror}"]) from None
    if os.environ.get(JUDGE_KEY_ENV):
        return os.environ[JUDGE_KEY_ENV]
    from monitor.settings import secrets_dir

    folder = secrets_dir()
    if folder is not None and (folder / JUDGE_KEY_SECRET).is_file():
        return (folder / JUDGE_KEY_SECRET).read_text(encoding="utf-8").strip()
    return None


def _pasbench(args: argparse.Namespace, stdout: TextIO) -> int:
    from monitor.service import run_loop
    from replay.runlog import read_run_log
    from replay.runner import RUNS_FILE, JudgeSpec, ReplayOptions, run_pasbench

    if args.out is None:
        raise ConfigError(["replay pasbench: --out is required (unless --list)"])
    settings = _settings(args.config)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        options = ReplayOptions(
            protocol=args.protocol, modality=args.modality, trials=args.trials,
            concurrency=args.concurrency or settings.model.concurrency, speed=args.speed,
            interval_s=args.interval, safe_controls=args.safe_controls, progress=progress,
        )
    except ValueError as exc:
        raise ConfigError([f"replay pasbench: {exc}"]) from None
    judge = JudgeSpec(base_url=args.judge_base_url, model=args.judge_model, api_key=_judge_key(args),
                      concurrency=args.judge_concurrency)
    summary = run_loop(run_pasbench(settings=settings, data_dir=args.data, out=args.out, options=options,
                                    judge=judge, limit=args.limit, cache_path=args.cache,
                                    safe_controls_dir=args.safe_controls_dir))
    print(f"trials: {summary.ran} run now, {summary.already_done} already done; model calls {summary.calls} "
          f"({summary.cached_calls} cached); tokens {summary.prompt_tokens}+{summary.completion_tokens}; "
          f"{summary.wall_s:.1f} s", file=sys.stderr)
    code = _score(args.out / RUNS_FILE, args.out, stdout)
    unfinished = read_run_log(args.out / RUNS_FILE).trials
    failed = sum(1 for record in unfinished if record.status != "ok")
    if failed:
        print(f"{failed} trials failed or are unjudged; run the same command again to retry them", file=sys.stderr)
        return 3
    return code


def _list(args: argparse.Namespace, stdout: TextIO) -> int:
    from replay.pasbench import load_release, load_safe_controls, select
    from replay.streams import decode_frames, text_observations

    release = select(load_release(args.data, modality=args.modality), limit=args.limit)
    scenarios = list(release.scenarios)
    if args.safe_controls:
        scenarios += load_safe_controls(args.safe_controls_dir, limit=args.limit)
    rows: list[tuple[int, dict[str, Any]]] = []
    for scenario in scenarios:
        if scenario.modality == "image":
            entries = len(decode_frames(scenario))
        else:
            entries = len(text_observations(scenario, "stream", interval_s=1.0))
        rows.append((_order(scenario.modality, scenario.safe, scenario.index),
                     {"id": scenario.id, "modality": scenario.modality, "entries": entries,
                      "severity": scenario.severity}))
    for skipped in release.skipped:
        rows.append((_order(skipped.modality, False, skipped.index),
                     {"id": skipped.id, "modality": skipped.modality, "entries": None,
                      "severity": skipped.severity, "missing": skipped.reason}))
    for _, row in sorted(rows, key=lambda item: item[0]):
        print(json.dumps(row, ensure_ascii=False), file=stdout)
    return 0


def _order(modality: str, safe: bool, index: int) -> int:
    group = 2 if safe else (0 if modality == "text" else 1)
    return group * 1_000_000 + index


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m replay.cli pasbench ...`: the replay commands without the rest of `monitor`."""
    parser = argparse.ArgumentParser(prog="monitor", description="PaSBench replay and scoring.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_replay_parser(commands)
    args = parser.parse_args(["replay", *(argv if argv is not None else sys.argv[1:])])
    return run_replay(args)


if __name__ == "__main__":
    raise SystemExit(main())
