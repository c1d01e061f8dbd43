"""Observations: the data that flows from sensors into windows.

An observation is immutable and carries the id of the source that produced it
and the time it was observed (seconds since the epoch, or since the start of a
replayed stream).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

if TYPE_CHECKING:  # numpy is only needed by whoever handles pixels
    import numpy as np
    import numpy.typing as npt

    Image = npt.NDArray[np.uint8]
    GreyImage = npt.NDArray[np.uint8]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of an activity log, as the monitor sees it.

    `clock` keeps the time as written in the log (PaSBench logs carry a clock
    time of day such as ``06:45 AM`` and no date); `ts` is when the monitor
    observed the entry.
    """

    source: str
    ts: float
    text: str
    clock: str | None = None
    location: str | None = None
    environment: str | None = None
    behaviour: str | None = None
    actor: str | None = None
    raw: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ts": self.ts,
            "clock": self.clock,
            "location": self.location,
            "environment": self.environment,
            "behaviour": self.behaviour,
            "actor": self.actor,
            "text": self.text,
            "raw": self.raw,
        }

    def restamped(self, ts: float) -> LogEntry:
        """This entry as observed at `ts` instead."""
        return dataclasses.replace(self, ts=ts)


AlarmKind = Literal["smoke", "carbon_monoxide"]


@dataclass(frozen=True, slots=True)
class AlarmHeard(LogEntry):
    """A smoke or carbon-monoxide alarm pattern a microphone hears sounding (two full cycles or more).

    An activity entry like any other (it goes into its zone's window, so the model sees it among the
    frames and logs), and in addition a finding the pipeline turns into a critical alert without a
    model call (docs/audio.md, "the direct path"). Only sensors/audio.py makes these.
    """

    alarm: AlarmKind = field(default="smoke", kw_only=True)
    sounding_s: float = field(default=0.0, kw_only=True)


class Frame:
    """One sampled camera frame: its pixels at the size the model may see, JPEG-encoded only if asked.

    A camera hands over the downscaled BGR `image` and the gate's grey `thumbnail`;
    the JPEG is encoded the first time `jpeg` is read (in practice: only for the
    frames chosen as keyframes) and kept, so a frame is encoded at most once however
    many windows send it. Frames made from JPEG bytes (replay, tests) carry those.
    Immutable once built; the lazy parts are computed under a lock, so any thread may
    read them. Nothing here writes a frame to disk.

    `change` is the gate's change score (0..1) against the last frame it passed.
    """

    __slots__ = ("_derived", "_image", "_lock", "change", "facts", "height", "jpeg_quality", "source",
                 "thumbnail", "ts", "width")

    source: str
    ts: float
    width: int
    height: int
    change: float
    facts: tuple[str, ...]
    jpeg_quality: int
    thumbnail: GreyImage | None
    _image: Image | None
    _lock: threading.Lock
    _derived: dict[Hashable, Any]

    def __init__(self, *, source: str, ts: float, width: int, height: int, jpeg: bytes | None = None,
                 image: Image | None = None, change: float = 0.0, facts: tuple[str, ...] = (),
                 jpeg_quality: int = 80, thumbnail: GreyImage | None = None) -> None:
        if jpeg is None and image is None:
            raise ValueError(f"frame of '{source}' at {ts}: give its JPEG bytes or its image")
        fields = {"source": source, "ts": ts, "width": width, "height": height, "change": change,
                  "facts": tuple(facts), "jpeg_quality": jpeg_quality, "thumbnail": thumbnail,
                  "_image": image, "_lock": threading.Lock(), "_derived": {} if jpeg is None else {"jpeg": jpeg}}
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Frame is immutable: cannot set {name}")

    def __repr__(self) -> str:
        return (f"Frame(source={self.source!r}, ts={self.ts!r}, width={self.width}, height={self.height}, "
                f"change={self.change:.4f}, encoded={'jpeg' in self._derived})")

    @property
    def image(self) -> Image | None:
        """The BGR pixels the camera kept (None for a frame made from JPEG bytes)."""
        return self._image

    @property
    def jpeg(self) -> bytes:
        """The frame as JPEG at `jpeg_quality`: encoded on first use, once."""
        return self.derived("jpeg", _encode_jpeg)

    @property
    def encoded(self) -> bool:
        """Whether the JPEG exists yet (a frame the model never saw is never encoded)."""
        return "jpeg" in self._derived

    def restamped(self, ts: float) -> Frame:
        """This frame as observed at `ts` instead (a sensor clock that was wrong): pixels and encodings shared."""
        frame = Frame(source=self.source, ts=ts, width=self.width, height=self.height, image=self._image,
                      jpeg=self._derived.get("jpeg"), change=self.change, facts=self.facts,
                      jpeg_quality=self.jpeg_quality, thumbnail=self.thumbnail)
        frame._derived.update(self._derived)  # what was computed from the pixels does not depend on the time
        return frame

    def derived(self, key: Hashable, make: Callable[[Frame], _T]) -> _T:
        """`make(self)`, computed once per `key` and kept with the frame; safe from any thread."""
        try:
            return cast(_T, self._derived[key])
        except KeyError:
            pass
        with self._lock:  # one thread computes, the others wait for its result
            if key not in self._derived:
                self._derived[key] = make(self)
            return cast(_T, self._derived[key])


def _encode_jpeg(frame: Frame) -> bytes:
    from sensors.camera import encode_jpeg  # OpenCV: imported by whoever needs a JPEG, not by every importer

    assert frame.image is not None  # a frame without pixels was built with its JPEG
    return encode_jpeg(frame.image, frame.jpeg_quality)


Observation = LogEntry | Frame
# What a source calls with each observation it produces.
Emit = Callable[[Observation], Awaitable[None]]

SourceState = Literal["online", "offline"]


class SourceHealth(Protocol):
    """What every source reports about itself (for readiness, zone state, metrics and stats)."""

    @property
    def state(self) -> SourceState: ...

    @property
    def bad_input(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class InputHealth:
    """The health of a source of activity entries: online or not, and the inputs it could not use."""

    source: str
    state: SourceState
    entries: int = 0
    bad_input: int = 0
    last_error: str | None = None
    truncated: int = 0
    # A followed log file when its source (re)started: bytes after the kept read position that were read, and skipped.
    resumed_bytes: int = 0
    skipped_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "state": self.state, "entries": self.entries,
                "bad_input": self.bad_input, "last_error": self.last_error, "truncated": self.truncated,
                "resumed_bytes": self.resumed_bytes, "skipped_bytes": self.skipped_bytes}


class ObservationSource(Protocol):
    """Anything that emits observations until it ends or is cancelled, and reports its health."""

    id: str

    async def run(self, emit: Emit) -> None: ...

    def health(self) -> SourceHealth: ...
