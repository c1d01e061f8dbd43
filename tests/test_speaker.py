"""The speaker sink with the real espeak-ng engine, rendering to WAV files instead of a sound card."""

from __future__ import annotations

import asyncio
import shutil
import time
import wave
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from monitor.alerts import AlertEvent, EventType
from monitor.assess.verdict import Severity
from monitor.core.errors import ConfigError
from monitor.settings import load_settings
from monitor.sinks.settings import SpeakerSinkSettings
from monitor.sinks.speaker import (
    SpeakerError,
    SpeakerSink,
    SpeechQueue,
    Utterance,
    audio_device_problem,
    clean_for_speech,
    speech_text,
)
from tests.support.mosquitto import alert_event

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed: make system-deps")

WAV_COMMAND = ["espeak-ng", "-v", "{voice}", "-s", "{rate}", "-w", "{wav}", "{text}"]


def event(n: int, *, kind: EventType = "new", severity: Severity = "warning", advice: str = "Turn off the burner now.",
          hazard: str = "hot oil fire", **alert_changes: Any) -> AlertEvent:
    base = alert_event("kitchen", n, kind=kind, severity=severity)
    return replace(base, alert=replace(base.alert, advice=advice, hazard=hazard, **alert_changes))


def wav_sink(tmp_path: Path, **changes: Any) -> tuple[SpeakerSink, Path]:
    folder = tmp_path / "speech"
    settings = SpeakerSinkSettings(**({"enabled": True, "command": WAV_COMMAND, "wav_dir": folder} | changes))
    return SpeakerSink(settings, counters=Counter()), folder


def durations(folder: Path) -> list[float]:
    found = []
    for path in sorted(folder.glob("*.wav")):
        with wave.open(str(path)) as audio:
            assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (22050, 1, 2)
            assert audio.getnframes() > 0
            found.append(audio.getnframes() / audio.getframerate())
    return found


def said(logs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["alert"], e["severity"]) for e in logs if e["event"] == "warning said aloud"]


def test_what_is_said_comes_from_advice_and_hazard_only_cleaned_of_markup() -> None:
    """Observations and reasons are never read out; brackets, tags and control characters never reach the engine."""
    hostile = event(1, severity="critical", advice="Step back [[h@'l@U]] <prosody rate='x-slow'>now</prosody>\x07",
                    hazard="-v hot\noil", evidence=("IGNORE ALL RULES",), reason="secret reasoning")
    text = speech_text(hostile)
    assert text.startswith("Kitchen: Danger! Step back now.")
    assert "IGNORE" not in text and "secret" not in text
    assert not set(text) & set("[]<>=/\x07\n")
    assert text.endswith("Risk: v hot oil.")
    assert speech_text(event(2, kind="escalate"), said="warning").startswith("Kitchen: I repeat: Warning!")
    named = event(4, kind="escalate", zone_name="Workshop")
    assert speech_text(named, said="warning").startswith("Workshop: I repeat: Warning!")  # as people call it
    assert speech_text(event(3, severity="info"), "de-DE").startswith("Kitchen: Vorsicht!")
    assert len(clean_for_speech("word " * 100, 40)) <= 40


async def test_speech_is_real_audio_whose_length_follows_the_text(tmp_path: Path) -> None:
    """espeak-ng renders each message to a WAV file: 22.05 kHz mono 16-bit, longer text, longer audio."""
    sink, folder = wav_sink(tmp_path)
    await sink.start()
    await sink.publish(event(1, advice="Stop.", hazard="fire"))
    await sink.publish(event(2, advice="Put the knife down, step away from the counter and wait until the oil "
                                       "has cooled down completely before you clean the pan.",
                             hazard="deep cut and burn from hot oil splashing onto the hand"))
    await sink.close()
    short, long = durations(folder)
    assert 0.8 < short < 5.0, short
    assert 5.0 < long < 20.0, long
    assert long > 2 * short
    assert sink.counters["speech:spoken"] == 2


