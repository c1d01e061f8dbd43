"""`monitor replay history`: re-assess the home's recorded windows with a candidate model, prompt or strategy.

The history is read as recorded (monitor/history/record.py); a line that cannot be read
is reported with its file and line number, and the rest is still replayed. Windows are
grouped into segments, one zone on one UTC day. Each segment runs through the monitor's
own Pipeline, like a PaSBench stream: a `HistoryStream` emits the new observations of
each recorded window in turn (lockstep: the next only once the previous window has
settled), so the zone's rolling window holds what the recorded model saw, and
strategies that keep state across windows (temporal) see the same succession. The
alert lifecycle runs on the recorded clock. Model calls go through the response cache
(trial 0); finished segments are in the run log and a re-run resumes after them.

What the candidate did beside what the recorded model did, per window, is written to
``OUT/runs.jsonl``; the feedback labels are snapshot to ``OUT/labels.json``; scoring and
the reports are pure functions of those two files (replay/history_score.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from monitor.alerts import AlertEvent, AlertManager
from monitor.assess.context import Note, with_feedback_context
from monitor.assess.prompt import time_label
from monitor.assess.settings import FeedbackContextSettings
from monitor.assess.strategies import build_zone_assessor
from monitor.assess.verdict import Verdict
from monitor.backends import ModelBackend
from monitor.core.aio import leaf_errors
from monitor.core.errors import FatalBackendError, MonitorError
from monitor.core.text import shorten
from monitor.history.context import select_notes
from monitor.history.feedback import FeedbackEntry
from monitor.history.record import WindowRecord
from monitor.history.times import utc_label
from monitor.observer import Settled
from monitor.pipeline import Pipeline
from monitor.settings import Settings
from monitor.stats import Stats
from monitor.windows import Window, WindowSettings
from replay.appendfile import write_private
from replay.cache import CachingBackend, ResponseCache
from replay.errors import ReplayError, RunLogError
from replay.fingerprint import HISTORY_SECTIONS, key_differences, settings_differences, settings_fingerprint
from replay.history_log import HistoryHeader, HistoryLogWriter, SegmentRecord, SegmentStatus, read_history_log
from replay.history_source import (
    History,
    Replayed,
    Segment,
    feedback_candidates,
    load_history,
    load_labels,
    observation_key,
    rebuild,
    segments,
)
from replay.progress import progress_bar
from replay.report import remove_reports
from replay.runner import model_identity, set_aside
from replay.streams import TrialRecorder
from sensors.types import Emit, InputHealth

log = structlog.get_logger(__name__)
RUNS_FILE = "runs.jsonl"
CACHE_FILE = "cache.jsonl"
LABELS_FILE = "labels.json"
_DAY_S = 86400.0
_OBSERVATION_CHARS = 300


# --------------------------------------------------------------------------- one segment through the pipeline


@dataclass
class Position:
    """Where a segment's replay is: the recorded time of the current window and the alert it belonged to."""

    now: float = 0.0
    alert_id: str | None = None

    def clock(self) -> float:
        return self.now


class ReplayAlerts(AlertManager):
    """The alert lifecycle on the recorded clock: alerts not confirmed within the TTL end before each decision."""

    def __init__(self, settings: Any, *, clock: Callable[[], float]) -> None:
        super().__init__(settings, clock=clock)
        self.ended: list[AlertEvent] = []

    def decide(self, window: Window, verdict: Verdict, *, assessed: bool = True) -> AlertEvent | None:
        # Live, a task ends stale alerts every second; here time moves only between windows.
        self.ended.extend(self.expire())
        return super().decide(window, verdict, assessed=assessed)


class HistoricalNotes:
    """Feedback notes as the labels snapshot gives them, never about the recorded window's own alert."""

    def __init__(self, labels: Sequence[FeedbackEntry], position: Position) -> None:
        self.labels = list(labels)
        self.position = position

    async def notes(self, zone: str, at: float, settings: FeedbackContextSettings) -> tuple[Note, ...]:
        own = (self.position.alert_id,) if self.position.alert_id else ()
        return select_notes(self.labels, zone=zone, at=at, settings=settings, exclude=own)


