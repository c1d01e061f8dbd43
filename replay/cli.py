"""`monitor replay pasbench | history | score | compare | tune`: run the benchmark or the home's own history
through the monitor, re-score a run log, compare scored runs side by side, and sweep an [assessment] setting.

Wired into `monitor` by monitor/cli.py (`add_replay_parser(commands)` and
`run_replay(args)`); also runnable alone as `python -m replay.cli ...`.

Exit codes: 0 done and complete; 1 configuration, data or model error; 3 incomplete:
trials missing, failed or unjudged, or no risk sample scored, or segments of a history
failed or lines of it could not be read (they are named; the rest was replayed) (run the
same command again to retry only those); 4 (tune) no setting fits the false-alarm budget,
nothing recommended.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from monitor.core.errors import ConfigError, MonitorError, report

if TYPE_CHECKING:
    from replay.score import UnjudgedPolicy

JUDGE_KEY_ENV = "MONITOR_JUDGE_API_KEY"
JUDGE_KEY_SECRET = "judge_api_key"  # noqa: S105 (a file name in the secrets dir, not a secret)


def add_replay_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `replay pasbench | score | compare | tune` to a parent's subparsers; return the `replay` parser."""
    replay: argparse.ArgumentParser = subparsers.add_parser(
        "replay", help="replay a benchmark through the monitor, and score runs")
    commands = replay.add_subparsers(dest="replay_command", required=True)

    run = commands.add_parser("pasbench", help="run PaSBench scenarios through the pipeline (or --list them)")
    run.add_argument("--out", type=Path, help="output folder: runs.jsonl, caches, scores.json, report.md/.html")
    run.add_argument("--list", action="store_true", help="print one JSON line per scenario and exit")
    run.add_argument("--cache", type=Path, help="response cache file (default OUT/cache.jsonl)")
    _run_options(run)
    _backend_option(run)
    _common(run)

    history = commands.add_parser(
        "history", help="re-assess the home's recorded windows with a candidate model, prompt or strategy, "
                        "and score it on the home's feedback (docs/history.md)")
    history.add_argument("--from", dest="source", type=Path, required=True, metavar="STATE_OR_FILE",
                         help="a state dir, a history folder, or one history file (YYYY-MM-DD.jsonl)")
    history.add_argument("--out", type=Path, required=True,
                         help="output folder: runs.jsonl, cache.jsonl, labels.json, scores.json, report.md/.html")
    history.add_argument("--config", type=Path,
                         help="the candidate's config ([model], [assessment], [[zones]], [alerts], [keyframes]); "
                              "default: the built-in defaults and MONITOR_* variables")
    history.add_argument("--since", help="only windows from this time: ISO 8601, epoch seconds, or a duration ago")
    history.add_argument("--until", help="only windows before this time")
    history.add_argument("--zone", action="append", default=[], help="only this zone (repeatable)")
    history.add_argument("--feedback", type=Path, help="the feedback store (default: the one beside the history)")
    history.add_argument("--cache", type=Path, help="response cache file (default OUT/cache.jsonl)")
    history.add_argument("--concurrency", type=_positive, help="segments at once (default: model.concurrency)")
    history.add_argument("--fresh", action="store_true",
                         help="start over: set an existing OUT/runs.jsonl aside (renamed, kept) instead of resuming it")
    _backend_option(history)
    _common(history)

    score = commands.add_parser("score", help="re-score a run log (never calls a model)")
    score.add_argument("--runs", type=Path, required=True, help="OUT/runs.jsonl of a replay")
    score.add_argument("--out", type=Path, required=True, help="where to write scores.json and the reports")
    _unjudged_option(score)
    _common(score)

    compare = commands.add_parser("compare", help="scored runs side by side (strategies, models, thresholds)")
    compare.add_argument("runs", type=Path, nargs="+", metavar="OUT", help="run folders holding scores.json")
    compare.add_argument("--out", type=Path, help="also write the table to this .md file (and .html next to it)")
    _common(compare)

    tune = commands.add_parser("tune", help="sweep one [assessment] setting; recommend the most robust value "
                                            "within a false-alarm budget")
    tune.add_argument("--out", type=Path, required=True,
                      help="folder: one run per value (OUT/NAME=V/), shared caches, compare.md, recommended.toml")
    tune.add_argument("--param", required=True, metavar="NAME=V1,V2,...",
                      help="a dotted key under [assessment] and its values, e.g. vote.m=1,2,3 or "
                           "temporal.threshold=0.8,1.2,1.6")
    tune.add_argument("--max-false-alarm", type=_share, default=0.05,
                      help="false-alarm budget: share of safe-control trials with an alert (default 0.05)")
    _run_options(tune)
    _common(tune)
    return replay


