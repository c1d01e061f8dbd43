"""Hearing without model weights: alarm patterns and sudden sounds from 16 kHz mono samples.

Smoke and CO alarms sound standard temporal patterns (ISO 8201, NFPA 72): the
temporal-three (T3, smoke: three 0.5 s tones 0.5 s apart, then 1.5 s of
silence) and the temporal-four (T4, carbon monoxide: four 0.1 s tones 0.1 s
apart, then about 5 s of silence), on a piezo tone near 3 kHz or, for the
low-frequency alarms of sleeping areas, a 520 Hz square wave.

Every 10 ms a spectrum is taken: over 16 ms for the 3 kHz band (2.6-3.6 kHz) and
over 32 ms for the 520 Hz band (460-585 Hz: 520 Hz +/-10 %, as NFPA 72 allows), whose
finer bins lift a tone out of speech and music, loudest there. In each band
the strongest peak is measured against the median of a wider band
around it: a tone stands out of household noise by its narrowness, so a
tone at the noise's power overall is still 15-20 dB above its neighbouring
bins. A frame is "on" when its peak is tonal and within 8 dB of the loudest
level of the last 0.3 s: a room's echo decays below that within the gaps, so
echo lengthens a tone a little instead of filling its gaps. On-runs are tones
(pulses) with a frequency; the matcher asks for two full cycles of a pattern
(6 tones for T3, 8 for T4) at one frequency (within 1.5 %, one tone within
3 %: each tone's frequency is measured to a fraction of a bin, and a voice's
harmonics glide where an alarm's tone holds), each duration and
gap inside generous bounds (timing spread between makes of alarm, clipping's
soft edges, echo). Clipping adds harmonics but keeps the fundamental the
strongest peak, so it changes nothing here. The 520 Hz square wave's third
harmonic (1.38-1.76 kHz, where speech and music mask less) is a second look at
its tones: each tone of a match may be heard at either.

Sudden sounds are measured against the room's running background (a level
tracker that follows quiet quickly and noise slowly): an impact is a sharp,
loud, broadband onset that is over within a second; a high-pitched sound is a
loud, tonal sound centred above 1 kHz that lasts at least 0.8 s (longer than
any alarm tone, so an alarm's tones are not reported as screams).

Only numbers derived from the samples are kept; the samples themselves are
dropped as soon as their spectrum is taken (at most 0.1 s wait to be heard).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

RATE = 16_000
HOP = 160  # 10 ms
NFFT = 256  # 16 ms: the 0.1 s tones and gaps of T4 stay apart
LOW_NFFT = 512  # 32 ms for the 520 Hz band: 31 Hz bins where speech and music are loudest
HOP_S = HOP / RATE
BATCH = 10 * HOP  # samples heard at once (0.1 s)
BIN_HZ = RATE / NFFT
_EPS = 1e-12
_WINDOWS = {size: np.hanning(size).astype(np.float32) for size in (NFFT, LOW_NFFT)}
_ECHO_FRAMES = 30  # 0.3 s
_DROPOUT_FRAMES = 2  # a tone missing for up to 20 ms goes on
_ONSET_DB = 6.0  # a rise this steep within 30 ms is a new tone
_SPLIT_AFTER = 12  # frames: a tone is split at an onset only after 120 ms (T4 tones start 0.2 s apart)
_NOT_AUDIO = 16.0  # a float sample beyond this (24 dB over full scale) is not a sound's: counted as bad

Samples = npt.NDArray[np.float32]
AlarmKind = Literal["smoke", "carbon_monoxide"]
HeardKind = Literal["alarm", "alarm_end", "impact", "high_pitch"]


@dataclass(frozen=True, slots=True)
class Band:
    """A tone band to search, and the wider band whose median is the noise floor around it."""

    name: str
    low_hz: float
    high_hz: float
    ref_low_hz: float
    ref_high_hz: float
    nfft: int = NFFT
    harmonic: int = 1  # a harmonic of the tones of `of`: its pulses are heard as the fundamental's
    of: str = ""

    @property
    def bin_hz(self) -> float:
        return RATE / self.nfft

    def bins(self) -> tuple[slice, slice]:
        def at(hz: float) -> int:
            return round(hz / self.bin_hz)
        return slice(at(self.low_hz), at(self.high_hz) + 1), slice(at(self.ref_low_hz), at(self.ref_high_hz) + 1)


HIGH = Band("3 kHz", 2600.0, 3600.0, 1800.0, 4800.0)
LOW = Band("520 Hz", 460.0, 585.0, 250.0, 1200.0, nfft=LOW_NFFT)  # 520 Hz +/-10 % (NFPA 72) and a little
# The third harmonic of the 520 Hz square wave (a third of its amplitude), where speech and music mask less.
LOW3 = Band("1.56 kHz", 3 * 460.0, 3 * 585.0, 900.0, 2300.0, nfft=LOW_NFFT, harmonic=3, of=LOW.name)


BANDS = (HIGH, LOW, LOW3)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A temporal pattern: `tones` tones per cycle, then a rest; measured from onset to onset.

    Onsets survive a room's echo where gaps do not: the tail of a tone can fill a 0.1 s gap to within a
    few dB, but the next tone still starts with a jump in level. So a cycle is checked by the time from
    one tone's start to the next (`step` within a cycle, `rest` from the last tone's start to the next
    cycle's), and each tone's length only loosely (`length`: echo lengthens it).
    """

    name: str
    kind: AlarmKind
    tones: int
    length: tuple[float, float]
    step: tuple[float, float]
    rest: tuple[float, float]
    merge_s: float  # tones starting closer than this are one tone (a wobble or noise split it)...
    bridge_s: float  # ...when the silence between the pieces is at most this (far under the pattern's gaps)

    @property
    def cycle_s(self) -> float:
        """The longest cycle the bounds allow."""
        return (self.tones - 1) * self.step[1] + self.rest[1]


