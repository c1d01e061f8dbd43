"""Microphone sources: an ALSA capture device, a stream's audio track or a file, through PyAV.

One capture thread per microphone opens the input with PyAV (FFmpeg: the `alsa`
input format for devices, RTSP/HTTP/RTMP for streams, any container for files),
decodes, resamples to 16 kHz mono float and hands the samples to a `Listener`
(sensors/audio_detect.py) in the same thread. Only the listener's facts, as text,
cross to the event loop: no sample leaves the thread, nothing is written
anywhere, and nothing but a `LogEntry` (or its `AlarmHeard` kind) is emitted.

Like cameras: a live source (device, stream, file at a speed) that fails to open
or stops delivering goes `offline` and is reopened with exponential backoff and
jitter; a file that cannot be read makes `run` raise `SensorError`, and the
pipeline restarts it with backoff (one that fails after delivering audio ends with
its error instead: read again, it would be heard, and alerted on, twice). A packet
the decoder rejects is skipped and counted, as FFmpeg's tools do. Files are timed by media time: at speed 0 a
fact is stamped with the start time plus its media time, otherwise with wall time.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitor.core.errors import SensorError
from monitor.core.text import redact_credentials
from sensors.audio_config import MicrophoneSettings, alsa_device_problem
from sensors.audio_detect import RATE, DetectSettings, Heard, Listener
from sensors.capture import CaptureLifecycle, CaptureRun, OpenFailed, Outcome, State
from sensors.types import AlarmHeard, Emit, LogEntry

# Facts waiting for the event loop; a few a minute is a lot, so this only bounds a stalled loop.
_QUEUE = 256
# The ALSA library inside the PyAV wheel looks for its configuration where the wheel was built; the
# system's is the one that names this machine's cards and plugins.
_ALSA_CONFIG = Path("/usr/share/alsa")
# Sample rates a microphone's audio can have: a header saying 1 Hz would make 1,600 samples 27 minutes of
# "sound" at 16 kHz (and impacts out of its steps). 4 kHz is below any codec's; 768 kHz is the fastest ADCs'.
_RATES = (4_000, 768_000)
# Rates below this cannot carry the 3 kHz alarm band (2.6-3.6 kHz): only the 520 Hz alarms can be heard.
_ALARM_BAND_RATE = 7_200
# A decoder rejecting this many packets in a row is not reading audio: the input fails (a stream reopens).
_BAD_PACKETS_IN_A_ROW = 50
# A file's audio starting this much after its start (a video's late audio track) keeps the file's clock.
_MAX_LEAD_S = 3600.0


# A downmix this far below its channels' own power (20 dB): the channels cancel, one is wired inverted.
_CANCELLED = 0.01


class _Undecodable(RuntimeError):
    """Audio that decodes but cannot be heard (a sample rate no microphone has), or packets that do not decode."""


@dataclass(frozen=True, slots=True)
class MicrophoneHealth:
    """A microphone's health at one moment, for logs, status topics and metrics. Numbers and words only."""

    source: str
    state: State
    last_audio_age_s: float | None
    seconds_heard: float
    facts: int
    alarms_sounding: tuple[str, ...]
    reconnects: int
    facts_dropped: int = 0
    last_error: str | None = None
    ended: bool = False
    bad_input: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "state": self.state, "kind": "microphone",
            "last_audio_age_s": None if self.last_audio_age_s is None else round(self.last_audio_age_s, 3),
            "seconds_heard": round(self.seconds_heard, 1), "facts": self.facts,
            "alarms_sounding": list(self.alarms_sounding), "reconnects": self.reconnects,
            "facts_dropped": self.facts_dropped, "last_error": self.last_error, "ended": self.ended,
            "bad_input": self.bad_input,
        }


class _Hearing(CaptureRun):
    """One run of a microphone's capture thread: `done` is set when that thread has ended."""

    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()


