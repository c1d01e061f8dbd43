"""Scenario streams through the monitor's Pipeline: paper (all at once), lockstep and paced streams."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from monitor.backends import ModelReply, ModelRequest, Usage
from monitor.settings import Settings, load_settings
from replay.judge import JudgeInfo, Judgement, WarningText
from replay.pasbench import Reference, Scenario
from replay.runlog import read_run_log
from replay.runner import ReplayOptions, ReplayRunner
from replay.streams import CAMERA_SOURCE, LOG_SOURCE, encode_frame, text_observations

LOG = """[LOG START]
[Time]
07:00 AM
[Location]
Garden
[Environmental Observation]
Sunny.
[Behavioral Observation]
Ravi waters the tomatoes.
[Time]
07:10 AM
[Location]
Garden
[Environmental Observation]
Sunny.
[Behavioral Observation]
Ravi picks up a rake.
[Time]
07:20 AM
[Location]
Shed
[Environmental Observation]
Tools on hooks.
[Behavioral Observation]
Ravi hangs the rake back on its hook.
[LOG END]"""
REFERENCE = Reference(knowledge="k", behaviour="b", reason="r")
SCENARIO = Scenario(id="text-0", modality="text", severity="info", reference=REFERENCE, text=LOG)


class WindowCountingBackend:
    """Warns once a window holds `danger_at` entries; can be slow."""

    name = "counting"
    model = "m"
    accepts_images = True
    enforces_schema = False

    def __init__(self, *, danger_at: int = 99, latency_s: float = 0.0) -> None:
        self.danger_at = danger_at
        self.latency_s = latency_s
        self.windows: list[int] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def complete(self, request: ModelRequest) -> ModelReply:
        entries = str(request.messages[-1]["content"]).count('"time"')
        self.windows.append(entries)
        await asyncio.sleep(self.latency_s)
        danger = entries >= self.danger_at
        text = json.dumps({"danger": danger, "severity": "warning", "hazard": "rake" if danger else "",
                           "reason": "r", "advice": "a", "confidence": 0.9})
        return ModelReply(text=text, model="m", usage=Usage(prompt_tokens=1, completion_tokens=1))


class AlwaysRight:
    info = JudgeInfo(kind="llm", model="always-right", approximate=False)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def judge(self, reference: Reference, warning: WarningText) -> Judgement:
        return Judgement(correct=True, reason="ok", judge="always-right", kind="llm", approximate=False)


def _settings(min_interval_s: float = 2.0) -> Settings:
    return load_settings(None, windows={"min_interval_s": min_interval_s},
                         model={"backend": "openai", "base_url": "http://127.0.0.1:9/v1"})


async def _run(tmp_path: Path, backend: WindowCountingBackend, scenarios: list[Scenario],
               min_interval_s: float = 2.0, **options: object) -> ReplayRunner:
    options.setdefault("trials", 1)
    runner = ReplayRunner(settings=_settings(min_interval_s), backend=backend, judge=AlwaysRight(), out=tmp_path,
                          options=ReplayOptions(**options))  # type: ignore[arg-type]
    await runner.run(scenarios)
    return runner


def test_paper_protocol_is_one_entry_with_the_whole_log() -> None:
    (entry,) = text_observations(SCENARIO, "paper", interval_s=2.0)
    assert entry.source == LOG_SOURCE and entry.ts == 0.0 and entry.text == LOG.strip()
    stream = text_observations(SCENARIO, "stream", interval_s=2.0)
    assert [(e.ts, e.clock, e.location) for e in stream] == [
        (0.0, "07:00 AM", "Garden"), (2.0, "07:10 AM", "Garden"), (4.0, "07:20 AM", "Shed")]


async def test_lockstep_assesses_every_entry_whatever_min_interval_says(tmp_path: Path) -> None:
    backend = WindowCountingBackend(danger_at=2)
    await _run(tmp_path, backend, [SCENARIO], protocol="stream")
    assert backend.windows == [1, 2, 3]
    (trial,) = read_run_log(tmp_path / "runs.jsonl").trials
    assert trial.first_alert is not None
    assert (trial.first_alert.entry_index, trial.first_alert.clock) == (1, "07:10 AM")
    assert trial.judgement is not None and trial.judgement.correct


async def test_paced_streams_keep_the_monitors_newest_wins_policy(tmp_path: Path) -> None:
    # Entries every 10 ms, the model takes 150 ms: the window of entry 1 waits while entry 0's is
    # assessed, and entry 2's window supersedes it, as it would live.
    backend = WindowCountingBackend(latency_s=0.15)
    runner = await _run(tmp_path, backend, [SCENARIO], min_interval_s=0.0, protocol="stream", speed=200.0,
                        interval_s=2.0)
    (trial,) = read_run_log(tmp_path / "runs.jsonl").trials
    assert backend.windows == [1, 3]
    assert (trial.usage["windows_assessed"], trial.usage["windows_dropped"]) == (2, 1)
    assert [w["last_entry"] for w in trial.windows] == [0, 2]
    assert runner.summary.statuses["ok"] == 1


async def test_paper_image_trial_has_one_window_with_every_frame(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [encode_frame(np.full((40, 60, 3), 40 * i, dtype=np.uint8), ts=float(i)) for i in range(3)]
    assert all(f.source == CAMERA_SOURCE and f.jpeg[:2] == b"\xff\xd8" for f in frames)
    # Frames come from the test rather than a PNG (image loading is covered by test_replay_images).
    monkeypatch.setattr("replay.runner.image_frames", lambda scenario, *, interval_s: list(frames))
    image = Scenario(id="image-9", modality="image", severity="critical", reference=REFERENCE)
    await _run(tmp_path, WindowCountingBackend(), [image], protocol="paper", trials=2)
    trials = read_run_log(tmp_path / "runs.jsonl").trials
    assert [t.windows[0]["entries"] for t in trials] == [[0, 1, 2], [0, 1, 2]]
    assert all(len(t.windows) == 1 and t.entries == 3 for t in trials)
