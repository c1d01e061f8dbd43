"""A synthetic household for the history tests: a week of scripted sensors in four zones, a scripted model
whose mistakes are known, and the monitor's own pipeline recording it all.

The recorded model (RECORDED_SCRIPT) warns about the ladder in the garage and the knife
in the kitchen (right), warns every time the hob is left on low (the known false alarm:
this home simmers soup that way on purpose), and never sees the wet bathroom floor (the
known miss). CANDIDATE_CALM_HOB is the same model with the false alarm fixed;
CANDIDATE_WET_FLOOR is the recorded one that also catches the wet floor.

Time is simulated: the week starts on Monday 2026-01-05 00:00 UTC, each entry is its own
window (lockstep), and every clock the pipeline, the alert lifecycle and the recorder read
is the simulated one, so records fall on the days the entries name.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from monitor.backends import create_backend
from monitor.daemon.wiring import build_assessor
from monitor.history.recorder import HistoryRecorder
from monitor.pipeline import Pipeline
from monitor.settings import Settings, load_settings
from replay.history import ReplayAlerts
from replay.streams import TrialRecorder
from sensors.types import Emit, Frame, InputHealth, LogEntry, Observation

START = 1767571200.0  # Monday 2026-01-05 00:00 UTC
DAY = 86400.0
ZONES = ("kitchen", "garage", "bathroom", "hall")
CAMERA = "garage-cam"

LADDER = {"danger": True, "severity": "warning", "hazard": "fall from ladder",
          "reason": "Alex leans far out from the top of the ladder.", "advice": "Climb down and move the ladder.",
          "evidence": ["leans far out"], "confidence": 0.9}
HOB = {"danger": True, "severity": "warning", "hazard": "unattended hob",
       "reason": "The hob is on with nobody in the kitchen.", "advice": "Go back and watch the pan.",
       "evidence": ["hob on low", "leaves the kitchen"], "confidence": 0.8}
KNIFE = {"danger": True, "severity": "info", "hazard": "knife cut", "reason": "Chopping towards the fingers.",
         "advice": "Cut away from your hand.", "evidence": ["big knife"], "confidence": 0.7}
WET = {"danger": True, "severity": "critical", "hazard": "slip on wet floor",
       "reason": "Grandma walks in socks on the wet floor.", "advice": "Dry the floor and wear slippers.",
       "evidence": ["wet floor", "socks"], "confidence": 0.9}
SAFE = {"danger": False, "severity": "info", "hazard": "", "reason": "Nothing risky.", "advice": "",
        "evidence": [], "confidence": 0.8}

RECORDED_SCRIPT = {"rules": [{"match": "ladder", "reply": LADDER}, {"match": "hob on low", "reply": HOB},
                             {"match": "big knife", "reply": KNIFE}], "default": SAFE}
CANDIDATE_CALM_HOB = {"rules": [{"match": "ladder", "reply": LADDER}, {"match": "big knife", "reply": KNIFE}],
                      "default": SAFE}
CANDIDATE_WET_FLOOR = {"rules": [{"match": "wet floor", "reply": WET}, *RECORDED_SCRIPT["rules"]],
                       "default": SAFE}

# One episode: (zone, minutes after midnight, entries a minute apart). Episodes are hours apart,
# so a window (10 minutes of age at most) never mixes two of them.
_DAILY: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("bathroom", 6 * 60 + 30, ("Kim brushes her teeth", "Kim combs her hair")),
    ("hall", 7 * 60, ("Kim hangs the coat", "Kim picks up the keys", "Kim leaves for work")),
    ("kitchen", 8 * 60, ("Sam makes tea", "Sam drinks the tea", "Sam rinses the cup")),
    ("kitchen", 13 * 60, ("Sam makes a sandwich", "Sam eats at the table", "Sam wipes the table")),
    ("hall", 16 * 60, ("the children come home", "the children put their shoes on the rack")),
    ("bathroom", 9 * 60, ("Grandma showers", "the floor is wet after the shower",
                          "Grandma walks on the wet floor in socks", "Grandma sits down on the stool")),
    ("kitchen", 18 * 60, ("Sam puts a pan of soup on the hob", "Sam sets the hob on low and goes to read",
                          "Sam reads in the living room", "Sam comes back and stirs the soup")),
    ("hall", 19 * 60, ("the postman rings", "Kim signs for a parcel")),
    ("bathroom", 21 * 60, ("the children brush their teeth", "the children go to bed")),
)
_SOMETIMES: tuple[tuple[int, str, int, tuple[str, ...]], ...] = (
    (1, "garage", 10 * 60, ("Alex fetches the ladder", "Alex climbs the ladder to the top shelf",
                            "Alex leans far out from the ladder", "Alex climbs down")),
    (3, "garage", 11 * 60, ("Alex sorts screws", "Alex sweeps the floor")),
    (4, "kitchen", 12 * 60, ("Sam chops onions with the big knife towards the fingers", "Sam washes the knife")),
    (5, "garage", 10 * 60, ("Alex climbs the ladder to clean the gutter", "Alex leans far out from the ladder")),
)


@dataclass(frozen=True, slots=True)
class Planned:
    """One entry of the household: its zone, its simulated time and its text."""

    zone: str
    ts: float
    text: str


def week(days: int = 7) -> list[Planned]:
    """The household's entries, in time order."""
    planned = []
    for day in range(days):
        episodes = [*_DAILY, *((z, m, t) for d, z, m, t in _SOMETIMES if d == day)]
        for zone, minute, texts in episodes:
            for offset, text in enumerate(texts):
                planned.append(Planned(zone, START + day * DAY + (minute + offset) * 60.0, text))
    return sorted(planned, key=lambda p: p.ts)