def _run_options(run: argparse.ArgumentParser) -> None:
    """What `pasbench` and `tune` both take: data, protocol, trials, config, pacing, judge."""
    run.add_argument("--data", type=Path, required=True, help="the release folder (text/image JSON, severity.json)")
    run.add_argument("--preset", choices=["paper"], default=None,
                     help="paper: follow the paper wherever it says what it did (protocol, 16 trials, sampling, "
                          "one picture per image sample, its judge rule); see docs/replay.md")
    run.add_argument("--protocol", choices=["paper", "stream"], default=None, help="default paper")
    run.add_argument("--modality", choices=["text", "image", "all"], default="all")
    run.add_argument("--trials", type=_positive, default=None, help="trials per sample (default 16, as the paper)")
    run.add_argument("--image-input", choices=["frames", "composite"], default=None,
                     help="an image sample as its 2-3 panels split into frames (default) or as the one composite "
                          "picture (as the paper)")
    run.add_argument("--limit", type=_positive, help="only the first K records of each modality (and K safe logs)")
    run.add_argument("--config", type=Path, help="monitor config (model, windows, alerts); sources are ignored")
    run.add_argument("--concurrency", type=_positive,
                     help="model calls at once (default: model.concurrency); twice as many trials are in flight")
    run.add_argument("--speed", type=float, default=0.0,
                     help="stream protocol: entries every interval/speed s; 0 (default) = lockstep, as fast as "
                          "possible and deterministic")
    run.add_argument("--interval", type=float, default=2.0, help="stream seconds between entries (default 2.0)")
    run.add_argument("--no-safe-controls", dest="safe_controls", action="store_false",
                     help="do not run the bundled safe logs (no false-alarm measure)")
    run.add_argument("--safe-controls", "--safe-controls-dir", dest="safe_controls_path", type=Path,
                     metavar="PATH", help="other safe logs: a folder of *.log files, or a release-format JSON file "
                                          "(an array of records with 'input')")
    run.add_argument("--fresh", action="store_true",
                     help="start over: set an existing OUT/runs.jsonl aside (renamed, kept) instead of resuming it")
    run.add_argument("--judge-base-url", help="OpenAI-compatible judge endpoint (default: offline approximate judge)")
    run.add_argument("--judge-model", help="judge model name, e.g. gpt-4.1")
    run.add_argument("--judge-api-key-file", type=Path,
                     help=f"file holding the judge key (else ${JUDGE_KEY_ENV}, else the secrets dir)")
    run.add_argument("--judge-concurrency", type=_positive, default=8)
    _unjudged_option(run)


def _unjudged_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unjudged", choices=["exclude", "incorrect"], default="exclude",
                        help="trials the judge failed on: left out of the scores (exclude, default) or counted as "
                             "incorrect; recorded in scores.json either way, and the run is reported incomplete")


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {value}")
    return value


def _backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", metavar="NAME",
                        help="replay with this backend of the config's [model] chain alone (model.name or a "
                             "model.fallbacks[].name), e.g. to measure a fallback before it is needed "
                             "(docs/failover.md); default: the first backend, [model] itself")


