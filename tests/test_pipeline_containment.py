"""The pipeline contains what fails inside it: an assessment, a sink, a source. One part fails; the rest go on.

In-process, with the real Pipeline and small stand-ins for the part that fails (the daemon-level fault tests
in tests/test_faults_*.py cannot make the project's own code raise on purpose).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import structlog

from monitor.alerts import AlertEvent, AlertManager, AlertSettings
from monitor.assess.prompt import build_messages, time_label
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import Usage
from monitor.core.errors import SensorError
from monitor.pipeline import Pipeline
from monitor.stats import Stats
from monitor.windows import RollingWindow, Window, WindowSettings
from replay.streams import TrialRecorder
from sensors.types import InputHealth, Observation
from tests.support.sinks import Collecting
from tests.support.sources import ListSource, entry

LADDER = Assessment(danger=True, severity="warning", hazard="fall from ladder", reason="Leans out.",
                    advice="Climb down.", confidence=0.9)


class FlakyAssessor:
    """Raises an unexpected error (a bug, not a BackendError) for the windows numbered in `fail`."""

    name = "flaky"

    def __init__(self, fail: set[int]) -> None:
        self.fail = fail
        self.calls = 0

    async def assess(self, window: Window) -> Verdict:
        self.calls += 1
        if self.calls in self.fail:
            raise ZeroDivisionError("a bug in a strategy")
        return Verdict(assessment=LADDER, model="stand-in", usage=Usage())


class Broken(Collecting):
    name = "broken"

    async def publish(self, event: AlertEvent) -> None:
        raise OSError(28, "No space left on device")


class FailingOnce:
    """A source whose first run raises; the second emits its entries and ends."""

    def __init__(self, source_id: str) -> None:
        self.id = source_id
        self.runs = 0

    async def run(self, emit: Callable[[Observation], Awaitable[None]]) -> None:
        self.runs += 1
        if self.runs == 1:
            raise RuntimeError("a bug in a sensor")
        await emit(entry("Sam climbs the ladder", source=self.id))

    def health(self) -> InputHealth:
        return InputHealth(self.id, "online")


def pipeline(sources: list[tuple[object, str]], assessor: object, sinks: list[Collecting], stats: Stats,
             recorder: TrialRecorder, **options: object) -> Pipeline:
    return Pipeline(sources=sources, assessor=assessor, sinks=sinks,  # type: ignore[arg-type]
                    windows=WindowSettings(min_interval_s=0.0, max_entries=1),
                    alerts=AlertManager(AlertSettings(dedup_ttl_s=60)), observers=[stats, recorder],
                    **options)  # type: ignore[arg-type]


def one_at_a_time(recorder: TrialRecorder) -> Callable[[], Awaitable[None]]:
    emitted = {"n": 0}

    async def gate() -> None:
        await recorder.wait_settled(emitted["n"])
        emitted["n"] += 1

    return gate


async def test_an_assessment_that_raises_is_a_counted_internal_error_and_the_next_window_is_assessed() -> None:
    """An exception that is not a BackendError (a bug in a strategy, keyframes or the prompt) is counted as a
    model error of kind `internal` and the next window is assessed; before, it tore down the task group."""
    stats, recorder, sink = Stats(), TrialRecorder(), Collecting()
    source = ListSource("kitchen", [entry(f"Sam climbs the ladder {n}") for n in range(3)],
                        gate=one_at_a_time(recorder))
    assessor = FlakyAssessor(fail={1})
    run = pipeline([(source, "kitchen")], assessor, [sink], stats, recorder, exit_when_sources_end=True)
    async with asyncio.timeout(10):
        await run.run()
    assert stats.model_errors == {"internal": 1}
    assert stats.windows_assessed == 2 and assessor.calls == 3
    error = recorder.settled[0].error
    assert error is not None and "ZeroDivisionError: a bug in a strategy" in str(error)
    assert [event.type for event in sink.events] == ["new", "update"]


async def test_a_sink_that_raises_does_not_keep_the_alert_from_the_other_sinks() -> None:
    """A sink whose publish raises is logged and counted per sink; the sinks after it still get the alert and
    the pipeline carries on; before, the exception propagated into the worker and stopped the daemon."""
    stats, recorder, good = Stats(), TrialRecorder(), Collecting()
    source = ListSource("kitchen", [entry(f"Sam climbs the ladder {n}") for n in range(2)],
                        gate=one_at_a_time(recorder))
    run = pipeline([(source, "kitchen")], FlakyAssessor(fail=set()), [Broken(), good], stats, recorder,
                   exit_when_sources_end=True)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(10):
            await run.run()
    assert [event.type for event in good.events] == ["new", "update"]
    assert stats.sink_failures == {"broken": 2}
    failures = [r for r in logs if r["event"] == "alert not delivered to a sink"]
    assert len(failures) == 2 and failures[0]["sink"] == "broken" and "No space left" in failures[0]["error"]


async def test_a_source_that_raises_is_restarted_with_backoff_and_the_other_zones_keep_working() -> None:
    """A source task that raises is logged, restarted after a backoff and feeds its zone again; another zone
    is assessed meanwhile; before, the exception tore down the pipeline's task group."""
    stats, recorder = Stats(), TrialRecorder()
    flaky, steady = FailingOnce("garage"), ListSource("kitchen", [entry("Sam climbs the ladder")])
    run = pipeline([(flaky, "garage"), (steady, "kitchen")], FlakyAssessor(fail=set()), [Collecting()], stats,
                   recorder)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run.run())
        async with asyncio.timeout(10):
            while {s.window.zone for s in recorder.settled} != {"garage", "kitchen"}:
                await asyncio.sleep(0.05)
        run.stop()
        await task
    failed = [r for r in logs if r["event"] == "source failed"]
    assert len(failed) == 1 and failed[0]["source"] == "garage" and failed[0]["restart_in_s"] > 0
    assert flaky.runs == 2


