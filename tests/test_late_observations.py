"""Late and out-of-order observations (issue 20, section 1): every accepted observation is assessed, or
counted and logged with a named reason.

Observations are placed in a zone's window by arrival; a source's sensor time is data (the prompt shows
it) and its clock skew is measured. In process: two sources in one zone, one of them lagging, and the
ledger's reasons one by one. Through the real daemon (subprocess) with the scripted OpenAI-compatible
server: a lagging source and a single source's odd timestamp forms reach prompts the server received, and
the counters on /metrics and in the stats add up. docs/reliability.md ("Late and out-of-order observations").
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from monitor.alerts import AlertManager, AlertSettings
from monitor.assess.prompt import build_messages
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import Usage
from monitor.core.errors import TransientBackendError
from monitor.pipeline import Pipeline
from monitor.stats import Stats
from monitor.windows import RollingWindow, Window, WindowSettings
from sensors.types import InputHealth, Observation
from tests.support.daemon import Daemon, responder, wait_until
from tests.support.faults import Rig, append_lines, entry, metric, stops_cleanly, tail
from tests.support.openai_server import ScriptedOpenAIServer
from tests.support.sources import entry as log_entry

FIRE = "the pan is on fire"
SAFE = Assessment(danger=False, severity="info", reason="Nothing risky.", confidence=0.8)


class Prompts:
    """An assessor that keeps each window's prompt and answers safe; fails the windows numbered in `fail`."""

    name = "prompts"

    def __init__(self, fail: set[int] | None = None) -> None:
        self.prompts: list[str] = []
        self.fail = fail or set()

    async def assess(self, window: Window) -> Verdict:
        self.prompts.append(str(build_messages(window)[1]["content"]))
        if len(self.prompts) in self.fail:
            raise TransientBackendError("the model is down")
        return Verdict(assessment=SAFE, model="stand-in", usage=Usage())

    def quoted(self, text: str) -> bool:
        return any(text in prompt for prompt in self.prompts)


class Fed:
    """A source that emits what the test puts in its queue, when the test says (None ends it)."""

    def __init__(self, source_id: str) -> None:
        self.id = source_id
        self.queue: asyncio.Queue[Observation | None] = asyncio.Queue()

    async def run(self, emit: Callable[[Observation], Awaitable[None]]) -> None:
        while (observation := await self.queue.get()) is not None:
            await emit(observation)

    def health(self) -> InputHealth:
        return InputHealth(self.id, "online")


def _pipeline(sources: list[Fed], assessor: Prompts, stats: Stats, **windows: Any) -> Pipeline:
    settings = WindowSettings(**{"min_interval_s": 0.0, **windows})
    return Pipeline(sources=[(source, "kitchen") for source in sources], assessor=assessor,  # type: ignore[arg-type]
                    sinks=[], windows=settings, alerts=AlertManager(AlertSettings(dedup_ttl_s=60)),
                    observers=[stats])


async def _until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _balanced(stats: Stats, pending: int) -> dict[str, Any]:
    """The invariant: accepted == assessed + errored + dropped + pending; the totals, for more checks."""
    totals = stats.observation_totals()
    settled = totals["assessed"] + totals["errored"] + sum(totals["dropped"].values())
    assert totals["accepted"] == settled + pending, totals
    return totals


@pytest.mark.parametrize("lag_s", [8.0, 15.0, 60.0, 3600.0])
async def test_a_lagging_source_sharing_a_zone_reaches_an_assessed_prompt(lag_s: float) -> None:
    """Two sources in one zone: the stove hub writes steadily (window of 12 full), the phone's clock lags.
    Before, its line sorted behind the hub's newer ones and was capped out at once, never assessed, never
    counted; now it is placed by arrival, assessed, its skew measured and (beyond 10 s) logged once."""
    hub, phone, assessor, stats = Fed("hub"), Fed("phone"), Prompts(), Stats()
    run = _pipeline([hub, phone], assessor, stats)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run.run())
        for n in range(24):
            await hub.queue.put(log_entry(f"Sam stirs the soup {n}", source="hub"))
            if n == 14:
                await phone.queue.put(log_entry(FIRE, source="phone", ts=time.time() - lag_s))
            if n % 4 == 3:  # about four hub lines per assessment, as at 0.5 s a line and 2 s between windows
                await _until(lambda n=n: assessor.quoted(f"soup {n}\""), f"hub line {n} assessed")
        await _until(lambda: assessor.quoted("soup 23\""), "last hub line assessed")
        assert assessor.quoted(FIRE), f"{FIRE!r} never reached a prompt"
        skew = run.clock_skew.estimates()["phone"]
        assert abs(skew - lag_s) < 5.0
        totals = _balanced(stats, run.ledger.open)
        run.stop()
        await task
    totals = _balanced(stats, run.ledger.open)
    assert run.ledger.open == 0 and totals["accepted"] == 25
    assert stats.observations["phone"]["assessed"] == 1
    warned = [r for r in logs if r["event"] == "source clock is off the monitor's; its observations are placed "
                                               "by arrival time"]
    assert [r["source"] for r in warned] == ([] if lag_s < 10 else ["phone"])


