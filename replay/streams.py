"""Scenarios as observation streams for the monitor's own pipeline.

Two protocols:

- ``paper``: the whole input at once, as in the paper. A text sample is ONE LogEntry
  whose text is the whole log; an image sample is its 2-3 frames, emitted together so
  the first window holds the whole sequence. One assessment per trial.
- ``stream``: the log's entries (parsed with the monitor's PaSBench parser) or the
  frames arrive one by one. Paced at ``interval_s / speed`` seconds apart, or with
  speed 0 in *lockstep*: the next entry is emitted only once the window holding the
  previous one has been settled (assessed, failed or dropped; the trial's recorder
  hears it from the pipeline), so results do not
  depend on timing and an identical re-run is answered from the cache.

Timestamps are stream time (entry index x interval_s from 0), not the wall clock,
so prompts are identical from run to run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from monitor.alerts import AlertEvent
from monitor.observer import Observer, Settled
from monitor.windows import Window
from replay.errors import ReleaseError
from replay.pasbench import Scenario
from sensors.logs.parsers import parse_pasbench_log
from sensors.types import Emit, Frame, InputHealth, LogEntry, Observation

if TYPE_CHECKING:  # OpenCV and numpy are imported by the image functions only: a text replay starts without them
    import numpy as np
    import numpy.typing as npt

ProtocolName = Literal["paper", "stream"]
PROTOCOLS: tuple[ProtocolName, ...] = ("paper", "stream")
# How an image record reaches the model: its 2-3 panels as frames (as a camera would give them), or
# the composite as the one picture it is (as the paper sends it).
ImageInput = Literal["frames", "composite"]
IMAGE_INPUTS: tuple[ImageInput, ...] = ("frames", "composite")
# Neutral names: they appear in the prompt, so they must not hint at the scenario.
LOG_SOURCE = "activity-log"
CAMERA_SOURCE = "camera"
ZONE = "scenario"
# Frames are downscaled to this longest side and JPEG-encoded, as a camera sensor would.
FRAME_MAX_SIDE = 1280
FRAME_JPEG_QUALITY = 85
# A composite holds 2-3 panels side by side: keep it large enough that each panel stays legible.
# 2048 px is also the size OpenAI-style endpoints scale larger pictures down to.
COMPOSITE_MAX_SIDE = 2048


@dataclass(frozen=True, slots=True)
class Pacing:
    """How a stream is emitted: all at once, in lockstep with assessment, or every `delay_s` seconds."""

    mode: Literal["at_once", "lockstep", "paced"]
    delay_s: float = 0.0

    @classmethod
    def for_protocol(cls, protocol: ProtocolName, *, speed: float, interval_s: float) -> Pacing:
        if protocol == "paper":
            return cls("at_once")
        if speed <= 0:
            return cls("lockstep")
        return cls("paced", interval_s / speed)


def source_id(scenario: Scenario) -> str:
    return CAMERA_SOURCE if scenario.modality == "image" else LOG_SOURCE


def text_observations(scenario: Scenario, protocol: ProtocolName, *, interval_s: float) -> list[LogEntry]:
    """A text scenario's observations: the whole log as one entry (paper), or its parsed entries (stream)."""
    text = scenario.text or ""
    if protocol == "paper":
        return [LogEntry(source=LOG_SOURCE, ts=0.0, text=text.strip(), raw=text)]
    entries = parse_pasbench_log(text, source=LOG_SOURCE, clock=lambda: 0.0)
    if not entries:
        raise ReleaseError(f"{scenario.origin or scenario.id}: the monitor parsed no entry from this log")
    return [replace(entry, ts=index * interval_s) for index, entry in enumerate(entries)]


def decode_frames(scenario: Scenario) -> list[npt.NDArray[np.uint8]]:
    """A composite's frames in reading order (blocking: decode and split off the event loop)."""
    from sensors.composite import split_composite

    return split_composite(decode_composite(scenario))


