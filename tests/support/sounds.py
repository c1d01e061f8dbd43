"""Sounds made by the tests: smoke and CO alarm patterns, household noise, impacts and screams.

Everything is synthesised with numpy at 16 kHz (speech comes from espeak-ng when it is
installed), so the tests and benchmarks/bench_audio.py need no recordings.
Alarms follow ISO 8201: T3 (smoke) three 0.5 s tones 0.5 s apart then 1.5 s of
silence, T4 (CO) four 0.1 s tones 0.1 s apart then 5 s of silence; on a 3.1 kHz
sine (piezo) or a 520 Hz square wave. A "device" stretches or shrinks all its timings
by up to `spread`, and each tone jitters a little more; echo is a room's reverberation
(an exponentially decaying noise tail, RT60 given) plus an early reflection;
clipping drives the tones far into a hard limit.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

RATE = 16_000
Audio = npt.NDArray[np.float32]
PatternName = Literal["T3", "T4"]
TIMINGS: dict[str, tuple[int, float, float, float]] = {"T3": (3, 0.5, 0.5, 1.5), "T4": (4, 0.1, 0.1, 5.0)}


def alarm(pattern: PatternName, *, hz: float = 3100.0, cycles: int = 3, rng: np.random.Generator | None = None,
          spread: float = 0.0, square: bool = False, clip: bool = False, echo_rt60_s: float = 0.0,
          lead_s: float = 0.5) -> tuple[Audio, Audio]:
    """An alarm sounding `cycles` cycles after `lead_s` of silence: (samples, mask of the tones' samples)."""
    rng = rng or np.random.default_rng(0)
    tones, on_s, gap_s, rest_s = TIMINGS[pattern]
    scale = 1.0 + rng.uniform(-spread, spread)
    hz *= 1.0 + rng.uniform(-0.03, 0.03) if spread else 1.0
    spans: list[tuple[float, float]] = []
    t = lead_s
    for _ in range(cycles):
        for index in range(tones):
            jitter = 1.0 + (rng.uniform(-0.05, 0.05) if spread else 0.0)
            spans.append((t, t + on_s * scale * jitter))
            t += on_s * scale * jitter
            t += (gap_s if index < tones - 1 else rest_s) * scale * jitter
    total = int((t + 0.5) * RATE)
    out = np.zeros(total, dtype=np.float32)
    mask = np.zeros(total, dtype=np.float32)
    for start, end in spans:
        a, b = int(start * RATE), int(end * RATE)
        phase = 2 * np.pi * hz * np.arange(b - a) / RATE
        tone = np.sign(np.sin(phase)) if square else np.sin(phase)
        ramp = np.minimum(1.0, np.minimum(np.arange(b - a), np.arange(b - a)[::-1]) / (0.004 * RATE))
        out[a:b] = (0.5 * tone * ramp).astype(np.float32)
        mask[a:b] = 1.0
    if clip:
        out = np.clip(out * 6.0, -0.5, 0.5).astype(np.float32)
    if echo_rt60_s > 0:
        out = reverb(out, echo_rt60_s, rng)
    return out, mask


def reverb(signal: Audio, rt60_s: float, rng: np.random.Generator) -> Audio:
    """`signal` in a room: the direct sound, a reflection 12 ms later at -6 dB, and a diffuse tail."""
    length = int(rt60_s * RATE)
    t = np.arange(length) / RATE
    tail = rng.normal(0, 1, length) * 10 ** (-3 * t / rt60_s)  # -60 dB at rt60
    tail *= 0.5 / np.sqrt(np.sum(tail ** 2))  # the tail's energy a quarter of the direct sound's
    response = np.zeros(length + 1)
    response[0] = 1.0
    response[int(0.012 * RATE)] += 0.5
    response[1:] += tail
    out = fft_convolve(signal, response)[: len(signal)]
    return (out / max(1.0, float(np.max(np.abs(out))) / 0.9)).astype(np.float32)


def fft_convolve(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    n = len(a) + len(b) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]


# -- household noise ---------------------------------------------------------------------------------------
def household(seconds: float, rng: np.random.Generator, *, speech: bool = True) -> Audio:
    """A busy kitchen or living room: hum and room tone, running water, clatter, music, a voice."""
    n = int(seconds * RATE)
    mix = 0.3 * room_tone(n, rng) + 0.6 * water(n, rng) + 0.6 * clatter(n, rng) + 0.5 * music(n, rng)
    if speech and (voice := speech_loop(n, rng)) is not None:
        mix += 0.8 * voice
    return (mix / max(1e-6, float(np.std(mix))) * 0.05).astype(np.float32)


def room_tone(n: int, rng: np.random.Generator) -> Audio:
    """Brown-ish noise and a 50 Hz hum with harmonics."""
    brown = np.cumsum(rng.normal(0, 1, n))
    brown -= np.convolve(brown, np.ones(801) / 801, mode="same")  # no drift
    t = np.arange(n) / RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 5))
    return _unit(brown) + 0.3 * _unit(hum)