async def test_with_exit_when_sources_end_a_failed_source_ends_instead_of_waiting_forever() -> None:
    """In a replay or demo (exit_when_sources_end), a broken source is logged and counted as ended, so the
    run still finishes with the other sources' windows."""
    stats, recorder = Stats(), TrialRecorder()
    flaky, steady = FailingOnce("garage"), ListSource("kitchen", [entry("Sam climbs the ladder")])
    run = pipeline([(flaky, "garage"), (steady, "kitchen")], FlakyAssessor(fail=set()), [Collecting()], stats,
                   recorder, exit_when_sources_end=True)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(10):
            await run.run()
    failed = [r for r in logs if r["event"] == "source failed"]
    assert failed[0]["restart"].startswith("never") and flaky.runs == 1
    assert stats.windows_assessed == 1


async def test_a_source_that_fails_reports_offline_with_its_last_error(tmp_path: Path) -> None:
    """A tailed path that is a folder and a corrupt video file raise SensorError from `run` (the pipeline
    restarts them), and meanwhile their health says offline, with the error naming the path."""
    from sensors.camera import CameraSource
    from sensors.camera_config import CameraSettings
    from sensors.logs.sources import FileTailSource

    (tmp_path / "folder.log").mkdir()
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 4096)
    tail = FileTailSource("garage", tmp_path / "folder.log")
    camera = CameraSource(CameraSettings(id="yard", kind="file", path=tmp_path / "broken.mp4"))
    for source, where in ((tail, "folder.log"), (camera, "broken.mp4")):
        with pytest.raises(SensorError):
            await source.run(_ignore)
        health = source.health()
        assert health.state == "offline" and where in (health.last_error or ""), health


async def _ignore(observation: Observation) -> None:
    return None


@pytest.mark.parametrize("ts", [math.nan, math.inf, 1e15, 1796063737000.0, 2.6e11])
def test_prompt_times_never_raise_whatever_the_number(ts: float) -> None:
    """Defence in depth: sources check timestamps, and the prompt formats any number it is given anyway
    (before: `ValueError: year 58884 is out of range`)."""
    assert isinstance(time_label(ts), str)
    window = Window(id="w", zone="z", observations=(entry("x", ts=ts),), new_count=1, created_at=time.time())
    assert build_messages(window)[1]["content"]


def test_the_window_drops_its_oldest_entries_to_keep_within_its_character_budget() -> None:
    """`max_chars` bounds the text a window hands to the prompt; the newest entry always stays, and the
    snapshot says how many entries left."""
    window = RollingWindow("z", max_age_s=600, max_entries=20, min_interval_s=0, max_chars=5000)
    for n in range(5):
        window.add(entry(f"{n}" + "x" * 2000))
    snapshot = window.snapshot()
    assert [o.text[0] for o in snapshot.observations] == ["3", "4"] and snapshot.trimmed == 3
    window.add(entry("5" + "y" * 9000))  # alone above the budget: kept, the rest go
    assert [o.text[0] for o in window.snapshot().observations] == ["5"]


def test_an_entry_is_cut_to_its_bound_with_a_visible_marker() -> None:
    """Each text field of an entry (behaviour, text, raw, ...) is cut to max_entry_chars and says so."""
    from sensors.logs.parsers import cap_entry

    capped, cut = cap_entry(entry("z" * 10_000), 4096)
    assert capped.text.endswith("[... 5904 characters cut]") and len(capped.text) < 4200
    assert cut == 3 * (10_000 - 4096)  # text, behaviour and raw
    short = entry("short")
    assert cap_entry(short, 4096) == (short, 0)