class MicrophoneSource(CaptureLifecycle[Any, _Hearing]):
    """Hears one microphone and emits what it heard as text observations."""

    noun = "microphone"

    def __init__(self, settings: MicrophoneSettings) -> None:
        super().__init__(settings.id, settings.reconnect, logger="sensors.audio")
        self.settings = settings
        hearing = settings.hearing
        self._detect = DetectSettings(alarms=hearing.alarms, sounds=hearing.sounds, impact_db=hearing.impact_db,
                                      high_pitch_db=hearing.high_pitch_db, repeat_s=hearing.repeat_s)
        self.listener = Listener(self._detect)
        self._last_audio_at: float | None = None
        self._facts: deque[LogEntry] = deque()
        self._lock = threading.Lock()
        self.samples = 0
        self.facts = 0
        self.facts_dropped = 0
        self.bad_input = 0
        self._bad_packets = 0  # rejected by the decoder in a row
        self._lead_s: float | None = None  # this opening's audio starts this far into its file (None: not yet known)
        self._lead_total = 0.0  # all openings' leads: a looped file's clock goes on from where it was
        self._waiting_until = 0.0  # monotonic: a paced file waits for its media clock until then
        self._why_lost: str | None = None  # why a live input failed while decoding, for the reconnect's error
        self._sounding: tuple[str, ...] = ()
        self._notify: Callable[[], object] = lambda: None  # run() sets the event loop's wake-up

    # -- the event loop side ---------------------------------------------------------------------------
    async def run(self, emit: Emit) -> None:
        """Hear until stopped (or a file ends); raises SensorError for a file that cannot be read."""
        loop = asyncio.get_running_loop()
        available = asyncio.Event()
        self._notify = lambda: loop.call_soon_threadsafe(available.set)
        hearing = _Hearing()
        self._start_capture(hearing)
        try:
            while True:
                available.clear()
                for entry in self._take():
                    await emit(entry)
                if hearing.done.is_set():
                    for entry in self._take():
                        await emit(entry)
                    if hearing.error is not None:
                        raise hearing.error
                    return
                await available.wait()
        finally:
            await self._stop_capture()

    def _take(self) -> list[LogEntry]:
        with self._lock:
            taken = list(self._facts)
            self._facts.clear()
        return taken

    def health(self) -> MicrophoneHealth:
        """A snapshot of this microphone's health; safe to call from the event loop at any time."""
        age = None if self._last_audio_at is None else time.monotonic() - self._last_audio_at
        state = self._state
        waiting = time.monotonic() < self._waiting_until  # for the media clock (a file's late audio): not silence
        if state == "online" and age is not None and age > self.settings.reconnect.read_timeout_s and not waiting:
            state = "offline"  # the capture thread is still blocked in a read that will time out
        return MicrophoneHealth(
            source=self.id, state=state, last_audio_age_s=age, seconds_heard=self.samples / RATE,
            facts=self.facts, alarms_sounding=self._sounding, reconnects=self.reconnects,
            facts_dropped=self.facts_dropped, last_error=self._last_error, ended=self.ended,
            bad_input=self.bad_input)

    # -- the capture thread -------------------------------------------------------------------------------
    def _capture_ended(self, run: _Hearing) -> None:
        run.done.set()  # before the wake-up: run() must see it on waking, whether the thread has exited
        self._notify()

    def _lost(self) -> str:
        why, self._why_lost = self._why_lost, None
        return f"microphone '{self.id}': stream stopped delivering audio" + (f": {why}" if why else "")

    def _online_fields(self) -> dict[str, Any]:
        return {"kind": self.settings.kind}

    def _close_input(self, opened: Any) -> None:
        opened.close()

    def _open(self) -> Any:
        import av  # PyAV: imported by whoever hears, not by every importer of the sensors

        settings = self.settings
        timeout = (settings.reconnect.open_timeout_s, settings.reconnect.read_timeout_s)
        if settings.kind == "file":
            assert settings.path is not None  # validated by MicrophoneSettings
            if not settings.path.is_file():
                what = "is not a regular file" if settings.path.exists() else "not found"
                raise SensorError(f"microphone '{self.id}': audio file {settings.path} {what}")
            try:
                container = av.open(str(settings.path))
            except (av.FFmpegError, OSError, ValueError) as exc:
                self.bad_input += 1
                raise SensorError(f"microphone '{self.id}': cannot open audio file {settings.path}: {exc}") from exc
            return self._with_audio(container, f"file {settings.path}", fatal=True)
        if settings.kind == "device":
            assert settings.device is not None
            _use_system_alsa_config()
            options = {"sample_rate": str(RATE), "channels": "1", **settings.options}
            try:
                container = av.open(settings.device, format="alsa", options=options, timeout=timeout)
            except (av.FFmpegError, OSError, ValueError) as exc:
                problem = alsa_device_problem(settings.device) or str(exc)
                raise OpenFailed(f"microphone '{self.id}': cannot open ALSA capture device "
                                  f"'{settings.device}': {problem}") from exc
            return self._with_audio(container, f"ALSA device '{settings.device}'", fatal=False)
        assert settings.url is not None
        where = redact_credentials(settings.url)
        try:
            container = av.open(settings.url, options=dict(settings.options), timeout=timeout)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise OpenFailed(f"microphone '{self.id}': cannot open {where}: "
                              f"{redact_credentials(str(exc))}") from exc
        return self._with_audio(container, where, fatal=False)

    def _with_audio(self, container: Any, where: str, *, fatal: bool) -> Any:
        if not container.streams.audio:
            container.close()
            message = f"microphone '{self.id}': {where} has no audio track"
            self.bad_input += 1
            if fatal:
                raise SensorError(message)
            raise OpenFailed(message)
        return container

    def _pump(self, container: Any, run: _Hearing) -> Outcome:
        """Decode until the input ends or fails; 'delivered' means it failed after delivering audio."""
        import av

        stream = container.streams.audio[0]
        mono = _ToMono(self._log, noticed=self._noticed)
        paced = self.settings.kind == "file" and self.settings.speed > 0
        opened_at = time.monotonic()
        heard_before = self.samples
        self._lead_s = None
        self._bad_packets = 0
        try:
            for packet in container.demux(stream):
                if run.stop.is_set():  # checked after each read: a read blocked past the stop hears nothing more
                    return "stopped"
                for frame in self._decoded(packet):
                    self._lead_in(container, frame)
                    for block in mono.resample(frame):
                        self._hear(block)
                if paced and self._pace(opened_at, heard_before, run):
                    return "stopped"
            for block in mono.flush():
                self._hear(block)
        except (av.FFmpegError, OSError, ValueError, RuntimeError) as exc:
            if run.stop.is_set():  # a read that failed after the stop: not bad input
                return "stopped"
            return self._failed(exc, heard_before)
        if run.stop.is_set():
            return "stopped"
        return self._input_end(heard_before)

    def _decoded(self, packet: Any) -> list[Any]:
        """A packet's frames; a packet the decoder rejects is skipped and counted, as FFmpeg's own tools do.

        A corrupt packet in a long recording (a cut last packet, a tag between two joined files) would
        otherwise end the whole input, and a file failed that way is read again from its start.
        """
        import av

        try:
            frames = list(packet.decode())
        except av.FFmpegError as exc:
            if not isinstance(exc, av.InvalidDataError | av.PatchWelcomeError):  # not about this packet
                raise
            self._bad_packets += 1
            self.bad_input += 1
            if self._bad_packets >= _BAD_PACKETS_IN_A_ROW:
                raise _Undecodable(f"{_BAD_PACKETS_IN_A_ROW} packets in a row could not be decoded: {exc}") from exc
            self._last_error = f"microphone '{self.id}': {self._where()}: a packet could not be decoded " \
                               f"(skipped): {redact_credentials(str(exc))}"
            log = self._log.warning if self._bad_packets == 1 else self._log.debug  # one line per bad stretch
            log("audio packet skipped", error=self._last_error, bad_input=self.bad_input)
            return []
        if frames:
            self._bad_packets = 0
        return frames

    def _lead_in(self, container: Any, frame: Any) -> None:
        """A file's audio that starts after its video: its facts keep the file's clock (as its camera's frames do)."""
        if self._lead_s is not None:
            return
        self._lead_s = 0.0
        if self.settings.kind != "file" or frame.time is None:
            return
        start = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        lead = float(frame.time) - start
        if 0.0 < lead <= _MAX_LEAD_S:
            self._lead_s = lead
            self._lead_total += lead
            self._log.info("microphone audio starts late", seconds=round(lead, 3))

    def _pace(self, opened_at: float, start_samples: int, run: _Hearing) -> bool:
        """Wait for the media clock; True when stopped meanwhile."""
        media_t = (self.samples - start_samples) / RATE + (self._lead_s or 0.0)
        wait = opened_at + media_t / self.settings.speed - time.monotonic()
        self._waiting_until = time.monotonic() + wait
        return wait > 0 and run.stop.wait(wait)

    def _failed(self, exc: BaseException, heard_before: int) -> Outcome:
        """An input that failed while decoding: a file ends with the error (read again, it fails again).

        A stream reopens.
        """
        self.bad_input += 1
        if self.settings.kind == "file":
            message = f"microphone '{self.id}': cannot decode {self.settings.path}: {exc}"
            if self.samples == heard_before:
                raise SensorError(message) from exc
            # What was heard stays heard; running the file again would hear it (and alert on it) twice.
            self._last_error = message
            self._log.warning("microphone input failed after audio", error=message, seconds=self.samples / RATE)
            return "looped" if self.settings.loop else "ended"
        # Said by the reconnect's `microphone offline` and last_error (it used to be overwritten there unseen).
        self._why_lost = redact_credentials(str(exc))
        return "delivered" if self.samples > heard_before else "failed"

    def _noticed(self, problem: str) -> None:
        """Something wrong with the input that the source works around: counted and said, never silent."""
        self.bad_input += 1
        self._last_error = f"microphone '{self.id}': {self._where()}: {problem}"
        self._log.warning("microphone input problem worked around", error=self._last_error)

    def _where(self) -> str:
        settings = self.settings
        if settings.kind == "file":
            return f"file {settings.path}"
        if settings.kind == "device":
            return f"ALSA device '{settings.device}'"
        return redact_credentials(settings.url or "")

    def _input_end(self, heard_before: int) -> Outcome:
        if self.settings.kind != "file":  # a live input stopped delivering
            return "delivered" if self.samples > heard_before else "failed"
        if self.samples == heard_before:
            self.bad_input += 1
            raise SensorError(f"microphone '{self.id}': no audio could be decoded from {self.settings.path}")
        if self.settings.loop:
            return "looped"
        self._log.info("microphone reached the end", path=str(self.settings.path), seconds=self.samples / RATE)
        return "ended"

    def _hear(self, samples: Any) -> None:
        block = np.asarray(samples, dtype=np.float32)
        if not len(block):
            return
        self.samples += len(block)
        self._last_audio_at = time.monotonic()
        if self._state != "online":
            self._set_state("online")
        not_numbers = self.listener.bad_samples
        heard = self.listener.feed(block)
        if self.listener.bad_samples > not_numbers:  # a float stream's NaN, infinity or 1e30: silence, clipped
            self.bad_input += 1
            self._last_error = (f"microphone '{self.id}': {self._where()}: {self.listener.bad_samples} samples so far "
                                "were not numbers or far beyond full scale (heard as silence or clipped)")
        del block, samples  # nothing of the sound is kept: only what was heard in it
        self._sounding = tuple(sorted(self.listener.sounding))  # a copy: health() reads it from the loop
        for fact in heard:
            self._keep(self._entry(fact))

    def _entry(self, fact: Heard) -> LogEntry:
        lag = self.listener.now - fact.t
        if self.settings.kind == "file" and self.settings.speed == 0:
            ts = self._started_at + self._lead_total + fact.t
        else:
            ts = time.time() - lag
        text = f"heard: {fact.text}"
        if fact.alarm is not None:
            return AlarmHeard(source=self.id, ts=ts, text=text, alarm=fact.alarm,
                              sounding_s=_sounding_s(self.listener, fact))
        return LogEntry(source=self.id, ts=ts, text=text)

    def _keep(self, entry: LogEntry) -> None:
        self.facts += 1
        self._log.info("heard", text=entry.text, alarm=getattr(entry, "alarm", None))
        with self._lock:
            if len(self._facts) >= _QUEUE:
                self._facts.popleft()
                self.facts_dropped += 1
                self._log.warning("fact dropped", reason="queue_full", dropped_total=self.facts_dropped)
            self._facts.append(entry)
        self._notify()