async def test_critical_is_said_before_anything_queued(tmp_path: Path) -> None:
    """Queued while the speaker is busy: critical first, then warning, then info, whatever the arrival order."""
    sink, _folder = wav_sink(tmp_path)
    with capture_logs() as logs:
        await sink.start()
        await sink.publish(event(1, severity="warning", hazard="wet floor"))  # taken at once
        await asyncio.sleep(0.05)
        for n, severity in ((2, "info"), (3, "warning"), (4, "info"), (5, "critical")):
            await sink.publish(event(n, severity=severity, hazard=f"hazard number {n}"))
        await sink.close()
    order = said(logs)
    assert order[0] == ("alert00001", "warning")
    assert order[1:] == [("alert00005", "critical"), ("alert00003", "warning"), ("alert00002", "info"),
                         ("alert00004", "info")]


def test_the_queue_replaces_a_message_about_the_same_alert_and_drops_the_least_urgent_when_full() -> None:
    """One message per alert, the newest text in the old one's place; a full queue drops the least urgent, oldest."""
    queue = SpeechQueue(3)
    assert queue.put(Utterance("a", "kitchen", "info", "new", "first", 1))[0] == "queued"
    assert queue.put(Utterance("b", "kitchen", "info", "new", "b", 2))[0] == "queued"
    status, old = queue.put(Utterance("a", "kitchen", "info", "update", "second", 9))
    assert status == "replaced" and old is not None and old.text == "first"
    assert queue.put(Utterance("c", "hall", "warning", "new", "c", 3))[0] == "queued"
    status, dropped = queue.put(Utterance("d", "hall", "critical", "new", "d", 4))
    assert status == "dropped_full" and dropped is not None and dropped.alert_id == "a"  # info, and oldest
    status, dropped = queue.put(Utterance("e", "hall", "info", "new", "e", 5))
    assert status == "dropped_full" and dropped is not None and dropped.alert_id == "b"  # the older info
    assert [u.alert_id for u in iter(queue.pop, None)] == ["d", "c", "e"]


async def test_an_acknowledged_alert_stops_its_repeats(tmp_path: Path) -> None:
    """After `ack`, the alert's queued message is taken out, and its updates and escalations are not said."""
    sink, folder = wav_sink(tmp_path, min_interval_s=0)
    with capture_logs() as logs:
        await sink.publish(event(1))  # queued before the speaker runs
        await sink.publish(event(2, hazard="knife on the floor"))
        await sink.publish(event(2, kind="ack", hazard="knife on the floor", acknowledged_at=time.time(),
                                 acknowledged_by="sam"))
        await sink.start()
        await sink.publish(event(2, kind="update", hazard="knife on the floor"))  # an update racing the ack
        await sink.publish(event(2, kind="escalate", hazard="knife on the floor", acknowledged_at=time.time()))
        await sink.publish(event(1, kind="update", updates=1))
        await sink.close()
    assert [alert for alert, _ in said(logs)] == ["alert00001"]  # the update replaced the queued new
    assert len(durations(folder)) == 1
    assert sink.counters["speech:cancelled_ack"] == 1 and sink.counters["speech:acknowledged"] == 2


async def test_updates_are_rate_limited_per_zone_and_quiet_alerts_are_not_said(tmp_path: Path) -> None:
    """Repeats of a zone wait min_interval_s; new alerts and escalations are always said; quiet info never."""
    sink, _folder = wav_sink(tmp_path, min_interval_s=60)
    await sink.start()
    await sink.publish(event(1))
    await asyncio.sleep(0.5)
    await sink.publish(event(1, kind="update", updates=1))
    await sink.publish(event(1, kind="escalate", escalation_level=1))
    await sink.publish(event(3, severity="info", quiet=True, hazard="knife left out"))
    await sink.close()
    assert sink.counters["speech:rate_limited"] == 1
    assert sink.counters["speech:quiet"] == 1
    assert sink.counters["speech:spoken"] == 2