def test_the_window_places_by_arrival_and_expires_by_arrival_age() -> None:
    """Arrival order whatever the sensor time; the age bound is arrival age; each leaver is named."""
    clock, left = [1000.0], []
    window = RollingWindow("z", max_age_s=60, max_entries=3, min_interval_s=0, clock=lambda: clock[0],
                           on_leave=lambda seq, reason: left.append((seq, reason)))
    for seq, ts in enumerate((100.0, 0.0, 50.0, 1e9), start=1):
        window.add(log_entry(f"e{seq}", ts=ts), seq)
    assert [o.ts for o in window.snapshot().observations] == [0.0, 50.0, 1e9] and left == [(1, "capped")]
    clock[0] += 30
    window.add(log_entry("late", ts=1.0), 5)
    clock[0] += 31
    snap = window.snapshot()
    assert [o.text for o in snap.observations] == ["late"] and snap.seqs == (5,)
    assert left[1:] == [(2, "capped"), (3, "too_old"), (4, "too_old")]


def test_the_ledger_settles_each_observation_once_with_its_reason() -> None:
    """Unseen leavers keep their own reason; an observation only in dropped windows takes the window's
    reason; one in a failed window is errored; one in an assessed window is assessed (once)."""
    from monitor.windows import ObservationLedger, Settlement  # new here: the rest of the file runs on older code

    settled: list[Settlement] = []
    ledger = ObservationLedger(settled.append)
    seqs = {name: ledger.accept("z", log_entry(name)) for name in ("a", "b", "c", "d", "e", "f")}

    def window(*names: str) -> Window:
        observations = tuple(log_entry(n) for n in names)
        return Window(id="w", zone="z", observations=observations, new_count=len(names), created_at=0.0,
                      seqs=tuple(seqs[n] for n in names))

    ledger.left(seqs["a"], "capped")
    ledger.left(seqs["b"], "budget")
    first, second = window("c", "d", "e"), window("d", "e", "f")
    ledger.snapshotted(first)
    ledger.snapshotted(second)
    ledger.dropped(first, "superseded")
    ledger.left(seqs["c"], "capped")  # it was in a superseded window only: that window's reason
    ledger.failed(second)
    ledger.left(seqs["d"], "too_old")  # in a superseded and a failed window: errored
    ledger.assessed(window("e"))
    ledger.assessed(window("e"))  # a second window holding it changes nothing
    ledger.close([seqs["f"]])  # only in the failed window, still in the rolling window at the stop
    assert [(s.outcome, s.reason) for s in settled] == [
        ("dropped", "capped"), ("dropped", "budget"), ("dropped", "superseded"), ("errored", None),
        ("assessed", None), ("errored", None)]
    assert ledger.open == 0


async def test_a_burst_beyond_the_window_is_counted_as_capped_and_logged() -> None:
    """More entries at once than a window holds: the ones pushed out before any snapshot saw them are
    counted `capped` and logged with source, zone and reason; the rest are assessed; nothing unaccounted."""
    hub, assessor, stats = Fed("hub"), Prompts(), Stats()
    run = _pipeline([hub], assessor, stats, max_entries=5)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run.run())
        await _until(lambda: run.started.is_set(), "started")
        for n in range(30):
            hub.queue.put_nowait(log_entry(f"line {n}", source="hub"))  # one read of a file: no yield between
        await _until(lambda: assessor.quoted("line 29\""), "newest assessed")
        run.stop()
        await task
    totals = _balanced(stats, run.ledger.open)
    assert totals["accepted"] == 30 and totals["assessed"] + totals["dropped"]["capped"] == 30
    assert totals["dropped"]["capped"] >= 25
    logged = [r for r in logs if r["event"] == "observation settled without an assessment"]
    assert logged[0]["reason"] == "capped" and logged[0]["source"] == "hub" and logged[0]["zone"] == "kitchen"
    assert len(logged) == 1  # first and every 100th