class HistoryStream:
    """An ObservationSource that replays a segment window by window, in lockstep with the pipeline."""

    def __init__(self, windows: Sequence[Replayed], *, source: str, position: Position, recorder: TrialRecorder,
                 on_window: Callable[[], None] | None = None) -> None:
        self.id = source
        self.windows = list(windows)
        self.position = position
        self.recorder = recorder
        self.on_window = on_window
        self.emitted: set[tuple[Any, ...]] = set()
        self.assessed: list[int] = []  # index in `windows` of each window the pipeline assessed, in order
        self.ended = False

    async def run(self, emit: Emit) -> None:
        try:
            for index, window in enumerate(self.windows):
                new = [o for o in window.observations if observation_key(o) not in self.emitted]
                if new:
                    self.position.now, self.position.alert_id = window.record.at, window.record.alert_id
                    for observation in new:  # no await yields between emits: one window holds them all
                        self.emitted.add(observation_key(observation))
                        await emit(observation)
                    self.assessed.append(index)
                    await self.recorder.wait_settled(len(self.assessed))
                if self.on_window is not None:
                    self.on_window()
        finally:
            self.ended = True

    def health(self) -> InputHealth:
        return InputHealth(self.id, "offline" if self.ended else "online", entries=len(self.emitted))


# --------------------------------------------------------------------------- the runner


@dataclass(slots=True)
class HistoryOptions:
    """How to replay a history: concurrency (segments at once), the progress bar, --fresh; and what the
    run had to say before it started (`set_aside`: where --fresh put the earlier run log; `notes`)."""

    concurrency: int = 2
    progress: bool = False
    fresh: bool = False
    set_aside: Path | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class HistorySummary:
    """What one invocation did (the scores come from the run log)."""

    planned_segments: int = 0
    already_done: int = 0
    ran: int = 0
    windows: int = 0
    failed: int = 0
    calls: int = 0
    cached_calls: int = 0
    tokens: int = 0
    problems: int = 0
    wall_s: float = 0.0