class _ToMono:
    """Decoded frames to 16 kHz mono float blocks, whatever their sample format, layout or rate.

    A stream may change its rate or layout midway (recordings joined end to end, an ADTS or MPEG-TS
    concatenation, a camera renegotiating): a resampler set up for the first frames rejects the next,
    so a new one is set up for them, after the old one's last samples are taken.
    """

    def __init__(self, log: Any, *, noticed: Callable[[str], None]) -> None:
        self._resampler: Any = None
        self._setup: tuple[str, str, int] | None = None
        self._log = log
        self._noticed = noticed
        self._layout: tuple[str, int] | None = None  # the input's own, before any channel is picked
        self._channel: int | None = None  # the one channel heard, when the channels cancel in a downmix
        self._watching = True  # until a second of sound has shown whether they do
        self._watched = 0  # samples
        self._mixed = 0.0  # the downmix's energy over them...
        self._each: Any = 0.0  # ...and each channel's

    def resample(self, frame: Any) -> list[Any]:
        frame = self._one_channel(frame)
        setup = (frame.format.name, frame.layout.name, int(frame.sample_rate))
        blocks = []
        if setup != self._setup:
            _check_rate(setup[2])
            blocks = self.flush()
            import av

            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            if self._setup is not None:
                self._log.info("audio format changed", was=self._setup, now=setup)
            elif setup[2] < _ALARM_BAND_RATE:
                self._log.warning("sample rate too low for the 3 kHz alarm band: only 520 Hz alarms can be heard",
                                  sample_rate=setup[2])
            self._setup = setup
        return blocks + [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]

    def _one_channel(self, frame: Any) -> Any:
        """The frame, or its one channel heard when its channels cancel out in a mono downmix.

        A stereo input with one channel wired inverted (some microphone arrays, a miswired cable) sums to
        near silence: the downmix would hear nothing, and say nothing.
        """
        layout = (frame.layout.name, frame.layout.nb_channels)
        if layout != self._layout:  # another layout midway: its channels are judged afresh
            self._layout, self._channel, self._watching = layout, None, True
            self._watched, self._mixed, self._each = 0, 0.0, 0.0
        if frame.layout.nb_channels < 2:
            return frame
        if self._channel is None:
            if self._watching:
                self._watch(frame)
            return frame
        import av

        data = np.ascontiguousarray(_channels(frame)[self._channel:self._channel + 1])
        one = av.AudioFrame.from_ndarray(data, format=frame.format.planar.name, layout="mono")
        one.sample_rate = frame.sample_rate
        return one

    def _watch(self, frame: Any) -> None:
        samples = _channels(frame).astype(np.float64)
        samples -= samples.mean(axis=1, keepdims=True)  # an offset (u8's 128, DC) is no sound
        self._mixed += float(np.sum(samples.mean(axis=0) ** 2))
        self._each = self._each + np.sum(samples ** 2, axis=1)
        self._watched += frame.samples
        if self._watched < frame.sample_rate:  # a second at a time
            return
        each = np.asarray(self._each)
        if float(each.mean()) > 0.0:  # a second of sound (not digital silence) decides
            self._watching = False
            if self._mixed < _CANCELLED * float(each.mean()):
                self._channel = int(np.argmax(each))
                self._noticed(f"its {frame.layout.nb_channels} channels cancel out in a mono downmix (one wired "
                              f"inverted?): only channel {self._channel} is heard")
        self._watched, self._mixed, self._each = 0, 0.0, 0.0

    def flush(self) -> list[Any]:
        """The samples the resampler still holds (a few ms of filter delay)."""
        if self._resampler is None:
            return []
        return [out.to_ndarray().reshape(-1) for out in self._resampler.resample(None)]


def _channels(frame: Any) -> Any:
    """A frame's samples as (channels, samples), planar or packed."""
    data = frame.to_ndarray()
    return data if frame.format.is_planar else data.reshape(-1, frame.layout.nb_channels).T


def _check_rate(rate: int) -> None:
    low, high = _RATES
    if not low <= rate <= high:
        raise _Undecodable(f"sample rate {rate} Hz is not a microphone's ({low}-{high} Hz): a corrupt header?")


def _sounding_s(listener: Listener, fact: Heard) -> float:
    sounding = listener.sounding.get(fact.alarm) if fact.alarm is not None else None
    return 0.0 if sounding is None else max(0.0, fact.t - sounding.since)


def _use_system_alsa_config() -> None:
    """Point the wheel's ALSA library at the system's configuration (unless the user already chose one)."""
    if "ALSA_CONFIG_PATH" not in os.environ and (_ALSA_CONFIG / "alsa.conf").is_file():
        os.environ["ALSA_CONFIG_PATH"] = str(_ALSA_CONFIG / "alsa.conf")
        os.environ.setdefault("ALSA_CONFIG_DIR", str(_ALSA_CONFIG))