def _one_backend(settings: Any, name: str | None) -> Any:
    """`settings` with the named backend of its model chain alone: a replay measures one model, never a failover.

    Only that backend's key is read (`settings` were loaded without the keys): another's may be missing here.
    """
    model = settings.model
    try:
        chosen = model.only(name or model.display_name) if name is not None or model.fallbacks else model
    except ValueError as exc:
        raise ConfigError([f"--backend: {exc}"]) from None
    from monitor.core.files import secrets_dir

    try:
        chosen.resolve_api_key(os.environ, secrets_dir())
    except ValueError as exc:
        raise ConfigError([f"model backend '{chosen.display_name}': {exc}"]) from None
    return settings.model_copy(update={"model": chosen})


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
    from monitor.core.logging import configure_logging

    stdout = out if out is not None else sys.stdout
    configure_logging(args.log_level, "auto")
    try:
        if args.replay_command == "score":
            return _score(args.runs, args.out, stdout, unjudged=args.unjudged)
        if args.replay_command == "history":
            return _history(args, stdout)
        if args.replay_command == "compare":
            return _compare(args.runs, args.out, stdout)
        if args.replay_command == "tune":
            return _tune(args, stdout)
        if args.list:
            return _list(args, stdout)
        return _pasbench(args, stdout)
    except MonitorError as exc:
        return report(exc)
    except KeyboardInterrupt:
        print("interrupted: finished trials are in the run log (no scores were written for it: `monitor replay "
              "score` scores what it holds); run the same command to resume", file=sys.stderr)
        return 130


EXIT_INCOMPLETE = 3


def _score(runs: Path, out_dir: Path, stdout: TextIO, *, unjudged: UnjudgedPolicy = "exclude") -> int:
    """Score a run log into `out_dir`; exit 3 when the run is incomplete (the scores then say so first)."""
    from replay.history_log import is_history_log

    _check_beside(runs, out_dir)
    if is_history_log(runs):
        return _score_history(runs, out_dir, stdout)
    from replay.errors import RunLogError
    from replay.report import summary_lines, write_reports
    from replay.runlog import read_run_log
    from replay.score import score_run

    data = read_run_log(runs)
    try:
        scores = score_run(data, unjudged=unjudged)
    except RunLogError as exc:
        raise RunLogError(f"{runs}: {exc}") from None
    # Which run log these scores are of, and how much of it they read.
    scores["run_log"] = {"path": str(runs.resolve()), "headers": len(data.headers), "trial_lines": len(data.lines)}
    paths = write_reports(scores, out_dir)
    for line in summary_lines(scores):
        print(line, file=stdout)
    print(_headline(scores), file=stdout)
    print("wrote " + ", ".join(str(p) for p in paths), file=stdout)
    return 0 if scores["complete"] else EXIT_INCOMPLETE


def _check_beside(runs: Path, out_dir: Path) -> None:
    """Refuse to write scores beside another run log: a folder's scores are always those of its own run log."""
    from replay.errors import RunLogError

    # The run log a folder's scores belong to (both replays name it so; a set-aside .old one is not it).
    beside = out_dir / "runs.jsonl"
    if beside.is_file() and runs.is_file() and not beside.samefile(runs):
        raise RunLogError(f"{out_dir}: holds another run log ({beside}); scores of {runs} written there would sit "
                          "beside a run they do not describe: use another --out")