class Watching(Collecting):
    """Notes how many windows the recorder had settled when each alert reached it; can hold an alert back."""

    def __init__(self, recorder: TrialRecorder, *, hold: bool = False) -> None:
        super().__init__()
        self.recorder = recorder
        self.settled_before: list[int] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def publish(self, event: AlertEvent) -> None:
        self.settled_before.append(len(self.recorder.settled))
        self.arrived.set()
        await self.release.wait()
        self.events.append(event)


async def test_the_alert_reaches_the_sinks_before_its_window_is_recorded() -> None:
    """The person waits for the alert, not for the history: observers hear of the window after the sinks."""
    stats, recorder = Stats(), TrialRecorder()
    sink = Watching(recorder)
    source = ListSource("kitchen", [entry(f"Sam climbs the ladder {n}") for n in range(2)],
                        gate=one_at_a_time(recorder))
    run = pipeline([(source, "kitchen")], FlakyAssessor(fail=set()), [sink], stats, recorder,
                   exit_when_sources_end=True)
    async with asyncio.timeout(10):
        await run.run()
    assert sink.settled_before == [0, 1]
    assert len(recorder.settled) == 2 and stats.windows_assessed == 2


async def test_a_window_whose_alert_is_stuck_in_a_sink_at_shutdown_is_still_recorded() -> None:
    """Shutdown gives up on a worker whose sink never returns; the window it assessed is recorded all the same."""
    stats, recorder = Stats(), TrialRecorder()
    sink = Watching(recorder, hold=True)  # never released: a sink that hangs
    source = ListSource("kitchen", [entry("Sam climbs the ladder")])
    run = pipeline([(source, "kitchen")], FlakyAssessor(fail=set()), [sink], stats, recorder,
                   shutdown_timeout_s=0.2)
    task = asyncio.create_task(run.run())
    async with asyncio.timeout(10):
        await sink.arrived.wait()
        run.stop()
        await task
    assert sink.events == []
    assert len(recorder.settled) == 1 and stats.windows_assessed == 1


class DiesOnce:
    """A follow-up (the escalation loop's place) whose first step raises an error nobody foresaw."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.steps = 0

    def annotate(self, event: AlertEvent) -> AlertEvent:
        return event

    async def step(self) -> list[AlertEvent]:
        self.steps += 1
        if self.steps == 1:
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")
        return []


async def test_the_alert_expiry_and_escalation_task_that_dies_is_restarted_and_shown() -> None:
    """The expiry task also runs escalation and acknowledgements: if it dies of an unexpected error it is
    logged, restarted with backoff and reported (`expiry_crashes.problem()` names it, for /readyz and the
    hub's problem entity) while the pipeline runs on. Before, the error tore down the pipeline's task group
    and with it the daemon."""
    stats, recorder, follow_up = Stats(), TrialRecorder(), DiesOnce()
    source = ListSource("kitchen", [entry("Sam climbs the ladder")])
    run = pipeline([(source, "kitchen")], FlakyAssessor(fail=set()), [Collecting()], stats, recorder,
                   follow_up=follow_up)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run.run())
        async with asyncio.timeout(10):
            while follow_up.steps < 2 or not recorder.settled:
                await asyncio.sleep(0.05)
        problem = run.expiry_crashes.problem()
        run.stop()
        await task
    assert problem is not None and problem.startswith("task alert-expiry died ")
    assert "s ago and was restarted (1 time(s) so far): RecursionError: maximum recursion depth" in problem
    died = [r for r in logs if r["event"] == "task died of an unexpected error; restarting it"]
    assert len(died) == 1 and died[0]["task"] == "alert-expiry"


async def test_a_scheduler_that_dies_is_restarted_and_the_window_still_assessed() -> None:
    """The scheduler dying of an unexpected error (here, once, while offering windows) is restarted with
    backoff and shown, and the zone's window is still assessed; before, it tore down the task group."""
    stats, recorder = Stats(), TrialRecorder()
    source = ListSource("kitchen", [entry("Sam climbs the ladder")])
    run = pipeline([(source, "kitchen")], FlakyAssessor(fail=set()), [Collecting()], stats, recorder)
    offer, failed = run._offer_due_windows, []

    async def dies_once() -> None:
        if not failed:
            failed.append(True)
            raise KeyError("a bug in the scheduler")
        await offer()

    run._offer_due_windows = dies_once  # type: ignore[method-assign]
    task = asyncio.create_task(run.run())
    async with asyncio.timeout(10):
        while not recorder.settled:
            await asyncio.sleep(0.05)
    problem = run.scheduler_crashes.problem()
    run.stop()
    await task
    assert problem is not None and "task scheduler died" in problem and "KeyError" in problem
    assert stats.windows_assessed == 1
