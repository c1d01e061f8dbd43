"""Microphones through the real pipeline: WAV files, a camera's RTSP audio track, ALSA devices that are absent.

A smoke or CO alarm pattern heard is a critical alert on its own, with the model unreachable (the
assessor always fails here): the direct path of monitor/assess/acoustic.py. Nothing but text leaves a
microphone: no samples, no files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.alerts import AlertManager, AlertSettings
from monitor.assess.acoustic import HAZARDS, STRATEGY
from monitor.assess.verdict import Verdict
from monitor.core.errors import SensorError, TransientBackendError
from monitor.daemon.wiring import source_specs, zone_labels
from monitor.pipeline import Pipeline
from monitor.settings import Settings, config_warnings
from monitor.sinks.ha_discovery import Discovery, ZoneLabel
from monitor.windows import Window, WindowSettings
from monitor.zones import ZoneState
from sensors.audio import MicrophoneSource
from sensors.audio_config import MicrophoneSettings, alsa_device_problem
from sensors.types import AlarmHeard, LogEntry, Observation
from tests.support import sounds
from tests.support.media import RtspRelay, rtsp_missing
from tests.support.sinks import Collecting
from tests.support.sources import run_until_reconnected


class Unreachable:
    """A model that never answers: every window fails as a transient backend error."""

    name = "unreachable"

    def __init__(self) -> None:
        self.calls = 0

    async def assess(self, window: Window) -> Verdict:
        self.calls += 1
        raise TransientBackendError("connection refused: http://127.0.0.1:9/v1")


class Recording:
    """A microphone source whose emitted observations are kept."""

    def __init__(self, source: MicrophoneSource) -> None:
        self.source = source
        self.id = source.id
        self.emitted: list[Observation] = []

    async def run(self, emit: Any) -> None:
        async def keep(observation: Observation) -> None:
            self.emitted.append(observation)
            await emit(observation)

        await self.source.run(keep)

    def health(self) -> Any:
        return self.source.health()


def alarm_wav(path: Path, pattern: sounds.PatternName = "T3", *, cycles: int = 3, square: bool = False,
              snr_db: float = 6.0, rate: int = sounds.RATE) -> Path:
    rng = np.random.default_rng(11)
    alarm, mask = sounds.alarm(pattern, hz=520.0 if square else 3100.0, square=square, rng=rng, cycles=cycles,
                               spread=0.1, echo_rt60_s=0.3)
    mixed = sounds.mix_at_snr(alarm, mask, sounds.household(len(alarm) / sounds.RATE + 1, rng), snr_db)
    if rate != sounds.RATE:
        mixed = sounds.resample(mixed, sounds.RATE, rate)
    return sounds.write_wav(path, mixed, rate)


def microphone(path: Path, **fields: Any) -> MicrophoneSource:
    return MicrophoneSource(MicrophoneSettings(id="hall-mic", zone="hall", kind="file", path=path, speed=0,
                                               **fields))


async def run_pipeline(source: Any, *, zone: str = "hall") -> tuple[Collecting, Unreachable, Pipeline]:
    sink, model = Collecting(), Unreachable()
    pipeline = Pipeline(sources=[(source, zone)], assessor=model, sinks=[sink],
                        windows=WindowSettings(min_interval_s=0.0), alerts=AlertManager(AlertSettings()),
                        exit_when_sources_end=True, shutdown_timeout_s=5.0)
    await asyncio.wait_for(pipeline.run(), 60)
    return sink, model, pipeline


@pytest.mark.parametrize(("pattern", "square", "rate"), [("T3", False, 16_000), ("T4", True, 44_100)],
                         ids=["smoke-3.1kHz-16k", "co-520Hz-44.1k"])
def test_alarm_in_a_wav_file_is_a_critical_alert_with_the_model_unreachable(
        tmp_path: Path, pattern: sounds.PatternName, square: bool, rate: int) -> None:
    wav = alarm_wav(tmp_path / "hall.wav", pattern, square=square, rate=rate)
    source = Recording(microphone(wav))
    sink, model, _ = asyncio.run(run_pipeline(source))
    kind = "smoke" if pattern == "T3" else "carbon_monoxide"
    new = [e for e in sink.events if e.type == "new"]
    assert len(new) == 1, [e.to_json() for e in sink.events]
    alert = new[0].alert
    assert (alert.severity, alert.hazard, alert.zone, alert.strategy) == ("critical", HAZARDS[kind], "hall", STRATEGY)
    assert alert.sources == ("hall-mic",) and alert.prompt_tokens == 0
    assert model.calls >= 1  # the model was asked (and failed): the alert did not wait for it
    heard = [o for o in source.emitted if isinstance(o, AlarmHeard)]
    assert heard and heard[0].alarm == kind and pattern in heard[0].text


def test_an_alarm_that_keeps_sounding_updates_its_one_alert(tmp_path: Path) -> None:
    wav = alarm_wav(tmp_path / "hall.wav", "T3", cycles=9)  # 36 s: reported at 6 s, then every 10 s
    sink, _, _ = asyncio.run(run_pipeline(microphone(wav)))
    types = [e.type for e in sink.events]
    assert types[0] == "new" and types.count("new") == 1 and types.count("update") >= 2
    assert len({e.alert.id for e in sink.events}) == 1


def test_a_zone_switched_off_gets_no_alarm_alert(tmp_path: Path) -> None:
    async def scenario() -> Collecting:
        sink = Collecting()
        alerts = AlertManager(AlertSettings())
        alerts.controls.set_monitoring("hall", False)
        pipeline = Pipeline(sources=[(microphone(alarm_wav(tmp_path / "h.wav")), "hall")], assessor=Unreachable(),
                            sinks=[sink], windows=WindowSettings(min_interval_s=0.0), alerts=alerts,
                            exit_when_sources_end=True)
        await asyncio.wait_for(pipeline.run(), 60)
        return sink

    assert asyncio.run(scenario()).events == []


def test_sudden_sounds_are_observations_for_the_model_not_alerts(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    room = (0.003 * sounds.room_tone(int(10 * sounds.RATE), rng)).astype(np.float32)
    for at, sound in ((3.0, sounds.impact(rng)), (6.0, sounds.scream(rng))):
        start = int(at * sounds.RATE)
        room[start:start + len(sound)] += sound
    source = Recording(microphone(sounds.write_wav(tmp_path / "room.wav", room)))
    sink, model, _ = asyncio.run(run_pipeline(source))
    texts = [o.text for o in source.emitted if isinstance(o, LogEntry)]
    assert any("loud impact" in t for t in texts) and any("high-pitched" in t for t in texts), texts
    assert sink.events == [] and model.calls >= 1


def test_nothing_but_text_leaves_a_microphone(tmp_path: Path) -> None:
    wav = alarm_wav(tmp_path / "hall.wav", "T3", cycles=4)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    before = {p for p in tmp_path.rglob("*")}
    source = Recording(microphone(wav))
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        asyncio.run(run_pipeline(source))
    finally:
        os.chdir(cwd)
    assert {p for p in tmp_path.rglob("*")} == before  # no file written, recorded or cached
    assert source.emitted
    for observation in source.emitted:
        assert isinstance(observation, LogEntry)
        for name, value in ((f.name, getattr(observation, f.name)) for f in dataclasses.fields(observation)):
            assert value is None or isinstance(value, str | float | int), (name, type(value))
            assert not isinstance(value, str) or len(value) < 300, name
        assert observation.raw == ""
    health = source.source.health().to_json()
    assert all(isinstance(v, str | int | float | bool | list) or v is None for v in health.values())
    assert all(isinstance(item, str) for item in health["alarms_sounding"])


def test_a_missing_file_fails_naming_it(tmp_path: Path) -> None:
    source = microphone(tmp_path / "nowhere.wav")
    with pytest.raises(SensorError, match=r"microphone 'hall-mic': audio file .*nowhere.wav not found"):
        asyncio.run(source.run(_ignore))
    assert source.health().state == "offline"


def test_a_video_without_an_audio_track_fails_naming_it(tmp_path: Path) -> None:
    video = tmp_path / "silent.mp4"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5",
                    "-t", "1", "-c:v", "libx264", str(video)], check=True, timeout=60)
    source = microphone(video)
    with pytest.raises(SensorError, match=r"silent.mp4 has no audio track"):
        asyncio.run(source.run(_ignore))
    assert source.health().bad_input == 1


def test_a_file_that_is_not_audio_fails_naming_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really" * 10)
    with pytest.raises(SensorError, match=r"microphone 'hall-mic': .*junk.wav"):
        asyncio.run(microphone(junk).run(_ignore))


def test_an_absent_alsa_device_is_offline_with_an_error_naming_it() -> None:
    settings = MicrophoneSettings(id="bedroom-mic", kind="device", device="hw:7,0",
                                  reconnect={"initial_s": 0.05, "max_s": 0.1})

    async def scenario() -> MicrophoneSource:
        source = MicrophoneSource(settings)
        await run_until_reconnected(source, 2, timeout_s=20, poll_s=0.05)
        return source

    source = asyncio.run(scenario())
    health = source.health()
    assert health.state == "offline" and source.reconnects >= 2  # retried with backoff, never raised
    assert health.last_error is not None
    assert "microphone 'bedroom-mic': cannot open ALSA capture device 'hw:7,0'" in health.last_error


def test_alsa_device_problems_are_told_from_the_kernel_card_list(tmp_path: Path) -> None:
    assert alsa_device_problem("hw:0,0", tmp_path / "absent") is not None
    (tmp_path / "cards").write_text(" 0 [PCH            ]: HDA-Intel - HDA Intel PCH\n"
                                    " 1 [USB            ]: USB-Audio - USB Microphone\n")
    assert alsa_device_problem("hw:1,0", tmp_path) is None
    assert alsa_device_problem("plughw:CARD=USB,DEV=0", tmp_path) is None
    assert alsa_device_problem("default", tmp_path) is None
    assert alsa_device_problem("hw:3,0", tmp_path) == "no sound card '3' (cards: 0, 1, PCH, USB)"
    (tmp_path / "cards").write_text("--- no soundcards ---\n")
    assert "lists none" in (alsa_device_problem("hw:0", tmp_path) or "")


def test_check_config_warns_about_an_alsa_device_this_machine_lacks(make_settings: Any) -> None:
    settings: Settings = make_settings(microphones=[{"id": "m", "kind": "device", "device": "hw:9,0"}])
    if alsa_device_problem("hw:9,0") is None:
        pytest.skip("this machine has a sound card 9")
    warnings = [w for w in config_warnings(settings, environ={}) if w.startswith("microphones[0].device")]
    assert len(warnings) == 1 and "hw:9,0" in warnings[0] and "retried" in warnings[0]


def test_microphones_config_wires_a_source_per_microphone_and_alarm_sensors_per_zone(make_settings: Any,
                                                                                      tmp_path: Path) -> None:
    settings: Settings = make_settings(
        sources=[{"id": "kitchen", "kind": "stdin", "format": "text"}],
        microphones=[{"id": "hall-mic", "zone": "hall", "kind": "file", "path": str(tmp_path / "a.wav")},
                     {"id": "cam-audio", "zone": "kitchen", "kind": "url", "url": "rtsp://cam.local/live",
                      "options": {"rtsp_transport": "tcp"}, "hearing": {"alarms": False}}])
    spec = source_specs(settings)["hall-mic"]
    assert spec.zone == "hall" and isinstance(spec.build(), MicrophoneSource)
    labels = {label.id: label for label in zone_labels(settings)}
    assert labels["hall"].hears_alarms and not labels["kitchen"].hears_alarms
    assert "hall" in settings.zone_ids()
    with pytest.raises(Exception, match=r"microphones\[0\].id: duplicate source id 'kitchen'"):
        make_settings(sources=[{"id": "kitchen", "kind": "stdin", "format": "text"}],
                      microphones=[{"id": "kitchen", "kind": "file", "path": "a.wav"}])
    with pytest.raises(Exception, match=r"microphone kind 'device' needs device"):
        make_settings(microphones=[{"id": "m", "kind": "device"}])


def test_home_assistant_gets_smoke_and_co_sensors_for_zones_a_microphone_hears(make_settings: Any) -> None:
    discovery = Discovery(make_settings(mqtt={"host": "127.0.0.1"}).mqtt)  # type: ignore[arg-type]
    messages = discovery.messages([ZoneLabel("hall", hears_alarms=True), ZoneLabel("kitchen")])
    sensors = {topic: config for topic, config in messages.items() if config.get("device_class") in HAZARDS}
    assert sorted(c["device_class"] for c in sensors.values()) == ["carbon_monoxide", "smoke"]
    assert all("/hall_" in topic for topic in sensors)
    smoke = next(c for c in sensors.values() if c["device_class"] == "smoke")
    assert smoke["state_topic"] == discovery.topics.state("hall")
    # What the template reads: the zone state's `alarms`, present while an alarm's alert is open.
    open_state = ZoneState("hall", "blind", "camera offline", 0.0, alarms=("smoke",)).to_json()
    assert open_state["alarms"] == ["smoke"]
    assert "alarms" not in ZoneState("hall", "clear", "fine", 0.0).to_json()


@pytest.mark.skipif(rtsp_missing() is not None, reason=rtsp_missing() or "")
def test_alarm_in_a_cameras_rtsp_audio_track_is_a_critical_alert(tmp_path: Path) -> None:
    wav = alarm_wav(tmp_path / "alarm.wav", "T3", cycles=30)
    clip = tmp_path / "camera.mp4"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
                    "-i", str(wav), "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-c:a",
                    "aac", str(clip)], check=True, timeout=60)

    async def scenario(url: str) -> Collecting:
        sink = Collecting()
        source = MicrophoneSource(MicrophoneSettings(id="porch-cam-audio", zone="porch", kind="url", url=url,
                                                     options={"rtsp_transport": "udp"},
                                                     reconnect={"initial_s": 0.2, "max_s": 1.0}))
        pipeline = Pipeline(sources=[(source, "porch")], assessor=Unreachable(), sinks=[sink],
                            windows=WindowSettings(min_interval_s=0.0), alerts=AlertManager(AlertSettings()))
        task = asyncio.create_task(pipeline.run())
        deadline = time.monotonic() + 40
        while not sink.events and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        pipeline.stop()
        await asyncio.wait_for(task, 20)
        return sink

    with RtspRelay(clip) as relay:
        sink = asyncio.run(scenario(relay.url))
    assert sink.events and sink.events[0].type == "new"
    assert (sink.events[0].alert.hazard, sink.events[0].alert.zone) == (HAZARDS["smoke"], "porch")


async def _ignore(observation: Observation) -> None:
    return None