def frame_for(planned: Planned) -> Frame:
    """A small camera frame of the garage, different for every entry."""
    image = np.full((48, 64, 3), int(planned.ts) % 200, dtype=np.uint8)
    cv2.putText(image, str(int(planned.ts) % 1000), (2, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    return Frame(source=CAMERA, ts=planned.ts, jpeg=jpeg.tobytes(), width=64, height=48)


class SimClock:
    """The simulated time every part of the household run reads."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class HouseholdSensors:
    """Emits the week entry by entry (a garage entry with its camera frame), each once the last window settled."""

    id = "household"

    def __init__(self, entries: Sequence[Planned], clock: SimClock, settled: TrialRecorder, *,
                 camera: bool = False) -> None:
        self.entries = list(entries)
        self.clock = clock
        self.settled = settled
        self.camera = camera
        self.ended = False

    async def run(self, emit: Emit) -> None:
        try:
            for index, planned in enumerate(self.entries):
                self.clock.now = planned.ts
                observations: list[Observation] = [LogEntry(source=planned.zone, ts=planned.ts, text=planned.text)]
                if self.camera and planned.zone == "garage":
                    observations.append(frame_for(planned))
                for observation in observations:
                    await emit(observation)
                await self.settled.wait_settled(index + 1)
        finally:
            self.ended = True

    def health(self) -> InputHealth:
        return InputHealth(self.id, "offline" if self.ended else "online")


def household_settings(state: Path, script: dict[str, Any], **sections: Any) -> Settings:
    """Settings of a household monitor: the scripted model, its state dir, windows of three entries."""
    path = state.parent / f"script-{abs(hash(json.dumps(script, sort_keys=True)))}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(script))
    base: dict[str, Any] = {
        "service": {"state_dir": str(state)},
        "model": {"backend": "scripted", "model": "scripted-home", "script": str(path)},
        "windows": {"max_entries": 3, "max_frames": 2, "max_age_s": 600, "min_interval_s": 0},
        "alerts": {"dedup_ttl_s": 300},
        "zones": [{"id": zone} for zone in ZONES],
        "sinks": {"stdout": {"enabled": False}},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_settings(None, **base)


async def record_household(settings: Settings, *, days: int = 7, camera: bool = False,
                           recorder: HistoryRecorder | None = None) -> HistoryRecorder:
    """Run the week through the monitor's pipeline with the history recorder; returns it, still open."""
    clock = SimClock()
    recorder = recorder or HistoryRecorder(settings, clock=clock)
    backend = recorder.capture(create_backend(settings.model))
    await backend.start()
    settled = TrialRecorder()
    sensors = HouseholdSensors(week(days), clock, settled, camera=camera)
    pipeline = Pipeline(
        sources=[(sensors, "household")], assessor=build_assessor(settings, backend, notes=recorder.notes),
        sinks=[], windows=settings.windows, alerts=ReplayAlerts(settings.alerts, clock=clock),
        observers=[recorder, settled], exit_when_sources_end=True, clock=clock)
    pipeline.zone_of.update({zone: zone for zone in ZONES} | {CAMERA: "garage"})
    try:
        await asyncio.wait_for(pipeline.run(), 120)
    finally:
        await backend.close()
    await asyncio.to_thread(recorder.flush)
    return recorder