# Nominal: T3 tones start 1.0 s apart and the next cycle 2.0 s after the last tone's start; T4 0.2 s and
# 5.1 s. The standards allow +/-10 %; the bounds allow about +/-35 % (makes of alarm differ, echo and noise
# move an onset by a frame or two) and stay far apart from each other.
T3 = Pattern("T3", "smoke", 3, length=(0.3, 1.05), step=(0.6, 1.45), rest=(1.45, 3.3), merge_s=0.45,
             bridge_s=0.15)
T4 = Pattern("T4", "carbon_monoxide", 4, length=(0.06, 0.3), step=(0.12, 0.32), rest=(3.2, 7.8), merge_s=0.1,
             bridge_s=0.02)
PATTERNS = (T3, T4)
_KEEP_S = 2 * max(p.cycle_s for p in PATTERNS)
_REGULAR = 0.25
_QUIETER_DB = -3.0  # a sound at the pitch of the tones between them, this much louder, breaks a match
_ALIKE = 1.6
_ALIKE_S = 0.08
_PITCH = 0.015  # the tones of one alarm are within 1.5 % of their median frequency (one within 3 %)
_LEVEL_DB = 6.0
_GAP_S = 0.025  # a cycle's gaps between tones, on average at least this: a tone that wavers is not a cycle
ALARM_NAMES: dict[AlarmKind, str] = {"smoke": "smoke alarm", "carbon_monoxide": "carbon monoxide (CO) alarm"}


@dataclass(frozen=True, slots=True)
class Heard:
    """One fact heard at stream time `t` (seconds since the first sample). Text only: no samples."""

    t: float
    kind: HeardKind
    text: str
    alarm: AlarmKind | None = None
    above_db: float | None = None


@dataclass(frozen=True, slots=True)
class Pulse:
    start: float
    end: float
    hz: float
    level_db: float
    harmonic: int = 1  # heard at this harmonic of `hz` (`level_db` is the fundamental's it implies)

    @property
    def length(self) -> float:
        return self.end - self.start

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


@dataclass(frozen=True, slots=True)
class DetectSettings:
    """The detectors' thresholds (the defaults were measured by benchmarks/bench_audio.py)."""

    alarms: bool = True
    sounds: bool = True
    tonal_db: float = 10.0  # a tone's peak above the median of its wider band
    drop_db: float = 8.0  # "off" once this far below the loudest level of the last 0.3 s
    impact_db: float = 20.0  # an impact: this far above the running background
    high_pitch_db: float = 15.0  # a sustained high-pitched sound: this far above the background
    high_pitch_s: float = 0.8
    repeat_s: float = 10.0  # a sounding alarm is reported again this often