def water(n: int, rng: np.random.Generator) -> Audio:
    """Running water: broadband noise, bright, flickering, in bursts of several seconds."""
    noise = rng.normal(0, 1, n)
    bright = noise - np.convolve(noise, np.ones(4) / 4, mode="same")
    flicker = 1 + 0.5 * np.repeat(rng.normal(0, 1, n // 400 + 1), 400)[:n]
    running = np.repeat(rng.random(n // RATE + 1) < 0.4, RATE)[:n]
    return _unit(bright * flicker * running)


def clatter(n: int, rng: np.random.Generator) -> Audio:
    """Kitchen clatter: clinks of plates and cutlery (ringing partials 1-6 kHz, decaying in 20-150 ms)."""
    out = np.zeros(n)
    for _ in range(int(n / RATE * 1.5)):  # about 1.5 clinks a second
        at = int(rng.integers(0, n))
        length = min(n - at, int(0.3 * RATE))
        t = np.arange(length) / RATE
        ring = sum(np.sin(2 * np.pi * rng.uniform(1000, 6000) * t) for _ in range(3))
        out[at:at + length] += rng.uniform(0.2, 1.0) * ring * np.exp(-t / rng.uniform(0.02, 0.15))
    return _unit(out)


def music(n: int, rng: np.random.Generator) -> Audio:
    """Music-like tones: a melody of notes with harmonics on a beat (120 bpm), including C5 (523 Hz)."""
    out = np.zeros(n)
    scale = [261.6 * 2 ** (k / 12) for k in (0, 2, 4, 5, 7, 9, 11, 12, 14, 16)]
    beat = int(0.5 * RATE)
    for at in range(0, n, beat):
        if rng.random() < 0.2:
            continue
        f0 = float(rng.choice(scale))
        length = min(n - at, beat * int(rng.integers(1, 3)))
        t = np.arange(length) / RATE
        note = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 9) if f0 * k < 7000)
        out[at:at + length] += note * np.exp(-t / 0.4)
    return _unit(out)


@functools.cache
def _espeak_voice() -> Audio | None:
    """A minute of espeak-ng speech at 16 kHz, or None without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        return None
    text = ("Have you seen my keys? I left them on the table next to the kettle. Dinner will be ready in ten "
            "minutes, could you set the table please. The weather tomorrow looks rainy, take an umbrella. ") * 2
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True, timeout=60)
        samples, rate = read_wav(path)
    return resample(samples, rate, RATE)


def speech_loop(n: int, rng: np.random.Generator) -> Audio | None:
    voice = _espeak_voice()
    if voice is None:
        return None
    start = int(rng.integers(0, len(voice)))
    reps = n // len(voice) + 2
    return _unit(np.tile(voice, reps)[start:start + n])


# -- sudden sounds ---------------------------------------------------------------------------------------------
def impact(rng: np.random.Generator, *, level: float = 0.6) -> Audio:
    """A fall or a dropped pan: a sharp broadband burst, thudding below 500 Hz, over in 0.3 s."""
    n = int(0.3 * RATE)
    t = np.arange(n) / RATE
    burst = rng.normal(0, 1, n) * np.exp(-t / 0.03)
    thud = np.sin(2 * np.pi * 90 * t) * np.exp(-t / 0.08)
    return (level * _unit(burst + 2 * thud) / 3).astype(np.float32)


def scream(rng: np.random.Generator, *, seconds: float = 1.5, level: float = 0.4) -> Audio:
    """A scream: a harmonic voice near 1.2 kHz with vibrato, rising and falling."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = rng.uniform(1000, 1400) * (1 + 0.03 * np.sin(2 * np.pi * 6 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voice = sum(np.sin(k * phase) / k ** 1.5 for k in range(1, 6))
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.08)
    return (level * _unit(voice * envelope)).astype(np.float32)


# -- mixing and files -------------------------------------------------------------------------------------------
def mix_at_snr(signal: Audio, mask: Audio, noise: Audio, snr_db: float) -> Audio:
    """`signal` over `noise` with the tones' power `snr_db` above the noise's (both measured broadband)."""
    noise = noise[: len(signal)]
    on = mask > 0
    signal_power = float(np.mean(signal[on] ** 2)) if on.any() else float(np.mean(signal ** 2))
    noise_power = float(np.mean(noise ** 2)) + 1e-12
    gain = np.sqrt(noise_power * 10 ** (snr_db / 10) / signal_power)
    out = gain * signal + noise
    return (out / max(1.0, float(np.max(np.abs(out))) / 0.95)).astype(np.float32)


def write_wav(path: Path, samples: Audio, rate: int = RATE) -> Path:
    data = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(data.tobytes())
    return path


def read_wav(path: Path) -> tuple[Audio, int]:
    with wave.open(str(path), "rb") as handle:
        raw = handle.readframes(handle.getnframes())
        channels, rate = handle.getnchannels(), handle.getframerate()
    data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    return data.reshape(-1, channels).mean(axis=1).astype(np.float32), rate


def resample(samples: Audio, rate: int, target: int) -> Audio:
    if rate == target:
        return samples
    positions = np.arange(int(len(samples) * target / rate)) * rate / target
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def _unit(x: Any) -> Audio:
    x = np.asarray(x, dtype=np.float64)
    return (x / max(1e-9, float(np.std(x)))).astype(np.float32)