async def test_failed_switched_off_and_stopped_observations_are_counted_by_reason() -> None:
    """A window whose assessment failed and which left: errored; monitoring off: `monitoring_off`;
    what waits when the pipeline stops: `shutdown`. Stats, per source, add up at every step."""
    hub, assessor, stats = Fed("hub"), Prompts(fail={1}), Stats()
    run = _pipeline([hub], assessor, stats, max_entries=1)
    task = asyncio.create_task(run.run())
    await hub.queue.put(log_entry("one", source="hub"))
    await _until(lambda: len(assessor.prompts) == 1, "first window (fails)")
    await hub.queue.put(log_entry("two", source="hub"))  # pushes "one" out: it was only in a failed window
    await _until(lambda: stats.observations["hub"]["assessed"] == 1, "second window")
    assert stats.observations["hub"]["errored"] == 1
    run.alerts.controls.set_monitoring("kitchen", False)
    await hub.queue.put(log_entry("three", source="hub"))
    await _until(lambda: stats.windows_dropped["monitoring_off"] == 1, "a window dropped, monitoring off")
    await hub.queue.put(log_entry("four", source="hub"))  # pushes "three" out: it was only in a dropped window
    await _until(lambda: stats.observations["hub"]["dropped:monitoring_off"] == 1, "three settled")
    _balanced(stats, run.ledger.open)
    run.stop()  # "four" is still in the window (its own window was dropped too): the stop settles it
    await task
    totals = _balanced(stats, run.ledger.open)
    assert run.ledger.open == 0 and totals["accepted"] == 4
    assert totals["errored"] == 1 and totals["assessed"] == 1
    assert totals["dropped"]["monitoring_off"] == 1 and totals["dropped"]["shutdown"] == 1


async def test_a_reload_that_shrinks_the_window_moves_the_accounts_with_the_observations() -> None:
    """SIGHUP with a smaller `max_entries` rebuilds the window from what it holds (arrival times and
    accounts kept): what the smaller window cannot hold and no window had shown is `capped`, the rest is
    assessed again."""
    hub, assessor, stats = Fed("hub"), Prompts(), Stats()
    run = _pipeline([hub], assessor, stats, max_entries=5, min_interval_s=3600.0)
    task = asyncio.create_task(run.run())
    await _until(lambda: run.started.is_set(), "started")
    for n in range(5):
        hub.queue.put_nowait(log_entry(f"line {n}", source="hub"))
    await _until(lambda: stats.observations.get("hub", {}).get("assessed") == 5, "the first window")
    for n in range(5, 8):
        hub.queue.put_nowait(log_entry(f"line {n}", source="hub"))
    await _until(lambda: stats.observations["hub"]["accepted"] == 8, "three more, waiting for min_interval_s")
    run.set_window_settings(WindowSettings(max_entries=2, min_interval_s=3600.0))
    await _until(lambda: stats.observations["hub"]["assessed"] == 7, "the rebuilt window")
    assert "line 7" in assessor.prompts[-1] and "line 6" in assessor.prompts[-1]
    run.stop()
    await task
    totals = _balanced(stats, run.ledger.open)
    assert totals["assessed"] == 7 and totals["dropped"]["capped"] == 1 and run.ledger.open == 0


async def test_a_replay_on_stream_time_ages_its_windows_on_that_time_and_still_finishes() -> None:
    """A replayed stream (in lockstep, at stream times 0, 700 and 700.1 s) passes its clock: its windows age
    on the stream's time as they would have live (max_age_s 600: the first entry has left the second
    window), while snapshots stay paced in real time (min_interval_s 0.2), so the last entry, 0.1 s of
    stream time after the one before, is still assessed and the replay finishes."""
    from replay.streams import Pacing, ScenarioStream, TrialRecorder

    observations = [log_entry(f"step {n}", source="log", ts=ts) for n, ts in enumerate((0.0, 700.0, 700.1))]
    recorder, assessor, stats = TrialRecorder(), Prompts(), Stats()
    stream = ScenarioStream(observations, source="log", pacing=Pacing("lockstep"), recorder=recorder)
    run = Pipeline(sources=[(stream, "kitchen")], assessor=assessor, sinks=[],  # type: ignore[arg-type]
                   windows=WindowSettings(min_interval_s=0.2, max_age_s=600.0),
                   alerts=AlertManager(AlertSettings(dedup_ttl_s=60)), observers=[stats, recorder],
                   exit_when_sources_end=True, clock=stream.clock)
    async with asyncio.timeout(10):
        await run.run()
    assert [prompt.count("step") for prompt in assessor.prompts] == [1, 1, 2]
    totals = _balanced(stats, run.ledger.open)
    assert totals["assessed"] == 3 and totals["dropped"]["too_old"] == 0


