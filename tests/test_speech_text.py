"""What the speaker says, for the person in the room (issue 25 §3): the zone named, openers true to the
severity actually said ("I repeat" only for a real repeat), a rise in severity said at once, markup never
read out, and every kind of sentence short: each rendered by espeak-ng and measured in seconds."""

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
from monitor.sinks.settings import SpeakerSinkSettings
from monitor.sinks.speaker import SpeakerSink, clean_for_speech, speech_text
from tests.support.mosquitto import alert_event

# At the default rate (160 words a minute): what a person hears before they move on. The issue's own
# example is under 8 s in every kind; a summary, or a model that rambles (cut to its first sentence and
# a few words of hazard), under 9 s.
MAX_SECONDS = 8.0
MAX_SECONDS_LONGEST = 9.0
WAV_COMMAND = ["espeak-ng", "-v", "{voice}", "-s", "{rate}", "-w", "{wav}", "{text}"]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def hob(kind: EventType = "new", severity: Severity = "warning", *, zone_name: str | None = "Kitchen",
        **changes: Any) -> AlertEvent:
    """The issue's own example: an unattended hob."""
    base = alert_event("kitchen", 1, kind=kind, severity=severity)
    words = {"advice": "Go back to the kitchen and turn the hob off.", "hazard": "unattended hob"} | changes
    return replace(base, alert=replace(base.alert, zone_name=zone_name, **words))


# --------------------------------------------------------------------------- the words


def test_the_zone_is_named_by_its_display_name_else_its_id() -> None:
    assert speech_text(hob()) == "Kitchen: Warning! Go back to the kitchen and turn the hob off. Risk: unattended hob."
    unnamed = replace(hob(), alert=replace(hob().alert, zone="living_room", zone_name=None))
    assert speech_text(unnamed).startswith("Living room: Warning!")


def test_openers_follow_the_severity_said_and_only_a_real_repeat_is_a_repeat() -> None:
    escalated = hob("escalate", "critical", escalation_level=1)
    # "I repeat: Danger!" after "Warning!" was the bug: a higher severity than was said is no repeat.
    assert speech_text(escalated, said="warning").startswith("Kitchen: Danger now! Go back")
    assert speech_text(escalated, said="critical").startswith("Kitchen: I repeat: Danger! Go back")
    assert speech_text(escalated).startswith("Kitchen: Danger! Go back")  # never said before: no repeat
    assert speech_text(hob("update"), said="warning").startswith("Kitchen: I repeat: Warning!")
    assert speech_text(hob("update", "critical"), said="warning", language="de").startswith(
        "Kitchen: Jetzt Gefahr!")


def test_a_summary_says_how_many_more_warnings_are_open() -> None:
    others = tuple(alert_event("hall", n).alert for n in (2, 3))
    summary = replace(hob("escalate", "critical", escalation_level=2), summary=others)
    assert speech_text(summary, said="critical").endswith("Risk: unattended hob. And 2 more.")


@pytest.mark.parametrize(("raw", "spoken"), [
    ('<speak><prosody rate="x-slow">Turn off the burner</prosody></speak>', "Turn off the burner"),
    ("<b>Turn</b> off&nbsp;the <i>burner</i>&hellip;", "Turn off the burner"),
    ("**Turn off** the _burner_ now! [Call 112](tel:112)", "Turn off the burner now! Call 112"),
    ("## Step back\n- turn off the `burner`", "Step back turn off the burner"),
    (":fire: Leave the kitchen :warning:", "Leave the kitchen"),
    ("\U0001f525 Leave the kitchen \u26a0\ufe0f", "Leave the kitchen"),
    ("Say [[h@'l@U]] nothing <!-- hidden --> else", "Say nothing else"),
    ("Turn it off at 10:30: now", "Turn it off at 10:30: now"),
])
def test_markup_is_stripped_not_read_aloud(raw: str, spoken: str) -> None:
    """SSML, HTML (tags, entities, comments), markdown, emoji shortcodes and emoji, espeak-ng phonemes."""
    assert clean_for_speech(raw, 200) == spoken


def test_markup_stripping_stays_fast_on_pathological_text() -> None:
    """It runs on the event loop: 20,000 backticks took seconds with an unbounded backreference (an alert
    restored from the journal is not cut by the reply's schema). Generous bound: far above a loaded box's."""
    for text in ("`" * 20_000, "*a " * 7_000, "<a" * 10_000, "**x" * 7_000):
        started = time.perf_counter()
        clean_for_speech(text, 100)
        assert time.perf_counter() - started < 0.5, text[:10]


# --------------------------------------------------------------------------- the policy