class _ToneTracker:
    """Tones (pulses) in one band, bin by bin, from frame spectra; then the patterns they make.

    Each bin of the band is followed on its own, so an alarm tone and a music note or a voice in the same
    band are heard side by side instead of the louder one hiding the other.
    """

    def __init__(self, band: Band, settings: DetectSettings) -> None:
        self.band = band
        self.settings = settings
        self.peak_bins, self.ref_bins = band.bins()
        # Offsets of the search band inside the reference band (which contains it).
        self._lo = self.peak_bins.start - self.ref_bins.start
        self._hi = self.peak_bins.stop - self.ref_bins.start
        width = self._hi - self._lo
        self._history = np.full((_ECHO_FRAMES + 2, width), -200.0, dtype=np.float32)  # tone levels, last 0.32 s
        self._open_start = np.full(width, -1, dtype=np.int64)  # frame where each bin's tone began (-1: none)
        self._last_on = np.full(width, -10, dtype=np.int64)
        self._peak_level = np.full(width, -200.0, dtype=np.float32)
        self._levels_before = np.full((3, width), -200.0, dtype=np.float32)
        self._hz_sum = np.zeros(width, dtype=np.float64)  # each open tone's frequency, summed over its frames
        self._hz_frames = np.zeros(width, dtype=np.int64)
        self.pulses: deque[Pulse] = deque(maxlen=2000)  # and no older than two of the longest cycles
        self.harmonics: list[_ToneTracker] = []  # trackers of this band's tones' harmonics: a second look at them
        self.owner = self  # the tracker of the fundamental, whose patterns this tracker's tones are part of
        self.tolerance_hz = 1.01 * band.bin_hz / band.harmonic  # a tone's frequency within its bin or a neighbour
        self._near_cache: tuple[Pulse, list[list[Pulse]]] | None = None
        # At a harmonic n, the even harmonic below it (n - 1) of each bin: a square wave has none there, a note
        # or a voice that has n has it too (music's C5 has 1046 Hz below its 1570 Hz; a voice on 130 Hz both).
        harmonic = band.harmonic
        self._even = None if harmonic == 1 else np.array(
            [round(j * (harmonic - 1) / harmonic) - self.ref_bins.start for j in range(self.peak_bins.start,
                                                                                       self.peak_bins.stop)])

    def frames(self, power: npt.NDArray[np.float32], first: int) -> list[Pulse]:
        """Feed frames' power spectra (frames x bins), the first being frame number `first`; tones that ended."""
        ref = power[:, self.ref_bins]
        smooth = ref.copy()
        smooth[:, 1:] += ref[:, :-1]
        smooth[:, :-1] += ref[:, 1:]
        floor = _row_medians(ref) * 3.0 + _EPS
        band = smooth[:, self._lo:self._hi]
        left, right = smooth[:, self._lo - 1:self._hi - 1], smooth[:, self._lo + 1:self._hi + 1]
        tonal = (band >= left) & (band >= right) & (10.0 * np.log10(band / floor + _EPS) >= self.settings.tonal_db)
        if self._even is not None:
            tonal &= smooth[:, self._even] < band
        level = np.where(tonal, 10.0 * np.log10(band + _EPS), -200.0).astype(np.float32)
        # The loudest level held for 30 ms in this bin or a neighbour over the previous 0.3 s: echo of the tone
        # stays under it. Held, because a tone's first 10 ms can be louder than the rest (its early reflection
        # has not arrived yet to cancel part of it): such a spike must not raise the bar.
        stacked = np.concatenate([self._history, level])
        held = np.minimum(np.minimum(stacked[2:], stacked[1:-1]), stacked[:-2])
        wrapped = np.concatenate([held[:, -1:], held, held[:, :1]], axis=1)  # np.roll's neighbours, cheaper
        spread = np.maximum(held, np.maximum(wrapped[:, :-2], wrapped[:, 2:]))
        reference = np.lib.stride_tricks.sliding_window_view(spread, _ECHO_FRAMES, axis=0)[: len(level)].max(axis=2)
        self._history = stacked[-(_ECHO_FRAMES + 2):]
        on = tonal & (level >= np.maximum(reference, level) - self.settings.drop_db)
        if not on.any() and not (self._open_start >= 0).any():  # nothing sounding in this band: no tone to measure
            self._levels_before = np.concatenate([self._levels_before, level])[-3:]
            return []
        return self._runs(on, level, self._frequencies(ref), first)

    def _frequencies(self, ref: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Each band bin's tone frequency to a fraction of a bin: the parabola through the log power of the
        strongest raw bin near it and that bin's neighbours. An alarm's tone holds one frequency; the harmonics
        of a voice glide, so this tells them apart where the bins cannot."""
        columns = np.arange(self._lo, self._hi)
        near = np.stack([ref[:, columns - 1], ref[:, columns], ref[:, columns + 1]])
        peak = columns + np.argmax(near, axis=0) - 1  # frames x band bins: indices into ref
        peak = np.clip(peak, 1, ref.shape[1] - 2)
        rows = np.arange(len(ref))[:, None]
        below, at, above = (np.log(ref[rows, peak + offset] + _EPS) for offset in (-1, 0, 1))
        curve = below - 2 * at + above
        shift = np.where(curve < 0, 0.5 * (below - above) / np.where(curve < 0, curve, -1.0), 0.0)
        fine: npt.NDArray[np.float32] = ((self.ref_bins.start + peak + np.clip(shift, -0.5, 0.5))
                                         * self.band.bin_hz).astype(np.float32)
        return fine

    def _runs(self, on: npt.NDArray[np.bool_], level: npt.NDArray[np.float32], hz: npt.NDArray[np.float32],
              first: int) -> list[Pulse]:
        # A jump of ONSET_DB over the last 30 ms starts a new tone even without a gap: echo fills short gaps.
        before = np.concatenate([self._levels_before, level])
        floor = np.minimum(np.minimum(before[:-3], before[1:-2]), before[2:-1])
        rise = level - floor
        self._levels_before = before[-3:]
        ended: list[Pulse] = []
        count = len(on)
        for column in map(int, np.flatnonzero(on.any(axis=0) | (self._open_start >= 0))):
            for index in np.flatnonzero(on[:, column]):
                frame = index + first
                is_open = self._open_start[column] >= 0
                if is_open and (frame - self._last_on[column] > _DROPOUT_FRAMES + 1 or (
                        rise[index, column] >= _ONSET_DB and frame - self._open_start[column] >= _SPLIT_AFTER)):
                    ended += self._close(column)
                if self._open_start[column] < 0:
                    self._open_start[column] = frame
                self._last_on[column] = frame
                self._peak_level[column] = max(self._peak_level[column], float(level[index, column]))
                self._hz_sum[column] += float(hz[index, column])
                self._hz_frames[column] += 1
            if self._open_start[column] >= 0 and first + count - 1 - self._last_on[column] > _DROPOUT_FRAMES:
                ended += self._close(column)
        return sorted(ended, key=lambda p: p.end)

    def _close(self, column: int) -> list[Pulse]:
        start, last = int(self._open_start[column]), int(self._last_on[column])
        peak = float(self._peak_level[column])
        hz = float(self._hz_sum[column]) / max(1, int(self._hz_frames[column]))
        self._open_start[column], self._peak_level[column] = -1, -200.0
        self._hz_sum[column], self._hz_frames[column] = 0.0, 0
        if last - start + 1 < 3:  # under 30 ms: a click or noise, not a tone
            return []
        harmonic = self.band.harmonic  # a square wave's harmonic n is 1/n of its fundamental: heard as that
        return [Pulse(start * HOP_S, (last + 1) * HOP_S, hz / harmonic, peak + 20.0 * float(np.log10(harmonic)),
                      harmonic)]

    def matches(self, pattern: Pattern, cycles: int = 2, newest: Pulse | None = None) -> list[Pulse] | None:
        """`cycles` cycles of `pattern` among the tones heard, ending with the newest tone, or None.

        Only tones in the newest tone's bin or a neighbour count; tones starting within `merge_s` of each
        other while the first lasts are one tone. Other tones at that pitch may fall in between (a clink, a
        note, a voice's harmonic): the cycles are searched for, not read off the last tones. A match must
        look like one alarm: its tones alike (length within a factor of 1.6 or 80 ms, level within 6 dB,
        frequency within 1.5 %), its steps regular (within 25 % of each other, start to start, middle to middle
        or end to end), its gaps real (25 ms on average: not a wavering longer sound), and its gaps and
        rest free of anything at that pitch 3 dB louder than its tones, which chance alignments of
        household sounds almost never are.

        The tones heard at a harmonic (`harmonics`) are a second look at the same tones: each tone of a match
        may be heard at the fundamental or at the harmonic, so a tone masked at one is heard at the other.
        Each look's pieces are merged on their own (a piece of noise at one never joins a tone at the other);
        the same tone heard at both is there twice, too close to its twin to be the pattern's next tone.
        """
        newest = newest or self.pulses[-1]
        heard = sorted(itertools.chain.from_iterable(_merged(near, pattern) for near in self._near(newest)),
                       key=lambda p: p.start)
        tones = [p for p in heard if pattern.length[0] <= p.length <= pattern.length[1]]
        last = next((i for i in range(len(tones) - 1, -1, -1) if tones[i].harmonic == newest.harmonic), None)
        if last is None or tones[last].end < newest.end:
            return None
        return _chain(tones, [last], pattern, heard, cycles * pattern.tones)

    def _near(self, newest: Pulse) -> list[list[Pulse]]:
        """The tones at `newest`'s pitch (its bin or a neighbour), at the fundamental and at each harmonic."""
        if self._near_cache is not None and self._near_cache[0] is newest:  # asked once for each pattern
            return self._near_cache[1]
        near = []
        for tracker in (self, *self.harmonics):
            low, high = newest.hz - tracker.tolerance_hz, newest.hz + tracker.tolerance_hz
            near.append([p for p in tracker.pulses if low <= p.hz <= high])
        self._near_cache = (newest, near)
        return near


def _row_medians(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """np.median(values, axis=1, keepdims=True), without its checks: it was a tenth of the listener's time."""
    middle = values.shape[1] // 2
    if values.shape[1] % 2:
        return np.partition(values, middle, axis=1)[:, middle:middle + 1]
    parts = np.partition(values, (middle - 1, middle), axis=1)
    result: npt.NDArray[np.float32] = (parts[:, middle - 1:middle] + parts[:, middle:middle + 1]) * np.float32(0.5)
    return result


def _chain(tones: list[Pulse], chosen: list[int], pattern: Pattern, heard: list[Pulse],
           needed: int) -> list[Pulse] | None:
    """Depth-first: extend `chosen` (indices, newest first) backwards to `needed` tones of `pattern`."""
    if len(chosen) == needed:
        cycles = [tones[i] for i in reversed(chosen)]
        return cycles if _alarm_like(cycles, pattern, heard) else None
    later = tones[chosen[-1]]
    position = needed - len(chosen)  # the later tone's place in the two cycles, counted from 0
    low, high = pattern.rest if position % pattern.tones == 0 else pattern.step
    first = tones[chosen[0]]
    for index in range(chosen[-1] - 1, -1, -1):
        step = later.start - tones[index].start
        if step > high:
            break
        candidate = tones[index]
        if step < low or not (_alike(candidate.length, first.length)
                              and abs(candidate.level_db - first.level_db) <= _LEVEL_DB):
            continue
        if (found := _chain(tones, [*chosen, index], pattern, heard, needed)) is not None:
            return found
    return None


def _alike(length: float, other: float) -> bool:
    """Tones of one alarm: lengths within a factor of 1.6, or within 80 ms (noise moves a short tone's ends)."""
    return abs(length - other) <= _ALIKE_S or 1 / _ALIKE <= length / other <= _ALIKE


def _alarm_like(chain: list[Pulse], pattern: Pattern, heard: list[Pulse]) -> bool:
    """Regular steps, and silence (at this pitch) between the tones: what one alarm sounds like."""
    pairs = [pair for index, pair in enumerate(itertools.pairwise(chain), start=1) if index % pattern.tones]
    median = float(np.median([b.middle - a.middle for a, b in pairs]))
    # Noise before a tone moves its start, echo after it its end: a step is regular if starts, middles or ends agree.
    if any(min(abs(b.start - a.start - median), abs(b.middle - a.middle - median), abs(b.end - a.end - median))
           > _REGULAR * median for a, b in pairs):
        return False
    pitch = float(np.median([p.hz for p in chain]))
    off = [abs(p.hz - pitch) / pitch for p in chain]
    if sum(o > _PITCH for o in off) > 1 or max(off) > 2 * _PITCH:  # one alarm, one frequency (noise may pull a tone)
        return False
    for cycle in range(0, len(chain), pattern.tones):  # pieces of one longer sound are not a cycle of tones
        tones = chain[cycle:cycle + pattern.tones]
        if sum(b.start - a.end for a, b in itertools.pairwise(tones)) < _GAP_S * (pattern.tones - 1):
            return False
    # Louder than the tones heard at the same harmonic: a sound at the fundamental says nothing about the
    # tones' level at a harmonic, where they may be all that was heard.
    loud = {harmonic: float(np.median([p.level_db for p in chain if p.harmonic == harmonic])) - _QUIETER_DB
            for harmonic in {p.harmonic for p in chain}}
    members = {id(p) for p in chain}
    level = float(np.median([p.level_db for p in chain])) - _LEVEL_DB
    # Tones heard at a harmonic: a gap heard through at either look makes them pieces of one longer tone (the
    # pieces of a 520 Hz T3's tones at 520 Hz and at 1.56 kHz would otherwise pass for T4).
    for earlier, later in pairs if any(p.harmonic > 1 for p in chain) else []:
        if any(id(other) not in members and other.start < earlier.end and other.end > later.start
               and other.level_db >= level for other in heard):
            return False
    for earlier, later in itertools.pairwise(chain):
        for other in heard:
            if (id(other) not in members and other.level_db >= loud.get(other.harmonic, np.inf)
                    and earlier.end + 0.03 < other.start < later.start - 0.03):
                return False
    return True


def _merged(pulses: list[Pulse], pattern: Pattern) -> list[Pulse]:
    """Pieces of one tone as one: seen in two bins, or split by noise or a wobble of its level."""
    out: list[Pulse] = []
    for pulse in sorted(pulses, key=lambda p: p.start):
        if out and pulse.start - out[-1].start < pattern.merge_s and pulse.start <= out[-1].end + pattern.bridge_s:
            last = out[-1]
            if pulse.level_db > last.level_db + 6.0:  # a quieter sound just before the tone: not the tone
                out[-1] = pulse
            elif pulse.level_db >= last.level_db - 6.0:
                louder = pulse if pulse.level_db > last.level_db else last
                total = last.length + pulse.length  # the pieces' frequencies, by how long each was heard
                hz = (last.hz * last.length + pulse.hz * pulse.length) / total if total > 0 else louder.hz
                out[-1] = Pulse(last.start, max(last.end, pulse.end), hz, louder.level_db, last.harmonic)
        else:
            out.append(pulse)
    return out


@dataclass
class _Sounding:
    pattern: Pattern
    band: str
    hz: float
    since: float
    last_tone: float
    reported: float


@dataclass
class _Loud:
    """A loud stretch being measured: an impact candidate or a high-pitched sound."""

    start: float
    peak_db: float
    background_db: float
    sharp: bool  # it rose 12 dB or more within 20 ms
    tonal_frames: int = 0
    frames: int = 0
    hz: list[float] = field(default_factory=list)


def _spectra(signal: Samples, size: int, count: int) -> npt.NDArray[np.float32]:
    """Power spectra of the last `count` hops of `signal`, each over the `size` samples ending with its hop."""
    windows = np.lib.stride_tricks.sliding_window_view(signal[len(signal) - count * HOP - size + HOP:], size)[::HOP]
    return (np.abs(np.fft.rfft(windows[:count] * _WINDOWS[size], axis=1)) ** 2).astype(np.float32)


class Listener:
    """Everything the monitor hears from one microphone: feed samples, get facts.

    `feed` takes 16 kHz mono float32 samples in [-1, 1] in order, any block size,
    and returns what was heard in them (stream times in seconds since the first
    sample). It keeps no samples beyond the last 0.13 s (0.1 s waiting to be heard, 32 ms of window overlap).
    """

    def __init__(self, settings: DetectSettings | None = None) -> None:
        self.settings = settings or DetectSettings()
        self.trackers = [_ToneTracker(band, self.settings) for band in BANDS]
        by_name = {tracker.band.name: tracker for tracker in self.trackers}
        for tracker in self.trackers:
            if tracker.band.of:
                tracker.owner = by_name[tracker.band.of]
                tracker.owner.harmonics.append(tracker)
        self.sounding: dict[AlarmKind, _Sounding] = {}
        self._tail = np.zeros(LOW_NFFT - HOP, dtype=np.float32)
        self._frames = 0  # frames analysed so far (frame i covers up to (i + 1) * HOP samples)
        self._pending = np.zeros(0, dtype=np.float32)
        self._background: float | None = None
        self._levels: deque[float] = deque(maxlen=3)
        self._loud: _Loud | None = None
        self._quiet_until = 0.0
        self.bad_samples = 0  # samples that were not numbers (NaN, infinite): heard as silence

    @property
    def now(self) -> float:
        return self._frames * HOP_S

    def feed(self, samples: Samples) -> list[Heard]:
        """What was heard in these samples (empty most of the time)."""
        block = np.asarray(samples, dtype=np.float32)
        if not np.isfinite(block).all():  # one NaN would poison the running background for good
            self.bad_samples += int(np.count_nonzero(~np.isfinite(block)))
            block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)  # silence: no sound was measured there
        if len(block) and float(np.max(np.abs(block))) > 1.0:
            # A float file may hold any number: 1e30 squares to infinity and poisons the background just as NaN
            # does. Clipped, as a converter would; far beyond full scale it was not audio to begin with.
            self.bad_samples += int(np.count_nonzero(np.abs(block) > _NOT_AUDIO))
            block = np.clip(block, -1.0, 1.0)
        data = np.concatenate([self._pending, block])
        if len(data) < BATCH:  # a decoder's small frames are heard 0.1 s at a time: the work per call is fixed
            self._pending = data
            return []
        count = len(data) // HOP
        self._pending = data[count * HOP:]
        if count == 0:
            return []
        signal = np.concatenate([self._tail, data[: count * HOP]])
        self._tail = signal[-(LOW_NFFT - HOP):]
        spectra = {size: _spectra(signal, size, count) for size in _WINDOWS}
        power = spectra[NFFT]
        hop_power = np.mean(signal[LOW_NFFT - HOP:].reshape(count, HOP) ** 2, axis=1)
        t0 = self.now
        self._frames += count
        heard: list[Heard] = []
        if self.settings.alarms:
            heard += self._alarms(spectra, t0)
        if self.settings.sounds:
            heard += self._sounds(power, hop_power, t0)
        return heard

    # -- alarms ------------------------------------------------------------------------------------------
    def _alarms(self, spectra: dict[int, npt.NDArray[np.float32]], t0: float) -> list[Heard]:
        heard: list[Heard] = []
        for tracker in self.trackers:
            for pulse in tracker.frames(spectra[tracker.band.nfft], round(t0 / HOP_S)):
                heard += self._tone(tracker, pulse)
        now = self.now
        for kind, sounding in list(self.sounding.items()):
            if now - sounding.last_tone > 1.5 * sounding.pattern.cycle_s:
                del self.sounding[kind]
                length = sounding.last_tone - sounding.since
                heard.append(Heard(sounding.last_tone, "alarm_end",
                                   f"{ALARM_NAMES[kind]} pattern ({sounding.pattern.name}) stopped after sounding "
                                   f"for {length:.0f} s"))
        return heard

    def _tone(self, tracker: _ToneTracker, pulse: Pulse) -> list[Heard]:
        tracker.pulses.append(pulse)
        while tracker.pulses[0].end < pulse.end - _KEEP_S:
            tracker.pulses.popleft()
        heard: list[Heard] = []
        owner = tracker.owner
        for pattern in PATTERNS:
            sounding = self.sounding.get(pattern.kind)
            # Two full cycles start an alarm; once it sounds, each further full cycle at its pitch continues it.
            if sounding is not None and abs(pulse.hz - sounding.hz) > 1.01 * owner.band.bin_hz:
                continue
            tones = owner.matches(pattern, cycles=2 if sounding is None else 1, newest=pulse)
            if tones is None:
                continue
            if sounding is None:  # two full cycles: it is sounding
                sounding = self.sounding[pattern.kind] = _Sounding(
                    pattern, owner.band.name, float(np.median([p.hz for p in tones])), tones[0].start,
                    pulse.end, pulse.end)
                heard.append(self._alarm_fact(sounding, pulse.end))
                continue
            sounding.last_tone = pulse.end  # still sounding: each further tone completes two cycles again
            if pulse.end - sounding.reported >= self.settings.repeat_s:
                sounding.reported = pulse.end
                heard.append(self._alarm_fact(sounding, pulse.end))
        return heard

    @staticmethod
    def _alarm_fact(sounding: _Sounding, t: float) -> Heard:
        kind = sounding.pattern.kind
        text = (f"{ALARM_NAMES[kind]} pattern ({sounding.pattern.name}, {sounding.hz / 1000:.2f} kHz) sounding for "
                f"{t - sounding.since:.0f} s")
        return Heard(t, "alarm", text, alarm=kind)

    # -- sudden sounds -------------------------------------------------------------------------------------
    def _sounds(self, power: npt.NDArray[np.float32], hop_power: npt.NDArray[np.float32], t0: float) -> list[Heard]:
        levels = 10.0 * np.log10(hop_power + 1e-10)
        spectrum = power[:, 4:120]  # 250 Hz - 7.5 kHz
        peakiness = 10.0 * np.log10(spectrum.max(axis=1) / (np.median(spectrum, axis=1) + _EPS) + _EPS)
        freqs = (np.argmax(spectrum, axis=1) + 4) * BIN_HZ
        heard: list[Heard] = []
        for i, level in enumerate(levels):
            if hop_power[i] == 0.0:
                # Digital silence (a muted input, a stream's filler, NaN made silence) is no room's level: learnt,
                # it dropped the background to -100 dB, the room's return became one endless loud event and the
                # background never learnt again, so no impact was heard after it.
                continue
            fact = self._hop(t0 + i * HOP_S, float(level), float(peakiness[i]), float(freqs[i]))
            if fact is not None:
                heard.append(fact)
        return heard

    def _hop(self, t: float, level: float, peakiness: float, hz: float) -> Heard | None:
        background = self._background if self._background is not None else level
        rise = level - min(self._levels, default=level)
        self._levels.append(level)
        loud = self._loud
        fact = None
        threshold = min(self.settings.impact_db, self.settings.high_pitch_db)
        if loud is None and t >= self._quiet_until and level - background >= threshold:
            self._loud = loud = _Loud(t, level, background, sharp=rise >= 12.0)
        if loud is not None:
            fact = self._measure(loud, t, level, peakiness, hz)
        else:  # the background learns only from what is not a loud event: quiet fast, noise slowly
            rate = 0.05 if level < background else 0.002
            self._background = background + rate * (level - background)
        return fact

    def _measure(self, loud: _Loud, t: float, level: float, peakiness: float, hz: float) -> Heard | None:
        loud.frames += 1
        loud.peak_db = max(loud.peak_db, level)
        above = level - loud.background_db
        if peakiness >= 15.0 and 1000.0 <= hz <= 6000.0 and above >= self.settings.high_pitch_db:
            loud.tonal_frames += 1
            loud.hz.append(hz)
        length = t - loud.start
        ended = above < self.settings.high_pitch_db - 6.0
        if ended or length >= 5.0:
            self._loud = None
            fact = self._verdict(loud, length)
            if fact is not None:
                self._quiet_until = t + 0.3  # one event, one report: not its echo or rattle too
            return fact
        return None

    def _verdict(self, loud: _Loud, length: float) -> Heard | None:
        peak_above = loud.peak_db - loud.background_db
        frames = max(1, loud.frames)
        if loud.tonal_frames * HOP_S >= self.settings.high_pitch_s and loud.tonal_frames >= 0.6 * frames:
            hz = float(np.median(loud.hz))
            return Heard(loud.start, "high_pitch",
                         f"sustained loud high-pitched sound (a scream, a whistle?) around {hz / 1000:.1f} kHz for "
                         f"{length:.1f} s, {peak_above:.0f} dB above the room's background", above_db=peak_above)
        if loud.sharp and length <= 1.0 and peak_above >= self.settings.impact_db and loud.tonal_frames <= frames // 3:
            return Heard(loud.start, "impact", f"loud impact (a fall? something dropped?), {peak_above:.0f} dB above "
                                               "the room's background", above_db=peak_above)
        return None