# -- through the real daemon -------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(responder=responder()) as running:
        yield running


def _prompted(server: ScriptedOpenAIServer, marker: str) -> bool:
    return any(marker in str(request["messages"][-1]["content"]) for request in list(server.requests))


def _observation_metrics(daemon: Daemon) -> dict[str, float]:
    """The observation counters of one /metrics scrape (dropped summed over its reasons)."""
    _status, body = daemon.http("/metrics")
    counts = {"accepted": 0.0, "assessed": 0.0, "errored": 0.0, "dropped": 0.0, "pending": 0.0}
    for name, value in re.findall(r"^monitor_observations_(\w+?)(?:_total)?(?:\{[^}]*\})? (\S+)$", body.decode(),
                                  re.MULTILINE):
        counts[name] += float(value)
    return counts


def _odd_forms(now: float) -> dict[str, str]:
    """The issue's timestamp forms that were accepted and then never assessed, as raw JSON."""
    late = now - 20
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - 24 * 60))
    return {"zero": "0", "one": "1", "1e11": "1e11", "ms-20s": str(int(late * 1000)),
            "us-20s": str(int(late * 1_000_000)), "ns-20s": str(int(late * 1_000_000_000)),
            "iso-24min": json.dumps(iso), "hour": repr(now - 3600), "two-hours": repr(now - 7200)}


def test_the_daemon_assesses_late_and_oddly_timed_lines_and_accounts_for_every_observation(
        tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """The real daemon, two tailed sources in the kitchen (the hub writes steadily, the phone's clock lags
    60 s) and a hall log with the issue's timestamp forms (0, 1, 1e11, ms/us/ns epochs 20 s late, ISO 24 min
    old, 1 h and 2 h old), each after a full window of newer lines. Before, each of them was capped out or
    expired unseen and uncounted; now each reaches a prompt the model server received, the phone's skew is
    on /metrics, and accepted == assessed + errored + dropped + pending on /metrics and in the final stats."""
    hub, phone, hall = tmp_path / "hub.jsonl", tmp_path / "phone.jsonl", tmp_path / "hall.jsonl"
    for log in (hub, phone, hall):
        log.write_text("")
    rig = Rig(tmp_path, server.base_url, windows="max_entries = 12",
              sources=[tail("hub", hub, zone="kitchen"), tail("phone", phone, zone="kitchen"),
                       tail("hall", hall, zone="hall")])
    with Daemon(rig.write(), tmp_path) as daemon:
        append_lines(hub, *(entry(f"Sam stirs the soup {n}") for n in range(12)))
        wait_until(lambda: _prompted(server, "soup 11\""), what="the hub's window full")
        append_lines(phone, entry(FIRE, repr(time.time() - 60)))
        append_lines(hub, entry("Sam stirs the soup 12"))
        wait_until(lambda: _prompted(server, FIRE), what=f"{FIRE!r} in a prompt")
        append_lines(hall, *(entry(f"Kim hangs a coat {n}") for n in range(12)))
        wait_until(lambda: _prompted(server, "coat 11\""), what="the hall's window full")
        for name, ts in _odd_forms(time.time()).items():
            append_lines(hall, entry(f"Kim drops the keys ({name})", ts))
            wait_until(lambda name=name: _prompted(server, f"({name})"), what=f"the {name} line in a prompt")
        assert 55 <= metric(daemon, "monitor_source_clock_skew_seconds", source="phone") <= 70
        # One scrape is one moment of the daemon: the invariant holds within it, quiet or not.
        counts = wait_until(lambda: (c := _observation_metrics(daemon))["accepted"] == 35 and c, what="35 accepted")
        assert counts["accepted"] == counts["assessed"] + counts["errored"] + counts["dropped"] + counts["pending"]
        _status, ready = daemon.json("/readyz")
        assert "clock 6" in ready["checks"]["sources"]["detail"]["phone"]  # "online; clock 60.x s behind"
        stops_cleanly(daemon)
    stats = daemon.logs()[-1]
    totals = stats["observations"]
    assert totals["accepted"] == 35 and totals["pending"] == 0
    assert totals["assessed"] + totals["errored"] + sum(totals["dropped"].values()) == 35
    assert stats["source_observations"]["phone"]["assessed"] == 1
    assert daemon.find("source clock is off the monitor's; its observations are placed by arrival time",
                       source="phone")
