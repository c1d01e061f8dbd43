"""The speaker sink: says a warning aloud on the machine the monitor runs on.

What is said is built from the zone's name and the alert's `advice` and `hazard`
only, never from the observations (they may hold hostile text): "Kitchen: Danger!
Go back and turn off the stove. Risk: unattended hot stove." The opener says how
it relates to what was said before about the alert ("I repeat: Danger!" only
after "Danger!"; "Danger now!" after "Warning!"). Markup is taken out whole
(SSML, HTML, markdown, emoji, espeak-ng's `[[phonemes]]`) and the text bounded.

The engine is a command template, an argv list (never a shell string), by
default espeak-ng: `["espeak-ng", "-v", "{voice}", "-s", "{rate}", "{text}"]`.
Replace it to use another engine or a networked speaker; without `{text}` the
text goes to the command's standard input. With `{wav}` each message is
rendered to a new WAV file in `wav_dir` instead of a sound card.

`publish` never waits for speech: messages go into a bounded queue that one
task empties, most severe first (critical before anything queued), oldest
first within a severity. A newer message about an alert already queued
replaces the queued one in its place. When the queue is full the least urgent,
oldest message is dropped (`drop_least_urgent`). Repeats (`update` events) are
said at most once per `min_interval_s` per zone; new alerts, escalations and an
update whose severity is above what was last said about the alert always. Quiet
(`info` in quiet hours) and acknowledged alerts are not said, and an
acknowledgement takes the alert's queued message out. Everything not said is
counted in the service's `reach` counters (`speech:<outcome>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import os
import re
import shutil
import signal
import time
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from monitor.alerts import Alert, AlertEvent
from monitor.assess.verdict import SEVERITY_RANK, Severity
from monitor.core.errors import MonitorError
from monitor.core.files import creation_problem
from monitor.core.text import shorten
from monitor.sinks.settings import SpeakerSinkSettings

log = structlog.get_logger("monitor.sinks.speaker")

_SETTING = "sinks.speaker.command"
_STDERR_TAIL = 300
_REMEMBERED_ACKS = 1024
# Letters, digits and plain punctuation; everything else (brackets, tags, quotes, slashes) becomes a space.
_UNSPEAKABLE = re.compile(r"[^\w\s.,!?'’:;%°-]")
# Markup a model may write, removed whole before anything else so that none of it is read out: espeak-ng's
# [[phonemes]], SSML and HTML tags and comments, markdown (links keep their text; emphasis, code and line
# marks go), emoji shortcodes (`:fire:`; not a time like 10:30:).
_PHONEMES = re.compile(r"\[\[.*?(?:\]\]|$)", re.S)
_TAG = re.compile(r"<!--.*?(?:-->|$)|</?[A-Za-z!?][^<>]*>", re.S)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_LINE = re.compile(r"^[ \t]*(?:#{1,6}|[-*+>]|\d{1,3}[.)])[ \t]+", re.M)
_MD_MARK = re.compile(r"(?<!\w)(\*{1,3}|_{1,3}|~~|`{1,3})(?=\S)([^\n]{1,200}?)(?<=\S)\1(?!\w)")
_SHORTCODE = re.compile(r"(?<![\w:]):[a-z0-9_+-]+:(?![\w:])", re.I)
_KEEP_SYMBOLS = frozenset("°")
# Only the start of a text is ever said; scanning no more than this keeps the patterns above fast on the
# event loop whatever a model (or a journal) holds.
_MARKUP_SCAN_CHARS = 600
_ZONE_CHARS, _ADVICE_CHARS, _HAZARD_CHARS = 40, 100, 40
# The framing words, by language; the advice and hazard are said as the model wrote them.
PHRASES: dict[str, dict[str, str]] = {
    "en": {"info": "Careful", "warning": "Warning", "critical": "Danger", "again": "I repeat: {opener}",
           "worse": "{opener} now", "risk": "Risk", "more": "And {n} more."},
    "de": {"info": "Vorsicht", "warning": "Warnung", "critical": "Gefahr", "again": "Noch einmal: {opener}",
           "worse": "Jetzt {opener}", "risk": "Risiko", "more": "Und {n} weitere."},
    "fr": {"info": "Attention", "warning": "Avertissement", "critical": "Danger", "again": "Je répète : {opener}",
           "worse": "{opener} maintenant", "risk": "Risque", "more": "Et {n} autres."},
    "es": {"info": "Cuidado", "warning": "Aviso", "critical": "Peligro", "again": "Repito: {opener}",
           "worse": "Ahora {opener}", "risk": "Riesgo", "more": "Y {n} más."},
    "nl": {"info": "Let op", "warning": "Waarschuwing", "critical": "Gevaar", "again": "Nogmaals: {opener}",
           "worse": "Nu {opener}", "risk": "Risico", "more": "En nog {n}."},
}


class SpeakerError(MonitorError):
    """The speaker cannot work: no engine or no audio device; names the setting."""


def clean_for_speech(text: str, limit: int) -> str:
    """`text` without markup or control characters, one line, at most `limit` characters, cut at a word."""
    text = strip_markup(text)
    text = "".join(c if c.isprintable() else " " for c in text)
    text = _UNSPEAKABLE.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip(" -.,;:")
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" -.,;:")
    return text


def strip_markup(text: str) -> str:
    """`text` with markup taken out whole (tags with their attributes, not just their brackets): what an
    engine would otherwise read aloud ("speak prosody rate x-slow Turn off the burner prosody speak")."""
    text = _TAG.sub(" ", _PHONEMES.sub(" ", html.unescape(text[:_MARKUP_SCAN_CHARS])))
    text = _MD_LINE.sub("", _MD_LINK.sub(r"\1", text))
    for _ in range(3):  # nested emphasis (***, **`code`**) comes off one layer at a time
        text = _MD_MARK.sub(r"\2", text)
    text = _SHORTCODE.sub(" ", text)
    return "".join(c for c in text if c in _KEEP_SYMBOLS or not _is_emoji(c))


def _is_emoji(char: str) -> bool:
    # Pictographs and symbols (So), and the joiners and variation selectors that build emoji sequences.
    return unicodedata.category(char) == "So" or char in "\u200d\ufe0e\ufe0f"


def speech_text(event: AlertEvent, language: str = "en", *, said: Severity | None = None) -> str:
    """Short sentences: the zone, the severity, what to do (the advice's first sentence), and the danger.

    `said` is the severity last said aloud about this alert (None: never): the same again is said as a
    repeat ("I repeat: Warning!"), a higher one as a change ("Danger now!"), never the other
    way round. Built from the zone's name, `advice` and `hazard` only (never the observations).
    """
    words = PHRASES.get(language.split("-")[0].split("_")[0].lower(), PHRASES["en"])
    alert = event.alert
    opener = words[alert.severity]
    if said is not None:
        worse = SEVERITY_RANK[alert.severity] > SEVERITY_RANK[said]
        opener = words["worse" if worse else "again"].format(opener=opener)
    where = _zone_words(alert.zone_name, alert.zone)
    parts = [f"{where}: {opener}!" if where else f"{opener}!"]
    advice, hazard = _first_sentence(clean_for_speech(alert.advice, 400), _ADVICE_CHARS), \
        clean_for_speech(alert.hazard, _HAZARD_CHARS)
    if advice:
        parts.append(advice if advice[-1] in ".!?" else advice + ".")
    if hazard:
        parts.append(f"{words['risk']}: {hazard}.")
    others = len({named.id for named in event.summary} - {alert.id})
    if others:
        parts.append(words["more"].format(n=others))
    return " ".join(parts)


def _zone_words(name: str | None, zone_id: str) -> str:
    """The zone as people call it: its display name, else its id read as words (`living_room`: Living room)."""
    if name:
        return clean_for_speech(name, _ZONE_CHARS)
    words = clean_for_speech(zone_id.replace("_", " ").replace("-", " "), _ZONE_CHARS)
    return words[:1].upper() + words[1:]


def _first_sentence(text: str, limit: int) -> str:
    """The first sentence when it says something (three words or more), else the text; at most `limit`."""
    first = re.match(r"(.+?[.!?])(?=\s+[A-ZÀ-ÖØ-Þ]|\s*$)", text)  # "i.e. the stove" does not end one
    if first is not None and len(first.group(1).split()) >= 3:
        text = first.group(1)
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" -.,;:")
    return text


def audio_device_problem(snd_dir: Path = Path("/dev/snd"), runtime_dir: str | None = None) -> str | None:
    """Why nothing could be heard here (no sound card playback device, no sound server), or None."""
    if os.environ.get("PULSE_SERVER"):
        return None
    runtime = runtime_dir if runtime_dir is not None else os.environ.get("XDG_RUNTIME_DIR")
    servers = [Path(runtime) / "pulse" / "native", Path(runtime) / "pipewire-0"] if runtime else []
    if any(server.exists() for server in servers):
        return None
    if snd_dir.is_dir() and any(snd_dir.glob("pcmC*D*p")):
        return None
    return f"no audio output: no playback device in {snd_dir} and no PulseAudio or PipeWire socket"


def speaker_problem(settings: SpeakerSinkSettings,
                    audio_probe: Callable[[], str | None] = audio_device_problem) -> str | None:
    """Why the speaker cannot say anything here (no engine, no audio device, a WAV folder that cannot be
    made), or None; creates nothing. `start` and `check-config` both ask it."""
    program = settings.command[0]
    if shutil.which(program) is None:
        return (f"{_SETTING}: {program!r} not found or not executable: install it (Debian: apt-get install "
                "espeak-ng) or change the command")
    if settings.writes_files:
        wav_dir = settings.wav_dir
        assert wav_dir is not None  # validated by SpeakerSinkSettings
        error = None if os.path.isdir(wav_dir) else creation_problem(wav_dir, kind="folder")
        return _wav_dir_problem(wav_dir, error) if error is not None else None
    if settings.require_audio_device and (reason := audio_probe()) is not None:
        return (f"sinks.speaker: {reason}: connect a speaker and let the service use it (SupplementaryGroups="
                "audio), render to files ({wav} and sinks.speaker.wav_dir), or set "
                "sinks.speaker.require_audio_device = false for a networked speaker")
    return None


def speaker_refusal(problem: str) -> str:
    """The line a start stops with when a speaker that is not optional cannot speak."""
    return f"{problem}; or set sinks.speaker.optional = true to run without speech"


def _wav_dir_problem(wav_dir: Path, error: OSError) -> str:
    return f"sinks.speaker.wav_dir: cannot create {wav_dir}: {error.strerror or error}"


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid` (started with `start_new_session`): the engine and its children."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every member has exited already
    except PermissionError as exc:  # a child that changed its user: nothing more can be done from here
        log.warning("speaker could not kill the engine's process group", pid=pid, error=str(exc))


# --------------------------------------------------------------------------- the queue


@dataclass
class Utterance:
    """One message to say, about one alert."""

    alert_id: str
    zone: str
    severity: Severity
    event_type: str
    text: str
    seq: int
    # The event, to say it in the words that fit what was said before it when its turn comes.
    event: AlertEvent | None = None


class SpeechQueue:
    """Bounded; most severe first, then oldest; one message per alert (a newer one replaces it in place)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: dict[str, Utterance] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, alert_id: object) -> bool:
        return alert_id in self._items

    def put(self, utterance: Utterance) -> tuple[str, Utterance | None]:
        """Queue it; returns (`queued`|`replaced`|`dropped_full`, the message that was dropped)."""
        queued = self._items.get(utterance.alert_id)
        if queued is not None:
            utterance.seq = queued.seq  # keeps its turn
            self._items[utterance.alert_id] = utterance
            return "replaced", queued
        dropped = None
        if len(self._items) >= self.size:
            dropped = min([*self._items.values(), utterance], key=lambda u: (SEVERITY_RANK[u.severity], u.seq))
            if dropped is utterance:
                return "dropped_full", utterance
            del self._items[dropped.alert_id]
        self._items[utterance.alert_id] = utterance
        self._ready.set()
        return ("dropped_full" if dropped else "queued"), dropped

    def discard(self, alert_id: str) -> Utterance | None:
        return self._items.pop(alert_id, None)

    def pop(self) -> Utterance | None:
        """The most urgent message, or None when empty."""
        if not self._items:
            self._ready.clear()
            return None
        best = max(self._items.values(), key=lambda u: (SEVERITY_RANK[u.severity], -u.seq))
        del self._items[best.alert_id]
        return best

    async def get(self) -> Utterance:
        while (utterance := self.pop()) is None:
            await self._ready.wait()
        return utterance