def _history(args: argparse.Namespace, stdout: TextIO) -> int:
    """Replay the history into OUT, score it; 3 when segments failed or history lines could not be read."""
    from monitor.core.aio import run_loop
    from monitor.history.times import parse_time
    from replay.history import RUNS_FILE, HistoryOptions, inheritance_notes, run_history

    settings = _one_backend(_settings(args.config, secrets=False), args.backend)
    for note in inheritance_notes(settings):
        print(note, file=sys.stderr)
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise ConfigError([f"replay history: {exc}"]) from None
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    options = HistoryOptions(concurrency=args.concurrency or settings.model.concurrency, progress=progress,
                             fresh=args.fresh)
    summary, history = run_loop(run_history(settings=settings, source=args.source, out=args.out, options=options,
                                            since=since, until=until, zones=args.zone, feedback=args.feedback,
                                            cache_path=args.cache, since_text=args.since, until_text=args.until))
    if options.set_aside is not None:
        print(f"--fresh: the earlier run log was kept as {options.set_aside}", file=sys.stderr)
    for note in options.notes:
        print(note, file=sys.stderr)
    print(f"segments: {summary.ran} run now, {summary.already_done} already done; windows {summary.windows}; "
          f"model calls {summary.calls} ({summary.cached_calls} cached); tokens {summary.tokens}; "
          f"{summary.wall_s:.1f} s", file=sys.stderr)
    code = _score_history(args.out / RUNS_FILE, args.out, stdout)
    for problem in history.problems:
        print(f"error: {problem} (not replayed)", file=sys.stderr)
    if summary.failed:
        print(f"{summary.failed} segments failed; run the same command again to retry them", file=sys.stderr)
    return 3 if summary.failed or history.problems else code


def _score_history(runs: Path, out_dir: Path, stdout: TextIO) -> int:
    from monitor.core.jsonio import MAX_FILE_BYTES, loads_bounded
    from monitor.history.feedback import FeedbackEntry
    from replay.history import LABELS_FILE
    from replay.history_log import read_history_log
    from replay.history_report import completeness_line, headline, write_history_reports
    from replay.history_score import score_history

    labels_file = runs.parent / LABELS_FILE
    try:
        labels = [FeedbackEntry.from_json(item)
                  for item in loads_bounded(labels_file.read_bytes(), what="labels snapshot", max_bytes=MAX_FILE_BYTES)]
    except FileNotFoundError:
        labels = []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"{labels_file}: not a labels snapshot of a history replay ({exc})"]) from None
    scores = score_history(read_history_log(runs), labels)
    paths = write_history_reports(scores, out_dir)
    print(completeness_line(scores), file=stdout)
    print(headline(scores), file=stdout)
    print("wrote " + ", ".join(str(p) for p in paths[:3]), file=stdout)
    return 0 if scores["complete"] else EXIT_INCOMPLETE


def _headline(scores: dict[str, Any]) -> str:
    from replay.report import pct_ci, reason_assessed

    judge = scores["judge"]
    label = f" (judge {judge.get('model')})"
    if judge.get("approximate"):
        checks = "" if not judge.get("criteria") else (
            ": risk and reason by embedding similarity)" if reason_assessed(judge) else
            ": risk only, reason not assessed)")
        label = " (APPROXIMATE offline judge" + (checks or ")")
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


def _settings(config: Path | None, *, secrets: bool = True) -> Any:
    from monitor.settings import load_settings

    return load_settings(config, secrets=secrets)


