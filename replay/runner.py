"""The trial runner: N trials per scenario, each through the monitor's own Pipeline.

Every trial builds a fresh Pipeline (windows, assessment, alert lifecycle) around a
ScenarioStream and a CachingBackend for its trial index, runs it to the end of the
stream, then grades the first alert with the judge. Trials run concurrently under one
semaphore; the judge has its own limit, so a slow judge does not hold model slots.
Each finished trial is appended to ``OUT/runs.jsonl`` at once, so a killed run resumes
where it stopped: (sample, trial) pairs already ``ok`` in the log are not run again.

Failure policy: a fatal model error (bad key, unknown model, images to a text-only
model) stops the run; a transient one or a timeout marks the trial ``error`` and a
re-run does it again; a malformed reply is what the live monitor also gets, an
assessment without a warning, so the trial counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from monitor.alerts import AlertManager
from monitor.assess.strategies import build_assessor
from monitor.backends import BackendWrapper, ModelBackend, ModelReply, ModelRequest
from monitor.backends.settings import ModelSettings
from monitor.core.aio import leaf_errors, settle_startup_heap
from monitor.core.errors import BackendError, FatalBackendError, MalformedReplyError, MonitorError
from monitor.observer import Settled
from monitor.pipeline import Pipeline
from monitor.settings import Settings
from monitor.stats import Stats
from monitor.windows import WindowSettings
from replay.cache import CachingBackend, ResponseCache
from replay.errors import JudgeError, RunLogError
from replay.fingerprint import differences, fingerprint, settings_fingerprint
from replay.judge import NO_WARNING, Judge, Judgement, WarningText, judge_failure, no_warning_judgement
from replay.pasbench import ModalityChoice, Release, Scenario, Skipped
from replay.progress import progress_bar
from replay.report import remove_reports
from replay.runlog import (
    FirstAlert,
    JudgementRecord,
    RunHeader,
    RunLogWriter,
    SkippedRecord,
    TrialRecord,
    TrialStatus,
    read_run_log,
    strategy_label,
)
from replay.streams import (
    COMPOSITE_MAX_SIDE,
    ZONE,
    ImageInput,
    Pacing,
    ProtocolName,
    ScenarioStream,
    TrialRecorder,
    composite_frame,
    image_frames,
    source_id,
    text_observations,
)
from sensors.types import LogEntry, Observation

log = structlog.get_logger(__name__)
RUNS_FILE = "runs.jsonl"
CACHE_FILE = "cache.jsonl"
JUDGE_CACHE_FILE = "judge-cache.jsonl"


# Trials in flight per model-call slot: enough that a call slot never waits for a trial to be ready.
TRIALS_PER_CALL_SLOT = 2


class LimitedBackend(BackendWrapper):
    """A backend that lets at most `limit` calls through at once (cache hits never get this far).

    Its inner backend's life belongs to whoever made it: start and close do nothing here.
    """

    def __init__(self, inner: ModelBackend, limit: int) -> None:
        super().__init__(inner)
        self._limit = asyncio.Semaphore(limit)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def complete(self, request: ModelRequest) -> ModelReply:
        async with self._limit:
            return await self.inner.complete(request)


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay: protocol, trials per sample, concurrency, pacing of streams, image input, preset."""

    protocol: ProtocolName = "paper"
    modality: ModalityChoice = "all"
    trials: int = 16
    concurrency: int = 4
    speed: float = 0.0
    interval_s: float = 2.0
    safe_controls: bool = True
    progress: bool = False
    limit: int | None = None
    image_input: ImageInput = "frames"
    preset: str = "none"
    # Start over: set an existing run log aside instead of resuming it.
    fresh: bool = False

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError("trials must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.speed < 0 or self.interval_s <= 0:
            raise ValueError("speed must be >= 0 and interval_s > 0")


@dataclass
class RunSummary:
    """What one invocation did (the scores come from the run log, not from here)."""

    planned_trials: int = 0
    already_done: int = 0
    ran: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    set_aside: Path | None = None


def model_identity(settings: ModelSettings) -> dict[str, Any]:
    """What identifies the answers of a model configuration (part of every cache key)."""
    identity: dict[str, Any] = {
        "backend": settings.backend, "model": settings.model, "base_url": settings.base_url,
        "temperature": settings.temperature, "max_tokens": settings.max_tokens,
        "json_schema_hint": settings.json_schema_hint or settings.backend == "embedded",  # embedded: always on
    }
    if settings.backend == "embedded":
        identity["gguf"] = str(settings.embedded.gguf) if settings.embedded.gguf else "bundled"
        identity["n_ctx"] = settings.embedded.n_ctx
    if settings.backend == "scripted" and settings.script is not None:
        import hashlib

        try:
            identity["script_sha256"] = hashlib.sha256(settings.script.read_bytes()).hexdigest()
        except OSError:
            identity["script_sha256"] = None
    return identity


def plan(release: Release, safe: Sequence[Scenario], *, modality: ModalityChoice,
         accepts_images: bool, model: str) -> tuple[list[Scenario], list[Skipped]]:
    """The scenarios to run and the samples to report as skipped.

    A text-only model skips image samples (reported, with the reason) when the run
    asked for all modalities, and refuses an image-only run outright.
    """
    scenarios = list(release.scenarios)
    skipped = list(release.skipped)
    if not accepts_images and any(s.modality == "image" for s in scenarios):
        if modality == "image":
            raise FatalBackendError(f"model '{model}' is configured as text-only (model.accepts_images); "
                                    "image samples need a vision model")
        reason = f"model '{model}' is text-only (model.accepts_images = false)"
        skipped += [Skipped(s.id, "image", s.severity, reason, s.index, s.content_id)
                    for s in scenarios if s.modality == "image"]
        scenarios = [s for s in scenarios if s.modality != "image"]
    return scenarios + list(safe), skipped


class _Observations:
    """Each scenario's observations, built once and shared by its trials, freed after its last one."""

    def __init__(self, protocol: ProtocolName, interval_s: float, uses: Counter[str], *,
                 image_input: ImageInput = "frames") -> None:
        self.protocol = protocol
        self.interval_s = interval_s
        self.uses = uses
        self.image_input = image_input
        self._loading: dict[str, asyncio.Task[list[Observation]]] = {}

    async def get(self, scenario: Scenario) -> list[Observation]:
        task = self._loading.get(scenario.id)
        if task is None:
            task = asyncio.create_task(self._load(scenario), name=f"load:{scenario.id}")
            self._loading[scenario.id] = task
        return await asyncio.shield(task)

    async def _load(self, scenario: Scenario) -> list[Observation]:
        if scenario.modality == "image" and self.image_input == "composite":
            return [await asyncio.to_thread(composite_frame, scenario)]
        if scenario.modality == "image":
            return list(await asyncio.to_thread(image_frames, scenario, interval_s=self.interval_s))
        return list(text_observations(scenario, self.protocol, interval_s=self.interval_s))

    def release(self, scenario: Scenario) -> None:
        self.uses[scenario.id] -= 1
        if self.uses[scenario.id] <= 0:
            self._loading.pop(scenario.id, None)


@dataclass
class _MonitorOutcome:
    observations: list[Observation]
    windows: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    first_alert: FirstAlert | None
    first_alert_json: dict[str, Any] | None
    calls: list[dict[str, Any]]
    errors: list[BackendError]
    stats: Stats
    wall_s: float


class ReplayRunner:
    """Runs every pending (scenario, trial) pair and appends each finished trial to the run log."""

    def __init__(self, *, settings: Settings, backend: ModelBackend, judge: Judge, out: Path,
                 options: ReplayOptions, cache: ResponseCache | None = None, data_label: str = "") -> None:
        self.settings = settings
        self.backend = backend
        self.judge = judge
        self.out = out
        self.options = options
        self.cache = cache if cache is not None else ResponseCache(out / CACHE_FILE)
        self.data_label = data_label
        self.identity = model_identity(settings.model)
        # A PaSBench composite's panels are the whole sequence: send every one, however alike.
        self.keyframes = settings.keyframes.model_copy(
            update={"min_change": 0.0, "max_frames": max(settings.keyframes.max_frames, 6)})
        if options.image_input == "composite":
            # One picture holding 2-3 panels side by side: do not shrink it to a single frame's size.
            self.keyframes = self.keyframes.model_copy(
                update={"longest_side": max(self.keyframes.longest_side, COMPOSITE_MAX_SIDE)})
        # Recorded in the header and every trial, but not in the cache identity: runs of other
        # strategies or thresholds re-use the cached answers to identical model requests.
        self.strategy = settings.assessment.recorded()
        self.strategy_label = strategy_label(settings.assessment)
        self.pacing = Pacing.for_protocol(options.protocol, speed=options.speed, interval_s=options.interval_s)
        self.runs_path = out / RUNS_FILE
        self.summary = RunSummary()
        self.notes: list[str] = []
        # `concurrency` model calls at once, whatever the backend; trials are admitted beyond that,
        # so one trial builds its window or settles its alert while the others' calls keep the
        # model's slots busy (a trial holding a slot between calls left the model idle).
        self._calls = LimitedBackend(backend, options.concurrency)
        self._slots = asyncio.Semaphore(TRIALS_PER_CALL_SLOT * options.concurrency)
        self._fatal: FatalBackendError | None = None
        self._writer: RunLogWriter | None = None
        self._progress: Any = None

    # -- the run ----------------------------------------------------------------------------------
    async def run(self, scenarios: Sequence[Scenario], skipped: Sequence[Skipped] = ()) -> RunSummary:
        """Run the pending trials of `scenarios`; record `skipped` samples; return what was done."""
        started = time.perf_counter()
        if self.options.fresh:
            self.summary.set_aside = set_aside(self.runs_path)
        existing = read_run_log(self.runs_path, missing_ok=True)
        header = self._header(scenarios, skipped, resumed=bool(existing.headers))
        for previous in existing.headers:
            _check_compatible(previous, header, self.runs_path)
        # The scores and reports are re-written from the run log at the end: until then, none from
        # before may sit beside it (a killed --fresh run left a COMPLETE beside 80 of 160 trials).
        remove_reports(self.out)
        self._writer = writer = RunLogWriter(self.runs_path)
        writer.append(header)
        for sample in skipped:
            if sample.id not in existing.skipped:
                writer.append(SkippedRecord(sample=sample.id, record=sample.content_id, modality=sample.modality,
                                            severity=sample.severity, reason=sample.reason))
        done = existing.finished
        jobs = [(s, t) for s in scenarios for t in range(self.options.trials) if (s.id, t) not in done]
        self.summary.planned_trials = len(scenarios) * self.options.trials
        self.summary.already_done = self.summary.planned_trials - len(jobs)
        uses: Counter[str] = Counter(s.id for s, _ in jobs)
        observations = _Observations(self.options.protocol, self.options.interval_s, uses,
                                     image_input=self.options.image_input)
        self._progress = progress_bar(len(jobs), enabled=self.options.progress,
                                      desc=f"pasbench {self.options.protocol}", unit="trial",
                                      done=self.summary.already_done)
        self._fatal = None
        try:
            async with asyncio.TaskGroup() as group:
                for scenario, trial in jobs:
                    group.create_task(self._job(scenario, trial, observations), name=f"trial:{scenario.id}:{trial}")
            if self._fatal is not None:
                raise self._fatal
        except BaseExceptionGroup as group_error:
            expected = _first_error(group_error)
            if expected is None:
                raise  # a bug: keep every traceback
            raise expected from None
        finally:
            self._progress.close()
            self.summary.wall_s = time.perf_counter() - started
        return self.summary

    def _header(self, scenarios: Sequence[Scenario], skipped: Sequence[Skipped], *, resumed: bool) -> RunHeader:
        options = self.options
        records = {s.id: s.content_id for s in scenarios} | {s.id: s.content_id for s in skipped}
        judge = self.judge.info.to_json()
        pacing = {"interval_s": options.interval_s}
        if options.protocol == "stream":
            pacing["speed"] = options.speed  # pacing changes what a stream trial sees
        marks = fingerprint(
            data={k: v for k, v in records.items() if not k.startswith("safe-")},
            safe={k: v for k, v in records.items() if k.startswith("safe-")},
            modality=options.modality, limit=options.limit, protocol=options.protocol, trials=options.trials,
            pacing=pacing, preset=options.preset, image_input=options.image_input, model=self.identity,
            judge=judge, settings=settings_fingerprint(self.settings),
        )
        return RunHeader(
            protocol=options.protocol, modality=options.modality, trials=options.trials,
            speed=options.speed, interval_s=options.interval_s,
            safe_controls=options.safe_controls, model=self.identity, judge=judge,
            strategy=self.strategy, strategy_label=self.strategy_label,
            planned=[s.id for s in scenarios] + [s.id for s in skipped], notes=self.notes, data=self.data_label,
            started_at=round(time.time(), 3), resumed=resumed, limit=options.limit, fingerprint=marks,
            records=records, truncated=[s.id for s in scenarios if s.truncated],
        )

    async def _job(self, scenario: Scenario, trial: int, observations: _Observations) -> None:
        # A fatal model error stops the run without cancelling trials in flight: they finish (and
        # fail fast on the same error), trials not yet started are skipped, and run() raises it.
        # Cancelling pipelines mid-shutdown instead raced with their own cleanup and could hang.
        try:
            async with self._slots:
                if self._fatal is not None:
                    return
                items = await observations.get(scenario)
                outcome = await self._run_monitor(scenario, trial, items)
            record = await self._grade(scenario, trial, outcome)
        except FatalBackendError as exc:
            self._fatal = self._fatal or exc
            return
        finally:
            observations.release(scenario)
        assert self._writer is not None
        self._writer.append(record)
        self._account(record)

    # -- one trial through the pipeline ------------------------------------------------------------
    async def _run_monitor(self, scenario: Scenario, trial: int, observations: list[Observation]) -> _MonitorOutcome:
        backend = CachingBackend(self._calls, self.cache, trial=trial, identity=self.identity)
        stats, recorder = Stats(), TrialRecorder()
        # The configured [assessment] strategy (single, vote, verify, temporal), fresh per trial:
        # a temporal strategy keeps evidence across windows, and trials must not share it.
        assessor = build_assessor(backend, self.settings.assessment, keyframes=self.keyframes)
        wall_start, perf_start = time.time(), time.perf_counter()
        stream = ScenarioStream(observations, source=source_id(scenario), pacing=self.pacing, recorder=recorder)
        pipeline = Pipeline(
            sources=[(stream, ZONE)], assessor=assessor, sinks=[], windows=self._windows(len(observations)),
            alerts=AlertManager(self.settings.alerts), observers=[stats, recorder], exit_when_sources_end=True,
            shutdown_timeout_s=self.settings.service.shutdown_timeout_s, clock=stream.clock,
        )
        await pipeline.run()
        wall_s = time.perf_counter() - perf_start
        position = {id(o): index for index, o in enumerate(observations)}
        windows, window_index, errors = _windows_of(recorder.settled, position)
        fatal = [e for e in errors if isinstance(e, FatalBackendError)]
        if fatal:
            raise fatal[0]
        alerts = [event.to_json() for event in recorder.events]
        first = next((e for e in recorder.events if e.type == "new"), None)
        first_alert: FirstAlert | None = None
        if first is not None:
            number, last = window_index[first.alert.window_id]
            observation = observations[last]
            first_alert = FirstAlert(
                window=number, entry_index=last, entries=len(observations), offset_s=observation.ts,
                clock=observation.clock if isinstance(observation, LogEntry) else None,
                wall_s=round(first.at - wall_start, 4), severity=first.alert.severity, hazard=first.alert.hazard,
            )
        return _MonitorOutcome(
            observations=observations, windows=windows, alerts=alerts, first_alert=first_alert,
            first_alert_json=first.alert.to_json() if first is not None else None,
            calls=[c.to_json() for c in backend.calls], errors=errors, stats=stats, wall_s=wall_s,
        )

    def _windows(self, count: int) -> WindowSettings:
        windows = self.settings.windows
        if self.options.protocol == "paper":
            # The paper gives the whole input at once: one window must hold all of it.
            return windows.model_copy(update={"max_entries": max(windows.max_entries, count), "min_interval_s": 0.0})
        if self.pacing.mode == "lockstep":
            # Pacing is by assessment: every entry gets its window, whatever min_interval_s says.
            return windows.model_copy(update={"min_interval_s": 0.0})
        return windows

    # -- grading ---------------------------------------------------------------------------------
    async def _grade(self, scenario: Scenario, trial: int, outcome: _MonitorOutcome) -> TrialRecord:
        transient = [e for e in outcome.errors if not isinstance(e, MalformedReplyError)]
        status: TrialStatus = "error" if transient else "ok"
        error = "; ".join(f"{e.kind}: {e}" for e in transient) or None
        warning = WarningText.from_alert(outcome.first_alert_json) if outcome.first_alert_json else None
        judgement: Judgement | None = None
        judge_started = time.perf_counter()
        if status == "ok" and not scenario.safe:
            if warning is None:
                judgement = no_warning_judgement()
            else:
                assert scenario.reference is not None
                try:
                    judgement = await self.judge.judge(scenario.reference, warning)
                except (JudgeError, BackendError) as exc:
                    if isinstance(exc, FatalBackendError):
                        raise
                    status, error = "unjudged", judge_failure(exc)
        return TrialRecord(
            sample=scenario.id, record=scenario.content_id, modality=scenario.modality, severity=scenario.severity,
            kind=scenario.kind,
            trial=trial, protocol=self.options.protocol, status=status, strategy=self.strategy_label,
            entries=len(outcome.observations),
            windows=outcome.windows, alerts=outcome.alerts, first_alert=outcome.first_alert,
            response=warning.render() if warning else NO_WARNING,
            judgement=JudgementRecord.model_validate(judgement.to_json()) if judgement else None,
            calls=outcome.calls, usage=_usage(outcome),
            timings={"monitor_s": round(outcome.wall_s, 4),
                     "judge_s": round(time.perf_counter() - judge_started, 4)},
            error=error,
        )

    def _account(self, record: TrialRecord) -> None:
        summary = self.summary
        summary.ran += 1
        summary.statuses[record.status] += 1
        summary.calls += int(record.usage.get("calls", 0))
        summary.cached_calls += int(record.usage.get("cached_calls", 0))
        summary.prompt_tokens += int(record.usage.get("prompt_tokens", 0))
        summary.completion_tokens += int(record.usage.get("completion_tokens", 0))
        self._progress.update(1)
        self._progress.set_postfix(calls=summary.calls, cached=summary.cached_calls,
                                   tokens=summary.prompt_tokens + summary.completion_tokens, refresh=False)


def _windows_of(settled: list[Settled], position: dict[int, int],
                ) -> tuple[list[dict[str, Any]], dict[str, tuple[int, int]], list[BackendError]]:
    """The assessed windows as run-log entries, window id -> (number, last entry), and the errors.

    `position` maps each observation of the stream (by identity: the pipeline passes the
    stream's own objects through) to its index in the stream.
    """
    windows: list[dict[str, Any]] = []
    index: dict[str, tuple[int, int]] = {}
    errors: list[BackendError] = []
    for number, outcome in enumerate(settled):
        window = outcome.window
        entries = sorted(position[id(o)] for o in window.observations if id(o) in position)
        last = entries[-1] if entries else -1
        index[window.id] = (number, last)
        entry: dict[str, Any] = {"window": number, "entries": entries, "last_entry": last}
        if outcome.error is not None:
            errors.append(outcome.error)
            entry["error"] = f"{outcome.error.kind}: {outcome.error}"
            if isinstance(outcome.error, MalformedReplyError):
                entry["raw"] = outcome.error.raw[:2000]
        elif outcome.verdict is not None:
            entry["verdict"] = outcome.verdict.assessment.model_dump()
            entry["strategy"] = outcome.verdict.strategy
            entry["usage"] = outcome.verdict.usage.to_json()
        windows.append(entry)
    return windows, index, errors


def _usage(outcome: _MonitorOutcome) -> dict[str, Any]:
    calls = outcome.calls
    fresh = [c for c in calls if not c["cached"]]
    return {
        "calls": len(calls),
        "cached_calls": len(calls) - len(fresh),
        "prompt_tokens": sum(int(c["prompt_tokens"]) for c in calls),
        "completion_tokens": sum(int(c["completion_tokens"]) for c in calls),
        "spent_prompt_tokens": sum(int(c["prompt_tokens"]) for c in fresh),
        "spent_completion_tokens": sum(int(c["completion_tokens"]) for c in fresh),
        "model_latency_s": round(sum(float(c["model_latency_s"]) for c in fresh), 4),
        "windows_assessed": outcome.stats.windows_assessed,
        "windows_dropped": sum(outcome.stats.windows_dropped.values()),
    }


RESTART_HINT = "resume with the same data and options, or start over with --fresh (or use another --out)"


def _check_compatible(previous: RunHeader, current: RunHeader, path: Path) -> None:
    """Refuse to add trials to a run log that measures something else, naming what differs."""
    if not previous.fingerprint:
        raise RunLogError(f"{path}: was written before run logs recorded what they measure (the records by "
                          f"content, options, prompts), so it cannot be resumed safely; {RESTART_HINT}")
    changes = differences(previous.fingerprint, current.fingerprint, old_records=previous.records,
                          new_records=current.records)
    if previous.benchmark != current.benchmark:
        changes.insert(0, f"benchmark: {previous.benchmark} there, {current.benchmark} now")
    if changes:
        raise RunLogError(f"{path}: holds a run that measures something else; " + "; ".join(changes)
                          + f". {RESTART_HINT}")


def set_aside(runs_path: Path) -> Path | None:
    """--fresh: rename an existing run log (kept, never deleted) so the run starts over; its new name."""
    if not runs_path.is_file():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = runs_path.with_name(f"{runs_path.name}.{stamp}.old")
    serial = 1
    while target.exists():  # two --fresh runs within a second: a rename would replace the kept log
        serial += 1
        target = runs_path.with_name(f"{runs_path.name}.{stamp}-{serial}.old")
    runs_path.rename(target)
    return target


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The error to report from a failed task group: its first MonitorError, if any."""
    return next((e for e in leaf_errors(group) if isinstance(e, MonitorError)), None)


# -- the whole job: load, plan, start the model and the judge, run ---------------------------------


@dataclass(frozen=True, slots=True)
class JudgeSpec:
    """Which judge to use: an OpenAI-compatible endpoint and model, or (neither given) the offline judge."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    concurrency: int = 8
    # "strict" (this project's prompt) or "paper" (the paper's two criteria only; --preset paper)
    rule: str = "strict"


def make_judge(spec: JudgeSpec, *, cache_path: Path | None) -> Judge:
    """An LLMJudge for an endpoint, else the approximate OfflineJudge."""
    if bool(spec.base_url) != bool(spec.model):
        raise JudgeError("a judge endpoint needs both --judge-base-url and --judge-model")
    if spec.base_url and spec.model:
        from replay.judge import create_llm_judge

        return create_llm_judge(base_url=spec.base_url, model=spec.model, api_key=spec.api_key,
                                cache=ResponseCache(cache_path), concurrency=spec.concurrency, rule=spec.rule)
    from replay.judge import OfflineJudge

    return OfflineJudge()


async def run_pasbench(*, settings: Settings, data_dir: Path, out: Path, options: ReplayOptions,
                       judge: JudgeSpec | Judge, limit: int | None = None, cache_path: Path | None = None,
                       safe_controls_dir: Path | None = None, judge_cache_path: Path | None = None) -> RunSummary:
    """Load the release, plan, start the model backend and the judge, and run every pending trial."""
    from monitor.backends import create_backend
    from replay.pasbench import load_release, load_safe_controls, select

    release = select(load_release(data_dir, modality=options.modality), limit=limit)
    safe = load_safe_controls(safe_controls_dir, limit=limit) if options.safe_controls else []
    if options.limit != limit:
        options = replace(options, limit=limit)  # the fingerprint records the limit the run used
    model_settings = settings.model.model_copy(update={"concurrency": options.concurrency})
    backend = create_backend(model_settings)
    scenarios, skipped = plan(release, safe, modality=options.modality, accepts_images=backend.accepts_images,
                              model=backend.model)
    for note in release.notes:
        log.warning("release note", note=note)
    judge_cache = judge_cache_path or out / JUDGE_CACHE_FILE
    the_judge = make_judge(judge, cache_path=judge_cache) if isinstance(judge, JudgeSpec) else judge
    await backend.start()
    try:
        await the_judge.start()
        settle_startup_heap()  # the model client's imports are done now
        runner = ReplayRunner(settings=settings, backend=backend, judge=the_judge, out=out, options=options,
                              cache=ResponseCache(cache_path or out / CACHE_FILE), data_label=str(data_dir))
        runner.notes = list(release.notes)
        return await runner.run(scenarios, skipped)
    finally:
        await the_judge.close()
        await backend.close()
