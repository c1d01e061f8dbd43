"""Microphone files the tests did not write themselves: other codecs, rates, layouts, and broken ones.

Every input here is made by ffmpeg (or byte by byte) and read by the real source (PyAV). The rule under
test: no input stops the source's task or the daemon; a broken one degrades its own microphone visibly
(`bad_input`, `last_error` naming the file), and what could be heard in it is heard once.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
import structlog.testing

from monitor.alerts import AlertManager, AlertSettings
from monitor.core.errors import SensorError
from monitor.pipeline import Pipeline
from monitor.windows import WindowSettings
from sensors.audio import MicrophoneSource
from sensors.audio_config import MicrophoneSettings
from sensors.audio_detect import RATE, Listener
from sensors.types import AlarmHeard, LogEntry, Observation
from tests.support import sounds
from tests.support.sinks import Collecting
from tests.support.sources import run_until_reconnected
from tests.test_audio_source import Recording, Unreachable, alarm_wav


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *args], check=True, timeout=60)


def microphone(path: Path, **fields: Any) -> MicrophoneSource:
    return MicrophoneSource(MicrophoneSettings(id="mic", zone="hall", kind="file", path=path,
                                               **{"speed": 0, **fields}))


def hear(path: Path, **fields: Any) -> tuple[MicrophoneSource, list[Observation]]:
    """Run a file through the source at speed 0; what it emitted (it must end by itself, not raise)."""
    source, emitted = microphone(path, **fields), []

    async def keep(observation: Observation) -> None:
        emitted.append(observation)

    asyncio.run(asyncio.wait_for(source.run(keep), 30))
    return source, emitted


def alarms(emitted: list[Observation]) -> list[AlarmHeard]:
    return [o for o in emitted if isinstance(o, AlarmHeard)]


@pytest.fixture(scope="module")
def alarm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s of household noise with a smoke alarm (T3 at 3.1 kHz) from about 0.4 s: reported at about 6.4 s."""
    return alarm_wav(tmp_path_factory.mktemp("alarm") / "alarm.wav", "T3")