def decode_composite(scenario: Scenario) -> npt.NDArray[np.uint8]:
    """A record's composite PNG, decoded whole (blocking), if its header states a size within the pixel budget."""
    import cv2
    import numpy as np

    from sensors.image_header import DEFAULT_MAX_PIXELS, ImageRefused, check_image, max_file_bytes

    if scenario.image is None:
        raise ReleaseError(f"{scenario.id}: not an image scenario")
    raw = scenario.image.read_bytes(limit=max_file_bytes(DEFAULT_MAX_PIXELS))
    try:
        check_image(raw, DEFAULT_MAX_PIXELS)
    except ImageRefused as exc:
        raise ReleaseError(f"{scenario.image.where} ({scenario.origin}): {exc}") from exc
    decoded = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ReleaseError(f"{scenario.image.where} ({scenario.origin}): not a PNG OpenCV can decode")
    return np.asarray(decoded, dtype=np.uint8)


def composite_frame(scenario: Scenario) -> Frame:
    """The whole composite as ONE frame (the paper's input), at most COMPOSITE_MAX_SIDE px (blocking)."""
    return encode_frame(decode_composite(scenario), ts=0.0, max_side=COMPOSITE_MAX_SIDE)


def encode_frame(image: npt.NDArray[np.uint8], *, ts: float, max_side: int = FRAME_MAX_SIDE) -> Frame:
    """One frame, downscaled to `max_side` and JPEG-encoded (blocking)."""
    import cv2
    import numpy as np

    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, FRAME_JPEG_QUALITY])
    if not ok:
        raise ReleaseError("cannot JPEG-encode a frame")
    return Frame(source=CAMERA_SOURCE, ts=ts, jpeg=jpeg.tobytes(), width=image.shape[1], height=image.shape[0])


def image_frames(scenario: Scenario, *, interval_s: float) -> list[Frame]:
    """An image scenario's frames as Frame observations, 0, interval_s, 2 x interval_s ... apart (blocking)."""
    return [encode_frame(image, ts=index * interval_s) for index, image in enumerate(decode_frames(scenario))]


class TrialRecorder(Observer):
    """Listens to one trial's pipeline: every settled window in order and every published alert event.

    A lockstep stream waits on it: a window counts as settled once assessed, failed or
    dropped, and each of those wakes the waiting stream at once.
    """

    def __init__(self) -> None:
        self.settled: list[Settled] = []
        self.events: list[AlertEvent] = []
        self.dropped = 0
        self._changed = asyncio.Event()

    @property
    def settled_count(self) -> int:
        return len(self.settled) + self.dropped

    def window_settled(self, settled: Settled) -> None:
        self.settled.append(settled)
        self._changed.set()

    def window_dropped(self, window: Window, reason: str) -> None:
        self.dropped += 1
        self._changed.set()

    def alert_published(self, event: AlertEvent) -> None:
        self.events.append(event)

    async def wait_settled(self, count: int) -> None:
        """Return once `count` windows have settled."""
        while self.settled_count < count:
            self._changed.clear()
            await self._changed.wait()


class ScenarioStream:
    """An ObservationSource that emits one scenario's observations with the given pacing."""

    def __init__(self, observations: Sequence[Observation], *, source: str, pacing: Pacing,
                 recorder: TrialRecorder | None = None, on_emit: Callable[[int], None] | None = None) -> None:
        if pacing.mode == "lockstep" and recorder is None:
            raise ValueError("a lockstep stream needs a TrialRecorder to wait on")
        self.id = source
        self.ended = False
        self.observations = list(observations)
        self.pacing = pacing
        self.recorder = recorder
        self.on_emit = on_emit
        self.emitted = 0
        self.now = 0.0  # the stream's time: that of the observation emitted last

    async def run(self, emit: Emit) -> None:
        try:
            if self.pacing.mode == "at_once":
                # No await may yield between emits: the first window must hold the whole input.
                for index, observation in enumerate(self.observations):
                    await self._emit(emit, index, observation)
                return
            for index, observation in enumerate(self.observations):
                if index and self.pacing.mode == "paced":
                    await asyncio.sleep(self.pacing.delay_s)
                await self._emit(emit, index, observation)
                if self.recorder is not None and self.pacing.mode == "lockstep":
                    await self.recorder.wait_settled(index + 1)
        finally:
            self.ended = True

    def health(self) -> InputHealth:
        return InputHealth(self.id, "offline" if self.ended else "online", entries=self.emitted)

    def clock(self) -> float:
        """The stream's time, for the pipeline: windows age on it as they would have live."""
        return self.now

    async def _emit(self, emit: Emit, index: int, observation: Observation) -> None:
        self.now = observation.ts
        await emit(observation)
        self.emitted = index + 1
        if self.on_emit is not None:
            self.on_emit(index)