def wav_sink(tmp_path: Path, **changes: Any) -> SpeakerSink:
    settings = SpeakerSinkSettings(**({"enabled": True, "command": WAV_COMMAND, "wav_dir": tmp_path / "speech"}
                                      | changes))
    return SpeakerSink(settings, counters=Counter())


def spoken(logs: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for e in logs if e["event"] == "warning said aloud"]


@needs_espeak
async def test_a_rise_in_severity_is_said_at_once_but_never_after_an_acknowledgement(tmp_path: Path) -> None:
    """Before, every update waited out the zone's min_interval_s (10 rate-limited, none said): a rise in
    severity is said at once; an update at the same severity still waits; an acknowledged alert stays silent."""
    sink = wav_sink(tmp_path, min_interval_s=600)
    with capture_logs() as logs:
        await sink.start()
        await sink.publish(hob())
        await wait_spoken(sink, 1)
        await sink.publish(hob("update", updates=1))  # the same warning again: a repeat, rate-limited
        await sink.publish(hob("update", "critical", updates=2))  # worse: said now
        await wait_spoken(sink, 2)
        await sink.publish(hob("update", "critical", updates=3))  # critical again: rate-limited
        other = replace(hob(zone_name="Hall"), alert=replace(hob().alert, id="alert00002", zone="hall",
                                                           zone_name="Hall", acknowledged_at=time.time()))
        await sink.publish(replace(other, type="update", alert=replace(other.alert, severity="critical")))
        await sink.close()
    assert spoken(logs) == [
        "Kitchen: Warning! Go back to the kitchen and turn the hob off. Risk: unattended hob.",
        "Kitchen: Danger now! Go back to the kitchen and turn the hob off. Risk: unattended hob."]
    assert sink.counters["speech:rate_limited"] == 2 and sink.counters["speech:acknowledged"] == 1


async def wait_spoken(sink: SpeakerSink, count: int) -> None:
    async with asyncio.timeout(30):
        while sink.counters["speech:spoken"] + sink.counters["speech:failed"] < count:
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- the length


def seconds(path: Path) -> float:
    with wave.open(str(path)) as audio:
        return audio.getnframes() / audio.getframerate()


@needs_espeak
async def test_every_kind_of_sentence_is_short_when_spoken(tmp_path: Path) -> None:
    """Each kind rendered by espeak-ng at the default rate: its text, and its length under MAX_SECONDS.
    A long-winded model is cut: its advice to the first sentence, the hazard to a few words."""
    rambling = hob(advice="Please go back to the kitchen right now and turn the hob off. Then check that the pan "
                          "is not smoking, open a window, and wait for it to cool before you touch it.",
                   hazard="an unattended hob with a pan of oil heating up that could catch fire at any moment")
    others = tuple(alert_event("hall", n).alert for n in (2, 3))
    kinds: list[tuple[str, AlertEvent, Severity | None, str]] = [
        ("new", hob(), None, "Kitchen: Warning! Go back to the kitchen and turn the hob off. Risk: unattended hob."),
        ("repeat", hob("update"), "warning", "Kitchen: I repeat: Warning! Go back"),
        ("update, worse", hob("update", "critical"), "warning", "Kitchen: Danger now! Go back"),
        ("escalation 1, raised", hob("escalate", "critical", escalation_level=1), "warning",
         "Kitchen: Danger now!"),
        ("escalation 2", hob("escalate", "critical", escalation_level=2), "critical", "Kitchen: I repeat: Danger!"),
        ("summary", replace(hob("escalate", "critical", escalation_level=2), summary=others), "critical",
         "Kitchen: I repeat: Danger!"),
        ("a rambling model", rambling, None, "Kitchen: Warning! Please go back to the kitchen right now and turn "
                                             "the hob off. Risk: an unattended hob with a pan of oil."),
    ]
    settings = SpeakerSinkSettings(enabled=True, command=WAV_COMMAND, wav_dir=tmp_path)
    measured = {}
    for name, event, said, start in kinds:
        text = speech_text(event, settings.language, said=said)
        assert text.startswith(start), (name, text)
        wav = tmp_path / f"{len(measured)}.wav"
        argv = [part.format(voice=settings.language, rate=settings.rate_wpm, wav=wav, text=text)
                for part in WAV_COMMAND]
        process = await asyncio.create_subprocess_exec(*argv)
        assert await process.wait() == 0
        measured[name] = seconds(wav)
    longest = ("summary", "a rambling model")
    assert all(1.0 < length < MAX_SECONDS for name, length in measured.items() if name not in longest), measured
    assert all(1.0 < measured[name] < MAX_SECONDS_LONGEST for name in longest), measured
    print({name: round(length, 2) for name, length in measured.items()})
