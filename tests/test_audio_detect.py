"""Hearing: smoke (T3) and CO (T4) alarm patterns and sudden sounds, on audio the tests synthesise.

The alarms sound at 3.1 kHz (piezo) and as a 520 Hz square wave (low-frequency alarms), with a
device's timing spread, room echo and hard clipping, mixed into household noise (speech from
espeak-ng, music, running water, kitchen clatter). benchmarks/bench_audio.py measures the rates;
these tests pin the behaviour on a fixed set of seeds.
"""

from __future__ import annotations

import numpy as np
import pytest

from sensors.audio_detect import BATCH, LOW_NFFT, Heard, Listener
from tests.support import sounds

KINDS = {"T3": "smoke", "T4": "carbon_monoxide"}


def hear(samples: np.ndarray, *, block: int = 1600, listener: Listener | None = None) -> list[Heard]:
    listener = listener or Listener()
    heard: list[Heard] = []
    for start in range(0, len(samples), block):
        heard += listener.feed(samples[start:start + block])
    return heard


def alarm_in_noise(pattern: sounds.PatternName, *, square: bool, seed: int, snr_db: float,
                   cycles: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hz = 520.0 if square else 3100.0
    alarm, mask = sounds.alarm(pattern, hz=hz, square=square, rng=rng, spread=0.15, clip=seed % 2 == 0,
                               echo_rt60_s=0.4 if seed % 3 else 0.0, cycles=cycles)
    noise = sounds.household(len(alarm) / sounds.RATE + 1, rng)
    return sounds.mix_at_snr(alarm, mask, noise, snr_db)


@pytest.mark.parametrize("pattern", ["T3", "T4"])
@pytest.mark.parametrize("square", [False, True], ids=["3.1kHz", "520Hz-square"])
@pytest.mark.parametrize("seed", [101, 102, 104])  # clipped and echoed, echoed, clipped and echoed
def test_alarm_pattern_heard_after_two_cycles_in_household_noise(pattern: sounds.PatternName, square: bool,
                                                                 seed: int) -> None:
    samples = alarm_in_noise(pattern, square=square, seed=seed, snr_db=10.0, cycles=2)
    alarms = [h for h in hear(samples) if h.kind == "alarm"]
    assert alarms, "the alarm was not heard"
    first = alarms[0]
    assert first.alarm == KINDS[pattern]
    assert first.t - 0.5 <= 10.0  # the first tone starts at 0.5 s
    assert pattern in first.text and "sounding for" in first.text


@pytest.mark.parametrize("pattern", ["T3", "T4"])
def test_one_cycle_is_not_an_alarm(pattern: sounds.PatternName) -> None:
    alarm, _ = sounds.alarm(pattern, cycles=1)
    assert [h for h in hear(alarm) if h.kind == "alarm"] == []


def test_a_clean_alarm_is_heard_whatever_the_block_size() -> None:
    alarm, _ = sounds.alarm("T3", cycles=3)
    results = [[(h.kind, round(h.t, 2)) for h in hear(alarm, block=block) if h.kind == "alarm"]
               for block in (37, 160, 1600, len(alarm))]
    assert results[0], "not heard"
    assert all(result == results[0] for result in results)


def test_household_noise_alone_raises_no_alarm() -> None:
    rng = np.random.default_rng(7)
    heard = hear(sounds.household(180.0, rng))
    assert [h.text for h in heard if h.kind.startswith("alarm")] == []


@pytest.mark.slow
def test_twenty_minutes_of_other_household_noise_raise_no_alarm() -> None:
    listener = Listener()  # one listener throughout: its background and tone history carry over, as in a home
    alarms = [h.text for seed in range(11, 31) for h in hear(sounds.household(60.0, np.random.default_rng(seed)),
                                                             listener=listener) if h.kind.startswith("alarm")]
    assert alarms == []


def test_an_alarm_that_stops_is_reported_stopped() -> None:
    alarm, _ = sounds.alarm("T4", cycles=3)
    silence = np.zeros(int(20 * sounds.RATE), dtype=np.float32)
    heard = hear(np.concatenate([alarm, silence]))
    kinds = [h.kind for h in heard if h.kind.startswith("alarm")]
    assert kinds[0] == "alarm" and kinds[-1] == "alarm_end"
    assert "stopped after sounding for" in heard[-1].text


def test_a_sounding_alarm_is_reported_again_while_it_lasts() -> None:
    alarm, _ = sounds.alarm("T3", cycles=12)  # 48 s
    reports = [h for h in hear(alarm) if h.kind == "alarm"]
    assert len(reports) >= 4  # every repeat_s = 10 s
    assert float(reports[-1].text.split("sounding for ")[1].split(" s")[0]) >= 30


def quiet_room(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return (0.003 * sounds.room_tone(int(seconds * sounds.RATE), rng)).astype(np.float32)


def test_a_loud_impact_is_reported_with_its_level_above_the_background() -> None:
    rng = np.random.default_rng(3)
    room = quiet_room(8.0, rng)
    bang = sounds.impact(rng)
    at = int(5 * sounds.RATE)
    room[at:at + len(bang)] += bang
    heard = hear(room)
    impacts = [h for h in heard if h.kind == "impact"]
    assert len(impacts) == 1
    assert impacts[0].above_db is not None and impacts[0].above_db >= 20
    assert abs(impacts[0].t - 5.0) < 0.1
    assert "dB above the room's background" in impacts[0].text


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_samples_that_are_not_numbers_do_not_deafen_the_listener(bad: float) -> None:
    rng = np.random.default_rng(3)
    room = quiet_room(8.0, rng)
    room[int(1 * sounds.RATE):int(1 * sounds.RATE) + 40] = bad  # a float stream's glitch
    bang = sounds.impact(rng)
    at = int(5 * sounds.RATE)
    room[at:at + len(bang)] += bang
    listener = Listener()
    heard = hear(room, listener=listener)
    assert [h.kind for h in heard if h.kind == "impact"] and all(abs(h.t - 5.0) < 0.1 for h in heard)
    assert listener.bad_samples == 40


def test_a_scream_is_a_high_pitched_sound_not_an_impact() -> None:
    rng = np.random.default_rng(4)
    room = quiet_room(8.0, rng)
    cry = sounds.scream(rng, seconds=1.5)
    at = int(4 * sounds.RATE)
    room[at:at + len(cry)] += cry
    heard = hear(room)
    assert [h.kind for h in heard] == ["high_pitch"]
    assert "high-pitched" in heard[0].text and "1." in heard[0].text  # around 1.x kHz


def test_alarm_tones_are_not_reported_as_screams_or_impacts() -> None:
    rng = np.random.default_rng(5)
    alarm, _ = sounds.alarm("T3", cycles=3)
    room = quiet_room(len(alarm) / sounds.RATE, rng)[: len(alarm)] + alarm
    kinds = {h.kind for h in hear(room)}
    assert kinds == {"alarm"}


def test_the_listener_keeps_no_samples() -> None:
    listener = Listener()
    hear(sounds.alarm("T3", cycles=2)[0], listener=listener)
    kept = [value for value in vars(listener).values() if isinstance(value, np.ndarray)]
    assert kept and all(value.size < BATCH + LOW_NFFT for value in kept)  # 0.1 s waiting and 32 ms of overlap


def rhythm(pattern: sounds.PatternName, frequencies: list[float]) -> np.ndarray:
    """Tones at the pattern's timing, each at its own frequency (cycled): a voice or an instrument keeping time."""
    tones, on_s, gap_s, rest_s = sounds.TIMINGS[pattern]
    out: list[np.ndarray] = [np.zeros(int(0.5 * sounds.RATE), dtype=np.float32)]
    for index in range(3 * tones):
        t = np.arange(int(on_s * sounds.RATE)) / sounds.RATE
        out.append((0.5 * np.sin(2 * np.pi * frequencies[index % len(frequencies)] * t)).astype(np.float32))
        pause = gap_s if index % tones < tones - 1 else rest_s
        out.append(np.zeros(int(pause * sounds.RATE), dtype=np.float32))
    return np.concatenate(out)


@pytest.mark.parametrize("pattern", ["T3", "T4"])
def test_tones_that_change_pitch_are_not_an_alarm_however_alarm_like_their_rhythm(pattern: sounds.PatternName) -> None:
    steady = [h for h in hear(rhythm(pattern, [520.0])) if h.kind == "alarm"]
    assert steady and steady[0].alarm == KINDS[pattern]  # the same rhythm at one pitch is the alarm
    wandering = rhythm(pattern, [505.0, 535.0])  # 6 % apart: one bin of a 16 ms spectrum, two of a 32 ms one
    assert [h.text for h in hear(wandering) if h.kind == "alarm"] == []


def band_noise(n: int, bands: list[tuple[float, float]], rng: np.random.Generator) -> np.ndarray:
    """White noise kept only inside `bands` (Hz), unit power."""
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    hz = np.fft.rfftfreq(n, 1 / sounds.RATE)
    spectrum[~np.any([(hz >= low) & (hz <= high) for low, high in bands], axis=0)] = 0
    noise = np.fft.irfft(spectrum, n)
    return (noise / np.std(noise)).astype(np.float32)


def test_a_low_co_alarm_masked_at_its_fundamental_is_heard_by_its_third_harmonic() -> None:
    # A 505 Hz square wave: 1.52 kHz is its third harmonic; its fifth and seventh (2.5, 3.5 kHz) are masked too.
    alarm, _ = sounds.alarm("T4", hz=505.0, square=True, cycles=3)
    fundamental_power = 0.25 * 8 / np.pi ** 2  # of a square wave of amplitude 0.5
    masker = band_noise(len(alarm), [(400.0, 700.0), (2300.0, 4000.0)], np.random.default_rng(1))
    mixture = alarm + np.sqrt(fundamental_power * 10.0) * masker  # the masker 10 dB over the fundamental
    mixture /= np.max(np.abs(mixture)) / 0.9  # within full scale, as any decoded audio is (the listener clips)
    heard = [h for h in hear(mixture) if h.kind == "alarm"]
    assert heard and heard[0].alarm == "carbon_monoxide"
    assert "(T4, 0.5" in heard[0].text  # named by its fundamental (505 Hz)
    assert heard[0].t - 0.5 <= 10.0


def harmonic_rhythm(pattern: sounds.PatternName, fundamentals: list[float]) -> np.ndarray:
    """`rhythm`, but each tone a voice-like harmonic series (1/k) on its own fundamental."""
    tones, on_s, gap_s, rest_s = sounds.TIMINGS[pattern]
    out: list[np.ndarray] = [np.zeros(int(0.5 * sounds.RATE), dtype=np.float32)]
    t = np.arange(int(on_s * sounds.RATE)) / sounds.RATE
    for index in range(3 * tones):
        f0 = fundamentals[index % len(fundamentals)]
        out.append((0.3 * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))).astype(np.float32))
        pause = gap_s if index % tones < tones - 1 else rest_s
        out.append(np.zeros(int(pause * sounds.RATE), dtype=np.float32))
    return np.concatenate(out)


@pytest.mark.parametrize("pattern", ["T3", "T4"])
def test_a_voice_keeping_time_on_changing_notes_is_not_an_alarm_in_any_of_its_harmonics(
        pattern: sounds.PatternName) -> None:
    assert [h.text for h in hear(harmonic_rhythm(pattern, [505.0, 535.0])) if h.kind == "alarm"] == []


def test_a_note_keeping_the_co_rhythm_is_not_heard_as_an_alarm_at_its_third_harmonic() -> None:
    # Music's C5 (523 Hz) with its harmonics (1/k): its 1570 Hz is where a 523 Hz square wave's third harmonic
    # is, but it also has 1046 Hz, which a square wave has not. Its fundamental masked, only harmonics are heard.
    note = harmonic_rhythm("T4", [523.0])
    fundamental_power = 0.5 * 0.3 ** 2
    masker = band_noise(len(note), [(400.0, 700.0), (2300.0, 4000.0)], np.random.default_rng(1))
    heard = hear(note + np.sqrt(fundamental_power * 10 ** 2.5) * masker)  # +25 dB
    assert [h.text for h in heard if h.kind == "alarm"] == []