async def test_text_goes_to_standard_input_when_the_template_has_no_text(tmp_path: Path) -> None:
    """A replacement engine may read its text from stdin: the template needs no {text}."""
    sink, folder = wav_sink(tmp_path, command=["espeak-ng", "-v", "{voice}", "-w", "{wav}"])
    await sink.start()
    await sink.publish(event(1))
    await sink.close()
    (duration,) = durations(folder)
    assert duration > 1.0


def test_an_unknown_placeholder_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    """A broken template is caught by check-config, with the key, the element and the known placeholders."""
    config = tmp_path / "monitor.toml"
    config.write_text('[sinks.speaker]\nenabled = true\ncommand = ["espeak-ng", "-v", "{vocie}", "{text}"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{config}: sinks.speaker.command: [2] '{{vocie}}': unknown placeholder {{vocie}}")
    assert "{voice}" in problem
    config.write_text('[sinks.speaker]\nenabled = true\ncommand = ["espeak-ng", "-w", "{wav}", "{text}"]\n')
    with pytest.raises(ConfigError, match=r"set sinks\.speaker\.wav_dir"):
        load_settings(config)


async def test_a_template_the_engine_rejects_is_a_counted_failure_with_its_error(tmp_path: Path) -> None:
    """An engine that fails (here: a voice espeak-ng does not have) is logged with its own message and counted."""
    sink, folder = wav_sink(tmp_path, voice="zz")
    with capture_logs() as logs:
        await sink.start()
        await sink.publish(event(1))
        await sink.close()
    (failure,) = [e for e in logs if e["event"] == "speaker command failed"]
    assert failure["setting"] == "sinks.speaker.command" and failure["command"] == "espeak-ng"
    assert "voice does not exist" in failure["reason"] and failure["log_level"] == "error"
    assert sink.counters["speech:failed"] == 1 and not list(folder.glob("*.wav"))


async def test_a_missing_engine_is_a_start_up_error_or_with_optional_a_counted_failure(tmp_path: Path) -> None:
    """No crash either way: a clear error naming the setting, or (optional) speech counted as unavailable."""
    command = ["no-such-tts-engine", "{text}"]
    sink = SpeakerSink(SpeakerSinkSettings(enabled=True, command=command))
    with pytest.raises(SpeakerError, match=r"sinks\.speaker\.command: 'no-such-tts-engine' not found"):
        await sink.start()
    optional = SpeakerSink(SpeakerSinkSettings(enabled=True, command=command, optional=True), counters=Counter())
    await optional.start()
    await optional.publish(event(1))
    await optional.close()
    assert optional.counters["speech:unavailable"] == 1 and optional.unavailable is not None


async def test_a_missing_audio_device_is_a_start_up_error_naming_the_setting(tmp_path: Path) -> None:
    """Playing to a sound card that is not there fails at start, not silently at the first warning."""
    no_card = tmp_path / "snd"
    no_card.mkdir()
    probe = lambda: audio_device_problem(no_card, runtime_dir=str(tmp_path))  # noqa: E731
    sink = SpeakerSink(SpeakerSinkSettings(enabled=True), audio_probe=probe)
    with pytest.raises(SpeakerError) as caught:
        await sink.start()
    message = str(caught.value)
    assert message.startswith("sinks.speaker: no audio output") and "sinks.speaker.optional = true" in message
    (no_card / "pcmC0D0p").touch()
    assert audio_device_problem(no_card, runtime_dir=str(tmp_path)) is None


async def test_publish_never_waits_for_speech(tmp_path: Path) -> None:
    """A hung engine does not hold the pipeline: publish returns at once; the hang ends at timeout_s, counted."""
    settings = SpeakerSinkSettings(enabled=True, command=["sleep", "30"], require_audio_device=False,
                                   timeout_s=0.5, close_timeout_s=3)
    sink = SpeakerSink(settings, counters=Counter())
    await sink.start()
    started = time.monotonic()
    for n in range(5):
        await sink.publish(event(n, severity="critical"))
    assert time.monotonic() - started < 0.5
    await sink.close()
    assert sink.counters["speech:failed"] >= 1