# --------------------------------------------------------------------------- the sink


class SpeakerSink:
    """Says warnings aloud through a text-to-speech command, from its own task."""

    name = "speaker"
    connected = None  # a loudspeaker has no connection to report

    def __init__(self, settings: SpeakerSinkSettings, *, counters: Counter[str] | None = None,
                 audio_probe: Callable[[], str | None] = audio_device_problem,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.queue = SpeechQueue(settings.queue_size)
        self.unavailable: str | None = None
        self._audio_probe = audio_probe
        self._clock = clock
        self._seq = itertools.count()
        self._last_said: dict[str, float] = {}
        self._acknowledged: OrderedDict[str, None] = OrderedDict()
        self._said: OrderedDict[str, Severity] = OrderedDict()  # per alert: the severity last said aloud
        self._task: asyncio.Task[None] | None = None
        self._speaking = False
        self._idle = asyncio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return f"SpeakerSink(command={self.settings.command[0]!r})"

    @property
    def backlog(self) -> int:
        return len(self.queue)

    # -- AlertSink --------------------------------------------------------------------
    async def start(self) -> None:
        """Check the engine and the audio device; a problem stops the start unless the sink is optional."""
        problem = speaker_problem(self.settings, self._audio_probe) or self._make_wav_dir()
        if problem is not None:
            if not self.settings.optional:
                raise SpeakerError(speaker_refusal(problem))
            self.unavailable = problem
            log.error("speaker unavailable; warnings will not be said aloud", problem=problem, optional=True)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="speaker")

    def _make_wav_dir(self) -> str | None:
        wav_dir = self.settings.wav_dir
        if not self.settings.writes_files or wav_dir is None:
            return None
        try:
            wav_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _wav_dir_problem(wav_dir, exc)
        return None

    async def publish(self, event: AlertEvent) -> None:
        """Queue what the event should say (or count why not); returns at once."""
        alert = event.alert
        if event.type in ("ack", "end"):
            self._forget(alert.id, acknowledged=event.type == "ack")
            return
        outcome = self._skip_reason(event)
        if outcome is None:
            utterance = Utterance(alert.id, alert.zone, alert.severity, event.type,
                                  speech_text(event, self.settings.language, said=self._said.get(alert.id)),
                                  next(self._seq), event)
            outcome, _dropped = self.queue.put(utterance)
            self._last_said[alert.zone] = self._clock()
            self._idle.clear()
        self.counters[f"speech:{outcome}"] += 1

    def _skip_reason(self, event: AlertEvent) -> str | None:
        alert = event.alert
        if alert.acknowledged_at is not None or alert.id in self._acknowledged:
            return "acknowledged"
        if alert.quiet:
            return "quiet"
        if self.unavailable is not None:
            return "unavailable"
        last = self._last_said.get(alert.zone)
        repeat = event.type == "update" and alert.id not in self.queue and not self._worse(alert)
        if repeat and last is not None and self._clock() - last < self.settings.min_interval_s:
            return "rate_limited"
        return None

    def _worse(self, alert: Alert) -> bool:
        """A change the person has not heard: a severity above the one last said (or never said at all).

        Such an update is said at once, past the zone's `min_interval_s` (at most twice per alert: severities
        only rise, info to warning to critical); an acknowledgement still silences it.
        """
        said = self._said.get(alert.id)
        return said is None or SEVERITY_RANK[alert.severity] > SEVERITY_RANK[said]

    def _forget(self, alert_id: str, *, acknowledged: bool) -> None:
        if self.queue.discard(alert_id) is not None:
            self.counters["speech:cancelled_" + ("ack" if acknowledged else "end")] += 1
            self._check_idle()
        self._said.pop(alert_id, None)
        if acknowledged:
            self._acknowledged[alert_id] = None
            while len(self._acknowledged) > _REMEMBERED_ACKS:
                self._acknowledged.popitem(last=False)

    async def close(self) -> None:
        """Say what is queued (at most `close_timeout_s`), then stop."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(self.settings.close_timeout_s):
                await self._idle.wait()
        except TimeoutError:
            left = len(self.queue)
            self.counters["speech:dropped_shutdown"] += left
            log.warning("speaker stopped with messages unsaid", left=left,
                        reason=f"not said within sinks.speaker.close_timeout_s={self.settings.close_timeout_s:g}")
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    # -- speaking -------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            utterance = self._taken(await self.queue.get())
            self._speaking = True
            try:
                await self.say(utterance)
            except Exception:  # a bug in one message must not silence every later warning
                self.counters["speech:failed"] += 1
                log.exception("speaker failed unexpectedly", zone=utterance.zone, alert=utterance.alert_id)
            finally:
                self._speaking = False
                self._check_idle()

    def _taken(self, utterance: Utterance) -> Utterance:
        """Worded now, against what was said before it (a message may have waited), and remembered as said."""
        if utterance.event is not None:
            utterance.text = speech_text(utterance.event, self.settings.language,
                                         said=self._said.get(utterance.alert_id))
        self._said[utterance.alert_id] = utterance.severity
        self._said.move_to_end(utterance.alert_id)
        while len(self._said) > _REMEMBERED_ACKS:
            self._said.popitem(last=False)
        return utterance

    def _check_idle(self) -> None:
        if not self._speaking and not len(self.queue):
            self._idle.set()

    async def say(self, utterance: Utterance) -> bool:
        """Run the command for one message; a failure is logged and counted, never raised."""
        argv, wav = self._argv(utterance)
        stdin = None if any("{text}" in part for part in self.settings.command) else utterance.text.encode()
        failure = await self._run_command(argv, stdin)
        if failure is None and wav is not None and (not wav.exists() or wav.stat().st_size <= 44):
            failure = f"exited 0 but wrote no audio to {wav}"
        if failure is not None:
            self.counters["speech:failed"] += 1
            log.error("speaker command failed", setting=_SETTING, command=argv[0], zone=utterance.zone,
                      alert=utterance.alert_id, reason=failure)
            return False
        self.counters["speech:spoken"] += 1
        log.info("warning said aloud", zone=utterance.zone, alert=utterance.alert_id, severity=utterance.severity,
                 alert_event=utterance.event_type, wav=str(wav) if wav else None, chars=len(utterance.text),
                 text=utterance.text)
        return True

    def _argv(self, utterance: Utterance) -> tuple[list[str], Path | None]:
        settings = self.settings
        wav = None
        if settings.wav_dir is not None and settings.writes_files:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            wav = settings.wav_dir / f"{stamp}-{next(self._seq):05d}-{utterance.zone}-{utterance.alert_id}.wav"
        values = {"text": utterance.text, "voice": settings.voice or settings.language,
                  "language": settings.language, "rate": str(settings.rate_wpm), "wav": str(wav or "")}
        return [part.format_map(values) for part in settings.command], wav

    async def _run_command(self, argv: list[str], stdin: bytes | None) -> str | None:
        try:
            # Its own process group: an engine is often a wrapper (a shell script, a player it starts), and
            # a hung one is killed with everything it started, not just the process we know of.
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return f"could not start {argv[0]!r}: {exc.strerror or exc}"
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                await _feed(process, stdin)
                _out, err = await process.communicate()
        except TimeoutError:
            kill_group(process.pid)
            await process.wait()
            return f"did not finish within sinks.speaker.timeout_s={self.settings.timeout_s:g}"
        except asyncio.CancelledError:  # the service is stopping: nothing it started may outlive it
            kill_group(process.pid)
            raise
        if process.returncode != 0:
            tail = shorten(err.decode("utf-8", "replace").strip(), _STDERR_TAIL)
            return f"exit status {process.returncode}: {tail or '(no error output)'}"
        return None


async def _feed(process: asyncio.subprocess.Process, text: bytes | None) -> None:
    """Write the text to the engine's standard input and close it; an engine that exited without reading
    it is not an error here (its exit status and error output say what happened)."""
    if text is None or process.stdin is None:
        return
    try:
        process.stdin.write(text)
        await process.stdin.drain()
    except (BrokenPipeError, ConnectionResetError, RuntimeError):  # uvloop: RuntimeError for a closed pipe
        pass
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
        process.stdin.close()