class HistoryRunner:
    """Re-assesses every pending segment and appends each finished one to the run log."""

    def __init__(self, *, settings: Settings, backend: ModelBackend, history: History,
                 labels: Sequence[FeedbackEntry], out: Path, options: HistoryOptions,
                 cache: ResponseCache | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.history = history
        self.labels = list(labels)
        self.out = out
        self.options = options
        self.cache = cache if cache is not None else ResponseCache(out / CACHE_FILE)
        self.identity = model_identity(settings.model)
        self.summary = HistorySummary()
        self._slots = asyncio.Semaphore(options.concurrency)
        self._writer: HistoryLogWriter | None = None
        self._fatal: FatalBackendError | None = None
        self._progress: Any = None

    async def run(self, header: HistoryHeader) -> HistorySummary:
        started = time.perf_counter()
        path = self.out / RUNS_FILE
        existing = read_history_log(path, missing_ok=True)
        header.resumed = bool(existing.headers)
        for previous in existing.headers:
            _check_compatible(previous, header, path)
        remove_reports(self.out)  # re-written from the run log at the end; none from before may sit beside it
        self._writer = HistoryLogWriter(path)
        self._writer.append(header)
        planned = segments(self.history.records)
        pending = [s for s in planned if s.id not in existing.finished]
        self.summary.planned_segments, self.summary.already_done = len(planned), len(planned) - len(pending)
        self.summary.problems = len(self.history.problems)
        self._progress = progress_bar(sum(len(s.records) for s in pending), enabled=self.options.progress,
                                      desc="history", unit="window")
        try:
            async with asyncio.TaskGroup() as group:
                for segment in pending:
                    group.create_task(self._job(segment), name=f"segment:{segment.id}")
            if self._fatal is not None:
                raise self._fatal
        except BaseExceptionGroup as group_error:
            expected = next((e for e in leaf_errors(group_error) if isinstance(e, MonitorError)), None)
            if expected is None:
                raise
            raise expected from None
        finally:
            self._progress.close()
            self.summary.wall_s = time.perf_counter() - started
        return self.summary

    async def _job(self, segment: Segment) -> None:
        # As in the PaSBench runner: a fatal model error stops the run, segments in flight finish.
        async with self._slots:
            if self._fatal is not None:
                return
            try:
                record = await self._segment(segment)
            except FatalBackendError as exc:
                self._fatal = self._fatal or exc
                return
        assert self._writer is not None
        self._writer.append(record)
        self._account(record)

    async def _segment(self, segment: Segment) -> SegmentRecord:
        replayed = [rebuild(record, self.history) for record in segment.records]
        backend = CachingBackend(self.backend, self.cache, trial=0, identity=self.identity)
        position, recorder, stats = Position(), TrialRecorder(), Stats()
        assessor = with_feedback_context(
            build_zone_assessor(backend, self.settings.assessment, self.settings.zones, self.settings.keyframes),
            HistoricalNotes(self.labels, position), self.settings.assessment, self.settings.zones,
            clock=position.clock)
        stream = HistoryStream([w for w in replayed if w.observations], source=f"history:{segment.zone}",
                               position=position, recorder=recorder, on_window=lambda: self._progress.update(1))
        pipeline = Pipeline(
            sources=[(stream, segment.zone)], assessor=assessor, sinks=[], windows=self._windows(segment),
            alerts=ReplayAlerts(self.settings.alerts, clock=position.clock), observers=[stats, recorder],
            exit_when_sources_end=True, shutdown_timeout_s=self.settings.service.shutdown_timeout_s,
            clock=position.clock)  # windows age on the recorded time, as they did when recorded
        # Observations keep their own source ids (they are in the prompt): all of them feed this zone.
        pipeline.zone_of.update({o.source: segment.zone for w in replayed for o in w.observations})
        started = time.perf_counter()
        await pipeline.run()
        outcomes = dict(zip(stream.assessed, recorder.settled, strict=False))
        fatal = [s.error for s in recorder.settled if isinstance(s.error, FatalBackendError)]
        if fatal:
            raise fatal[0]
        self._progress.update(len(replayed) - len(stream.windows))  # the windows with nothing to replay
        windows = _window_results(replayed, stream.windows, outcomes)
        # A malformed reply is what the live monitor also gets (no warning): it counts. Other errors
        # (timeouts, connection failures) make the segment fail, and a re-run does it again.
        errors = [w["candidate"]["error_message"] for w in windows
                  if w.get("candidate", {}).get("error") not in (None, "malformed")]
        status: SegmentStatus = "error" if errors else "ok"
        return SegmentRecord(
            id=segment.id, zone=segment.zone, day=segment.day, status=status, windows=windows,
            usage=_usage(backend), timings={"monitor_s": round(time.perf_counter() - started, 4)},
            error="; ".join(errors[:3]) or None)

    def _windows(self, segment: Segment) -> WindowSettings:
        """The bounds the recorded windows had (the zone's rolling window then holds what they held)."""
        recorded = segment.records[0].windows
        known: dict[str, Any] = {k: recorded[k] for k in ("max_age_s", "max_entries", "max_frames") if k in recorded}
        return self.settings.windows.model_copy(update={**known, "min_interval_s": 0.0})

    def _account(self, record: SegmentRecord) -> None:
        summary = self.summary
        summary.ran += 1
        summary.failed += int(record.status != "ok")
        summary.windows += len(record.windows)
        summary.calls += int(record.usage.get("calls", 0))
        summary.cached_calls += int(record.usage.get("cached_calls", 0))
        summary.tokens += int(record.usage.get("prompt_tokens", 0)) + int(record.usage.get("completion_tokens", 0))
        self._progress.set_postfix(calls=summary.calls, cached=summary.cached_calls, refresh=False)


def _window_results(replayed: Sequence[Replayed], streamed: Sequence[Replayed],
             outcomes: dict[int, Settled]) -> list[dict[str, Any]]:
    """Each recorded window beside the candidate's outcome (or why it was not replayed)."""
    settled_by_record = {id(streamed[index].record): outcome for index, outcome in outcomes.items()}
    out = []
    for window in replayed:
        record = window.record
        entry: dict[str, Any] = {"window": record.window, "at": record.at, "recorded": _recorded(record),
                                 "frames_missing": window.frames_missing}
        outcome = settled_by_record.get(id(record))
        if not window.observations:
            entry["skipped"] = "nothing to replay: its camera frames were not recorded (history.record_frames)"
        elif outcome is None:
            entry["skipped"] = "no new observation since the window before it"
        else:
            entry["candidate"] = _candidate(outcome)
            entry["reconstructed"] = {observation_key(o) for o in outcome.window.observations} == window.keys
        if "candidate" in entry and _disagree(entry):
            entry["observations"] = _quoted(record)
        out.append(entry)
    return out


def _recorded(record: WindowRecord) -> dict[str, Any]:
    verdict = record.verdict or {}
    usage = record.usage or {}
    return {"danger": record.danger, "warned": record.warned, "event": (record.alert or {}).get("type"),
            "alert_id": record.alert_id, "hazard": verdict.get("hazard", ""), "severity": verdict.get("severity"),
            "reason": shorten(verdict.get("reason", ""), 400),
            "error": (record.error or {}).get("kind"), "model": record.model.get("model"),
            "strategy": record.strategy_label, "usage": _cost(usage)}


def _candidate(outcome: Settled) -> dict[str, Any]:
    verdict, event = outcome.verdict, outcome.event
    assessment = verdict.assessment if verdict else None
    return {
        "danger": bool(assessment and assessment.danger),
        "warned": event is not None and event.type in ("new", "update"),
        "event": event.type if event else None, "alert_id": event.alert.id if event else None,
        "hazard": assessment.hazard if assessment else "", "severity": assessment.severity if assessment else None,
        "reason": shorten(assessment.reason, 400) if assessment else "",
        "error": outcome.error.kind if outcome.error else None,
        "error_message": f"{outcome.error.kind}: {shorten(outcome.error, 300)}" if outcome.error else None,
        "usage": _cost(verdict.usage.to_json()) if verdict else _cost({}),
    }


def _cost(usage: dict[str, Any]) -> dict[str, Any]:
    return {"calls": int(usage.get("calls", 0)), "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
            "latency_s": round(float(usage.get("latency_s", 0.0)), 4)}


def _disagree(entry: dict[str, Any]) -> bool:
    recorded, candidate = entry["recorded"], entry["candidate"]
    return bool(recorded["danger"] != candidate["danger"] or recorded["warned"] != candidate["warned"])


def _quoted(record: WindowRecord) -> list[str]:
    """The window's log entries as a person reads them: time and text, cut short."""
    lines = []
    for entry in record.observations:
        text = entry.behaviour or entry.environment or entry.text
        when = entry.clock or time_label(entry.ts)
        lines.append(shorten(f"[{when}] {entry.source}: {text}", _OBSERVATION_CHARS))
    lines += [f"[{time_label(f.ts)}] {f.source}: camera frame" + (f" ({'; '.join(f.facts)})" if f.facts else "")
              for f in record.camera]
    return lines


def _usage(backend: CachingBackend) -> dict[str, Any]:
    calls = backend.calls
    fresh = [c for c in calls if not c.cached]
    return {"calls": len(calls), "cached_calls": len(calls) - len(fresh),
            "prompt_tokens": sum(c.prompt_tokens for c in calls),
            "completion_tokens": sum(c.completion_tokens for c in calls),
            "spent_tokens": sum(c.prompt_tokens + c.completion_tokens for c in fresh),
            "model_latency_s": round(sum(c.model_latency_s for c in fresh), 4)}


_RESTART = "resume with the same options and config, start over with --fresh, or use another --out"


def _check_compatible(previous: HistoryHeader, current: HistoryHeader, path: Path) -> None:
    for name in ("source", "since", "until", "zones", "model", "strategy", "alerts"):
        old, new = getattr(previous, name), getattr(current, name)
        if old != new and isinstance(old, dict) and isinstance(new, dict):
            raise RunLogError(f"{path}: holds a replay with a different {name}; "
                              + "; ".join(key_differences(name, old, new)) + f". {_RESTART}")
        if old != new:
            raise RunLogError(f"{path}: holds a replay with a different {name} ({_shown(name, old)} there, "
                              f"{_shown(name, new)} now); {_RESTART}")
    if not previous.settings:
        raise RunLogError(f"{path}: was written before run logs recorded every setting of the pipeline, so it "
                          f"cannot be resumed safely; {_RESTART}")
    changes = settings_differences(previous.settings, current.settings)
    if changes:
        raise RunLogError(f"{path}: holds a replay under other settings; " + "; ".join(changes) + f". {_RESTART}")


def _shown(name: str, value: Any) -> str:
    """A header value as a message shows it: times as dates, never as seconds since the epoch."""
    if name in ("since", "until"):
        return "not set" if value is None else utc_label(float(value))
    return shorten(value, 300)


def resolved_window(existing: Sequence[HistoryHeader], *, since: float | None, until: float | None,
                    since_text: str | None, until_text: str | None) -> tuple[float | None, float | None]:
    """The --since / --until to use: those the run log resolved, when it was started with the same text.

    `--since 7d` means seven days before the run started, not before each resume: the window is fixed
    once, stored in the header, and a re-run of the same command resumes it.
    """
    first = existing[0] if existing else None
    if first is not None and since_text is not None and first.since_text == since_text:
        since = first.since
    if first is not None and until_text is not None and first.until_text == until_text:
        until = first.until
    return since, until


# --------------------------------------------------------------------------- the whole job


def _prepare(source: Path, out: Path, since: float | None, until: float | None, zones: Sequence[str],
             feedback: Path | None) -> tuple[History, list[FeedbackEntry]]:
    """Read the history and the labels (blocking); snapshot the labels into OUT/labels.json."""
    if feedback is not None and not feedback.is_file():
        raise ReplayError(f"{feedback}: no feedback store there (--feedback names the feedback.sqlite3 of a "
                          "state dir)")
    history = load_history(source, since=since, until=until, zones=zones)
    for problem in history.problems:
        log.error("history line not replayed", problem=problem)
    labels = load_labels(feedback or history.feedback)
    write_private(out / LABELS_FILE, json.dumps([entry.to_json() for entry in labels], indent=1) + "\n")
    return history, labels


def inheritance_notes(settings: Settings) -> list[str]:
    """What a candidate takes from the history and what from its own config, where it differs silently.

    The history records the window bounds each recorded window had (and its observations, frames and
    verdicts), not the home's `[alerts]`: a candidate config without an `[alerts]` section runs with the
    defaults, whatever the home ran with, and that changes when alerts end and so what is scored.
    """
    notes = ["candidate: the window bounds (max_age_s, max_entries, max_frames) come from the history, as the "
             "home recorded them; [model], [assessment], [keyframes], [alerts], [[zones]] and the other "
             "[windows] keys come from the candidate's config (its defaults where it has none)"]
    if "alerts" not in settings.model_fields_set:
        alerts = settings.alerts
        notes.append(f"[alerts]: not in the candidate's config: the defaults apply (dedup_ttl_s = "
                     f"{alerts.dedup_ttl_s:g} s, min_severity = {alerts.min_severity}, min_confidence = "
                     f"{alerts.min_confidence:g}), not the home's: copy the home's [alerts] into it to compare "
                     "like with like")
    return notes


def feedback_note(source: Path, history: History, feedback: Path | None, labels: int) -> str | None:
    """What a run says when it has no feedback store: where it looked, and that there are no labels."""
    if feedback is not None or history.feedback is not None:
        return None
    looked = " or ".join(str(p) for p in feedback_candidates(source))
    return (f"no feedback store found at {looked}; labels: {labels} (agreement and cost only, no labelled "
            "measures; --feedback FILE names another)")


async def run_history(*, settings: Settings, source: Path, out: Path, options: HistoryOptions,
                      since: float | None = None, until: float | None = None, zones: Sequence[str] = (),
                      feedback: Path | None = None, cache_path: Path | None = None,
                      since_text: str | None = None, until_text: str | None = None) -> tuple[HistorySummary, History]:
    """Read the history and its labels, start the candidate's backend, and replay every pending segment.

    `since_text` / `until_text` are the options as typed: with the same text as the run log's first
    header, the window it resolved then is used (a relative `7d` does not move on resume).
    """
    from monitor.backends import create_backend

    path = out / RUNS_FILE
    if options.fresh:
        options.set_aside = set_aside(path)
        remove_reports(out)
    existing = read_history_log(path, missing_ok=True).headers
    since, until = resolved_window(existing, since=since, until=until, since_text=since_text, until_text=until_text)
    header = HistoryHeader(
        source=str(source), since=since, until=until, since_text=since_text, until_text=until_text,
        zones=list(zones), model=model_identity(settings.model),
        strategy=settings.assessment.recorded(), strategy_label=settings.assessment.label,
        alerts=settings.alerts.model_dump(mode="json"), settings=settings_fingerprint(settings, HISTORY_SECTIONS),
        started_at=round(time.time(), 3))
    for previous in existing:  # before the labels snapshot beside the run log is replaced
        _check_compatible(previous, header, path)
    history, labels = await asyncio.to_thread(_prepare, source, out, since, until, zones, feedback)
    missing_store = feedback_note(source, history, feedback, len(labels))
    if missing_store is not None:
        options.notes.append(missing_store)
    header = header.model_copy(update={"planned": [s.id for s in segments(history.records)], "labels": len(labels),
                                       "problems": history.problems,
                                       "notes": [missing_store] if missing_store else []})
    backend = create_backend(settings.model.model_copy(update={"concurrency": options.concurrency}))
    await backend.start()
    try:
        runner = HistoryRunner(settings=settings, backend=backend, history=history, labels=labels, out=out,
                               options=options, cache=ResponseCache(cache_path or out / CACHE_FILE))
        return await runner.run(header), history
    finally:
        await backend.close()