def _judge_key(args: argparse.Namespace) -> str | None:
    if args.judge_api_key_file is not None:
        try:
            return str(args.judge_api_key_file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError([f"{args.judge_api_key_file}: cannot read the judge key: {exc.strerror}"]) from None
    if os.environ.get(JUDGE_KEY_ENV):
        return os.environ[JUDGE_KEY_ENV]
    from monitor.core.files import secrets_dir

    folder = secrets_dir()
    if folder is not None and (folder / JUDGE_KEY_SECRET).is_file():
        return (folder / JUDGE_KEY_SECRET).read_text(encoding="utf-8").strip()
    return None


def _pasbench(args: argparse.Namespace, stdout: TextIO) -> int:
    if args.out is None:
        raise ConfigError(["replay pasbench: --out is required (unless --list)"])
    return _replay_into(args, _one_backend(_settings(args.config, secrets=False), args.backend), args.out, stdout,
                        cache=args.cache)


def _replay_into(args: argparse.Namespace, settings: Any, out_dir: Path, stdout: TextIO, *,
                 cache: Path | None = None, judge_cache: Path | None = None) -> int:
    """Run the replay the options describe with `settings` into `out_dir`, then score it."""
    from monitor.core.aio import run_loop
    from replay.preset import check_strategy, judge_note, resolve
    from replay.runner import RUNS_FILE, JudgeSpec, ReplayOptions, run_pasbench

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    resolved = resolve(preset=args.preset or "none", protocol=args.protocol, trials=args.trials,
                       image_input=args.image_input, judge_endpoint=bool(args.judge_base_url),
                       safe_controls=args.safe_controls)
    check_strategy(args.preset or "none", settings.assessment)
    for note in resolved.notes:
        print(note, file=sys.stderr)
    print(judge_note(resolved.judge_rule, endpoint=args.judge_base_url, model=args.judge_model), file=sys.stderr)
    if resolved.temperature is not None:
        settings = settings.model_copy(
            update={"model": settings.model.model_copy(update={"temperature": resolved.temperature})})
    try:
        options = ReplayOptions(
            protocol=resolved.protocol, modality=args.modality, trials=resolved.trials,
            concurrency=args.concurrency or settings.model.concurrency, speed=args.speed,
            interval_s=args.interval, safe_controls=args.safe_controls, progress=progress, limit=args.limit,
            image_input=resolved.image_input, preset=args.preset or "none", fresh=args.fresh,
        )
    except ValueError as exc:
        raise ConfigError([f"replay {args.replay_command}: {exc}"]) from None
    judge = JudgeSpec(base_url=args.judge_base_url, model=args.judge_model, api_key=_judge_key(args),
                      concurrency=args.judge_concurrency, rule=resolved.judge_rule)
    summary = run_loop(run_pasbench(settings=settings, data_dir=args.data, out=out_dir, options=options,
                                    judge=judge, limit=args.limit, cache_path=cache,
                                    safe_controls_dir=args.safe_controls_path, judge_cache_path=judge_cache))
    if summary.set_aside is not None:
        print(f"--fresh: the earlier run log was kept as {summary.set_aside}", file=sys.stderr)
    print(f"trials: {summary.ran} run now, {summary.already_done} already done; model calls {summary.calls} "
          f"({summary.cached_calls} cached); tokens {summary.prompt_tokens}+{summary.completion_tokens}; "
          f"{summary.wall_s:.1f} s", file=sys.stderr)
    code = _score(out_dir / RUNS_FILE, out_dir, stdout, unjudged=args.unjudged)
    if code == EXIT_INCOMPLETE:
        print("the run is incomplete (see the first lines above); run the same command again to retry what is "
              "missing, failed or unjudged", file=sys.stderr)
    return code


def _compare(runs: Sequence[Path], out_file: Path | None, stdout: TextIO) -> int:
    from replay.compare import load_scores, render_compare_markdown, write_compare

    scored = [load_scores(path) for path in runs]
    print(render_compare_markdown(scored), file=stdout)
    if out_file is not None:
        paths = write_compare(scored, out_file)
        print("wrote " + ", ".join(str(p) for p in paths), file=stdout)
    return 0


def _tune(args: argparse.Namespace, stdout: TextIO) -> int:
    """Run the replay once per value into OUT/NAME=V/ (shared caches), compare, recommend."""
    from replay.appendfile import private_folder, write_private
    from replay.compare import load_scores, write_compare
    from replay.preset import check_strategy
    from replay.runner import CACHE_FILE, JUDGE_CACHE_FILE
    from replay.tune import (
        COMPARE_FILE,
        RECOMMENDED_FILE,
        Candidate,
        apply_param,
        assessment_toml,
        parse_param,
        recommend,
    )

    param = parse_param(args.param)
    settings = _settings(args.config)
    applied = [apply_param(settings.assessment, param.name, value) for value in param.values]  # validate all first
    for setting in applied:
        check_strategy(args.preset or "none", setting.assessment)
    out: Path = args.out
    private_folder(out)
    # The sweep's comparison and recommendation are written from its runs at the end: none from an
    # earlier sweep may sit beside runs that are about to change (an interrupted sweep leaves none).
    for stale in (out / COMPARE_FILE, (out / COMPARE_FILE).with_suffix(".html"), out / RECOMMENDED_FILE):
        stale.unlink(missing_ok=True)
    candidates: list[Candidate] = []
    worst = 0
    for index, setting in enumerate(applied):
        folder = param.folder(index)
        for note in setting.notes:
            print(f"{folder}: {note}", file=sys.stderr)
        print(f"== {folder}", file=stdout)
        code = _replay_into(args, settings.model_copy(update={"assessment": setting.assessment}), out / folder,
                            stdout, cache=out / CACHE_FILE, judge_cache=out / JUDGE_CACHE_FILE)
        worst = max(worst, code)
        candidates.append(Candidate(param.raw[index], setting.assessment, load_scores(out / folder, name=folder)))
    paths = write_compare([c.run for c in candidates], out / COMPARE_FILE, title=f"Tuning {param.name}")
    print(f"wrote {', '.join(str(p) for p in paths)}", file=stdout)
    result = recommend(candidates, max_false_alarm=args.max_false_alarm)
    for line in result.lines:
        print(line, file=stdout)
    recommended = out / RECOMMENDED_FILE
    if result.chosen is None:
        recommended.unlink(missing_ok=True)  # a stale recommendation from an earlier sweep would mislead
        return worst or 4
    chosen = result.chosen
    text = assessment_toml(chosen.assessment, comment=[
        f"Recommended by `monitor replay tune --param {args.param}` (false-alarm budget "
        f"{args.max_false_alarm:g}): {param.name}={chosen.value}, strategy {chosen.label}.",
        "Merge this [assessment] section into your monitor config (replace the one there, if any).",
    ])
    write_private(recommended, text)
    print(f"wrote {recommended}:", file=stdout)
    print(text, file=stdout, end="")
    return worst


def _list(args: argparse.Namespace, stdout: TextIO) -> int:
    from replay.pasbench import TRUNCATED, load_release, load_safe_controls, select
    from replay.preset import resolve
    from replay.streams import decode_frames, text_observations

    image_input = resolve(preset=args.preset or "none", protocol=args.protocol, trials=args.trials,
                          image_input=args.image_input).image_input
    release = select(load_release(args.data, modality=args.modality), limit=args.limit)
    scenarios = list(release.scenarios)
    if args.safe_controls:
        scenarios += load_safe_controls(args.safe_controls_path, limit=args.limit)
    rows: list[tuple[int, dict[str, Any]]] = []
    for scenario in scenarios:
        if scenario.modality == "image":
            entries = 1 if image_input == "composite" else len(decode_frames(scenario))
        else:
            entries = len(text_observations(scenario, "stream", interval_s=1.0))
        row: dict[str, Any] = {"id": scenario.id, "record": scenario.content_id, "modality": scenario.modality,
                               "entries": entries, "severity": scenario.severity}
        if scenario.truncated:
            row["truncated"] = TRUNCATED
        rows.append((_order(scenario.modality, scenario.safe, scenario.index), row))
    for skipped in release.skipped:
        rows.append((_order(skipped.modality, False, skipped.index),
                     {"id": skipped.id, "record": skipped.content_id, "modality": skipped.modality, "entries": None,
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
    try:
        code = run_replay(args)
        sys.stdout.flush()  # here, not at exit: a reader that went away is then seen below
        return code
    except BrokenPipeError:  # `python -m replay.cli compare ... | head`: the reader is gone, end quietly
        from monitor.core.pipes import reader_gone

        return reader_gone()


if __name__ == "__main__":
    raise SystemExit(main())