def float_wav(path: Path, samples: Any, rate: int = RATE) -> Path:
    """A WAVE_FORMAT_IEEE_FLOAT file holding exactly these numbers (ffmpeg would not write NaN or 1e30)."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = (b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, len(data) // 4)
            + b"data" + struct.pack("<I", len(data)) + data)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


# -- what decodes is heard, whatever its format ---------------------------------------------------------
@pytest.mark.parametrize(("name", "options"), [
    ("u8.wav", ["-c:a", "pcm_u8"]), ("s24.wav", ["-c:a", "pcm_s24le"]), ("s32.wav", ["-c:a", "pcm_s32le"]),
    ("f64.wav", ["-c:a", "pcm_f64le"]), ("planar-51.m4a", ["-ac", "6", "-c:a", "aac"]),
    ("packed-71.wav", ["-af", "pan=7.1|FL=c0|FR=c0|FC=c0|LFE=c0|BL=c0|BR=c0|SL=c0|SR=c0"]),
    ("8k.wav", ["-ar", "8000"]), ("11k.wav", ["-ar", "11025"]), ("96k.wav", ["-ar", "96000"]),
    ("192k.wav", ["-ar", "192000"]), ("mp3.mp3", ["-c:a", "libmp3lame"]), ("opus.opus", ["-c:a", "libopus"]),
    ("vorbis.ogg", ["-c:a", "libvorbis"]), ("flac.flac", ["-c:a", "flac"]),
    ("mulaw.wav", ["-ar", "8000", "-c:a", "pcm_mulaw"]), ("alaw.wav", ["-ar", "8000", "-c:a", "pcm_alaw"]),
    ("adpcm.wav", ["-c:a", "adpcm_ima_wav"]), ("adpcm-ms.wav", ["-c:a", "adpcm_ms"]),
])
def test_an_alarm_is_heard_in_every_format_ffmpeg_writes(alarm: Path, tmp_path: Path, name: str,
                                                         options: list[str]) -> None:
    converted = tmp_path / name
    ffmpeg("-i", str(alarm), *options, str(converted))
    source, emitted = hear(converted)
    assert [a.alarm for a in alarms(emitted)] == ["smoke"]
    health = source.health()
    assert abs(health.seconds_heard - 12.0) < 0.2 and health.bad_input == 0 and health.last_error is None


@pytest.mark.parametrize("name", ["antiphase.wav", "antiphase.m4a"])  # packed s16, planar float
def test_stereo_whose_channels_cancel_in_a_downmix_is_heard_on_one_channel_and_said(alarm: Path, tmp_path: Path,
                                                                                   name: str) -> None:
    inverted = tmp_path / name
    ffmpeg("-i", str(alarm), "-af", "pan=stereo|c0=c0|c1=-1*c0", str(inverted))
    source, emitted = hear(inverted)  # the downmix was silence: nothing heard, nothing said
    assert [a.alarm for a in alarms(emitted)] == ["smoke"]
    health = source.health()
    assert health.bad_input == 1 and health.last_error is not None
    assert name in health.last_error and "channels cancel out in a mono downmix" in health.last_error


def test_stereo_with_one_silent_channel_is_not_said_to_cancel(alarm: Path, tmp_path: Path) -> None:
    left = tmp_path / "left.wav"
    ffmpeg("-i", str(alarm), "-af", "pan=stereo|c0=c0", str(left))
    source, emitted = hear(left)
    assert [a.alarm for a in alarms(emitted)] == ["smoke"] and source.health().last_error is None


# -- a stream whose format changes midway -------------------------------------------------------------------
@pytest.mark.parametrize(("container", "codec", "first", "second"), [
    ("adts", "aac", ("44100", "1"), ("22050", "2")),
    ("mpegts", "mp2", ("48000", "2"), ("16000", "1")),
])
def test_a_stream_whose_rate_and_layout_change_midway_is_heard_to_its_end(
        alarm: Path, tmp_path: Path, container: str, codec: str, first: tuple[str, str],
        second: tuple[str, str]) -> None:
    # Two recordings joined end to end, the join 4 s into the alarm: its two cycles need both halves.
    parts = []
    for index, (cut, (rate, channels)) in enumerate(((["-t", "4"], first), (["-ss", "4"], second))):
        part = tmp_path / f"part{index}.{container}"
        ffmpeg("-i", str(alarm), *cut, "-ar", rate, "-ac", channels, "-c:a", codec, "-f", container, str(part))
        parts.append(part.read_bytes())
    joined = tmp_path / f"joined.{container}"
    joined.write_bytes(b"".join(parts))
    source, emitted = hear(joined)  # raised 'Frame does not match AudioResampler setup' at the join
    assert [a.alarm for a in alarms(emitted)] == ["smoke"]
    assert source.health().seconds_heard > 11.5 and source.health().last_error is None


# -- broken files ----------------------------------------------------------------------------------------
def test_a_file_cut_in_a_packet_is_heard_up_to_the_cut_once_and_says_so(alarm: Path, tmp_path: Path) -> None:
    flac = tmp_path / "alarm.flac"
    ffmpeg("-i", str(alarm), "-c:a", "flac", str(flac))
    cut = tmp_path / "cut.flac"
    data = flac.read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 4 + 7])  # mid-packet, after the alarm was reported

    async def scenario() -> tuple[Recording, Collecting]:
        # A daemon (sources are restarted): the file used to raise at the cut and be heard again from the start.
        source, sink = Recording(microphone(cut)), Collecting()
        pipeline = Pipeline(sources=[(source, "hall")], assessor=Unreachable(), sinks=[sink],
                            windows=WindowSettings(min_interval_s=0.0), alerts=AlertManager(AlertSettings()))
        task = asyncio.create_task(pipeline.run())
        await asyncio.sleep(2.5)  # past the pipeline's first restart (1 s)
        pipeline.stop()
        await asyncio.wait_for(task, 20)
        return source, sink

    source, sink = asyncio.run(scenario())
    assert len(alarms(source.emitted)) == 1 and [e.type for e in sink.events] == ["new"]
    health = source.health()
    assert health.bad_input >= 1 and health.ended and health.seconds_heard > 8
    assert health.last_error is not None and "cut.flac" in health.last_error and "skipped" in health.last_error


@pytest.mark.parametrize("content", [b"", b"random"], ids=["zero-length", "random-bytes"])
def test_a_file_that_is_not_audio_is_bad_input_naming_it(tmp_path: Path, content: bytes) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(np.random.default_rng(1).bytes(100_000) if content else b"")
    source = microphone(junk)
    with pytest.raises(SensorError, match=r"microphone 'mic': cannot open audio file .*junk.wav"):
        asyncio.run(source.run(_ignore))
    assert source.health().bad_input == 1 and "junk.wav" in (source.health().last_error or "")


def test_a_directory_is_not_said_to_be_missing(tmp_path: Path) -> None:
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    with pytest.raises(SensorError, match=r"audio file .*folder.wav is not a regular file"):
        asyncio.run(microphone(folder).run(_ignore))


def test_a_wav_claiming_more_data_than_it_has_is_heard_to_its_end(alarm: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.wav"
    short.write_bytes(alarm.read_bytes()[: 44 + 2 * RATE * 3])  # the header still says 12 s
    source, _ = hear(short)
    assert abs(source.health().seconds_heard - 3.0) < 0.1 and source.ended


@pytest.mark.parametrize("rate", [1, 2_000_000_000])
def test_a_sample_rate_no_microphone_has_is_refused_naming_it(alarm: Path, tmp_path: Path, rate: int) -> None:
    header = bytearray(alarm.read_bytes()[:44])
    struct.pack_into("<II", header, 24, rate, rate * 2)
    odd = tmp_path / "odd.wav"
    odd.write_bytes(bytes(header) + alarm.read_bytes()[44:44 + 3200])
    source = microphone(odd)
    # At 1 Hz, 1,600 samples were heard as 27 minutes of sound, with impacts in its steps.
    with pytest.raises(SensorError, match=rf"odd.wav: sample rate {rate} Hz is not a microphone's"):
        asyncio.run(source.run(_ignore))
    assert source.health().seconds_heard == 0 and source.health().bad_input == 1


class _GarbageStream:
    """A stream whose every packet the decoder rejects (a camera sending another codec than it announced)."""

    streams = SimpleNamespace(audio=["track"])

    def demux(self, stream: str) -> Any:
        while True:
            time.sleep(0.001)
            yield SimpleNamespace(decode=_reject)

    def decode(self, stream: str) -> Any:  # what the source read before packets were decoded one by one
        time.sleep(0.001)
        yield from _reject()

    def close(self) -> None:
        return None


def _reject() -> list[Any]:
    raise av.InvalidDataError(1094995529, "Invalid data found when processing input", "avcodec_send_packet()")


class _GarbageMicrophone(MicrophoneSource):
    def __init__(self) -> None:
        super().__init__(MicrophoneSettings(id="cam-audio", kind="url", url="rtsp://user:pw@127.0.0.1/live",
                                            reconnect={"initial_s": 0.05, "max_s": 0.1}))

    def _open(self) -> Any:
        return _GarbageStream()


def test_a_stream_of_packets_that_never_decode_is_offline_and_reopened_not_spun_on() -> None:
    async def scenario() -> MicrophoneSource:
        source = _GarbageMicrophone()
        await run_until_reconnected(source, 2, timeout_s=10)
        return source

    with structlog.testing.capture_logs() as logs:
        source = asyncio.run(scenario())
    health = source.health()
    assert source.reconnects >= 2 and health.state == "offline" and health.bad_input >= 100
    assert health.last_error is not None and "could not be decoded" in health.last_error
    offline = [e["error"] for e in logs if e["event"] == "microphone offline"]
    # The reason reaches the reconnect's error (it was overwritten by a bare 'stopped delivering audio').
    assert offline and all("50 packets in a row could not be decoded" in error for error in offline), offline
    assert not any("pw" in str(e) for e in logs)
    assert sum(e["event"] == "audio packet skipped" and e["log_level"] == "warning" for e in logs) <= 3


# -- numbers that are not sound -----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, 1e30], ids=["nan", "inf", "1e30"])
def test_a_float_wav_of_non_numbers_is_visible_and_does_not_deafen_the_microphone(tmp_path: Path,
                                                                                  value: float) -> None:
    rng = np.random.default_rng(3)
    room = (0.003 * sounds.room_tone(6 * RATE, rng)).astype(np.float32)
    room[4 * RATE:4 * RATE + int(0.3 * RATE)] += sounds.impact(rng)
    samples = np.concatenate([np.full(RATE, value, dtype=np.float32), room])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning in the listener is the poisoning under way
        source, emitted = hear(float_wav(tmp_path / "bad.wav", samples))
    texts = [o.text for o in emitted if isinstance(o, LogEntry)]
    assert any("loud impact" in t for t in texts), texts  # 1e30 turned the background into NaN for good
    health = source.health()
    assert health.bad_input >= 1
    assert health.last_error is not None and "bad.wav" in health.last_error and "not numbers" in health.last_error


@pytest.mark.parametrize("level", [0.0, 1.0, -1.0], ids=["digital-silence", "dc-full-scale", "dc-negative"])
def test_silence_and_dc_are_heard_as_nothing(tmp_path: Path, level: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no log of zero
        source, emitted = hear(sounds.write_wav(tmp_path / "flat.wav", np.full(5 * RATE, level, np.float32)))
    assert emitted == [] and source.health().seconds_heard == 5.0 and source.health().bad_input == 0


@pytest.mark.parametrize(("at_s", "seconds"), [(0.0, 1.0), (5.0, 0.5)], ids=["at-the-start", "midway"])
def test_impacts_are_heard_after_a_stretch_of_digital_silence(at_s: float, seconds: float) -> None:
    # Learnt as the room's level, half a second of zeros dropped the background to -100 dB for good:
    # the room's return was one endless loud event, and no impact was heard again.
    rng = np.random.default_rng(3)
    room = (0.003 * sounds.room_tone(20 * RATE, rng)).astype(np.float32)
    room[int(at_s * RATE):int((at_s + seconds) * RATE)] = 0.0
    for at in (10, 16):
        room[at * RATE:at * RATE + int(0.3 * RATE)] += sounds.impact(rng)
    listener = Listener()
    heard = [fact for i in range(0, len(room), 1600) for fact in listener.feed(room[i:i + 1600])]
    assert [(round(fact.t), fact.kind) for fact in heard] == [(10, "impact"), (16, "impact")]


def test_the_listener_clips_samples_beyond_full_scale() -> None:
    listener = Listener()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        listener.feed(np.full(RATE, 3e19, np.float32))
        listener.feed(np.zeros(RATE, np.float32))
    assert listener.bad_samples == RATE and listener._background is not None and np.isfinite(listener._background)


# -- video files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("speed", [0.0, 4.0])
def test_audio_that_starts_late_in_a_video_keeps_the_files_clock(alarm: Path, tmp_path: Path, speed: float) -> None:
    video = tmp_path / "late.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=5", "-itsoffset", "5", "-i", str(alarm), "-t", "18",
           "-c:v", "libx264", "-c:a", "aac", str(video))
    if speed:  # paced: the alarm is reported 6.4 s into the audio, 11.4 s into the file (2.85 s at 4x)
        source, emitted = microphone(video, speed=speed), []

        async def keep(observation: Observation) -> None:
            emitted.append(observation)

        async def run() -> tuple[int, int]:
            task = asyncio.create_task(source.run(keep))
            await asyncio.sleep(2.4)
            early = len(alarms(emitted))  # 9.6 s into the file: 4.6 s of audio, no alarm yet (was heard at 1.6 s)
            await asyncio.sleep(1.1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return early, len(alarms(emitted))

        assert asyncio.run(run()) == (0, 1)
        return
    source, emitted = hear(video)
    (heard,) = alarms(emitted)
    # Stamped in the video's time, like its camera's frames: 5 s of picture before the first sound.
    assert abs(heard.ts - source._started_at - 11.4) < 0.3


async def _ignore(observation: Observation) -> None:
    return None
