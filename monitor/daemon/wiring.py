"""Wiring: what the configuration asks for, as comparable specs, and the parts built from them.

A spec is the part of the configuration one source or one sink depends on. The
daemon builds each part from its spec, and on reload rebuilds exactly the parts
whose spec changed: two specs compare equal when their settings do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from monitor.alerts import Alert
from monitor.assess.context import NotesProvider, with_feedback_context
from monitor.assess.single import Assessor
from monitor.assess.strategies import build_zone_assessor
from monitor.backends import ModelBackend
from monitor.control import ZoneControls
from monitor.escalation.engine import AckRequest
from monitor.history.desk import FeedbackHandler
from monitor.mqtt.settings import MqttSettings
from monitor.settings import Settings
from monitor.sinks import AlertSink
from monitor.sinks.ha_discovery import ZoneLabel
from monitor.sinks.local import JsonlSink, StdoutSink
from monitor.sinks.settings import JsonlSinkSettings, NotifySinkSettings, SpeakerSinkSettings, StdoutSinkSettings
from monitor.zones import ZoneStatus
from sensors.audio_config import MicrophoneSettings
from sensors.camera_config import CameraSettings
from sensors.logs.settings import SourceSettings
from sensors.types import ObservationSource

SinkName = Literal["stdout", "jsonl", "speaker", "notify", "mqtt"]


@dataclass(frozen=True)
class SourceSpec:
    """One sensor: an activity-log source, a camera or a microphone, the zone it feeds, and the broker of an
    MQTT source."""

    id: str
    zone: str
    settings: SourceSettings | CameraSettings | MicrophoneSettings
    broker: MqttSettings | None = None
    state_dir: Path | None = None  # a followed file keeps its read position there

    def build(self) -> ObservationSource:
        """The sensor this spec describes (OpenCV, PyAV and aiomqtt are imported only when needed)."""
        settings = self.settings
        if isinstance(settings, MicrophoneSettings):
            from sensors.audio import MicrophoneSource

            return MicrophoneSource(settings)
        if isinstance(settings, CameraSettings):
            from sensors.camera import CameraSource

            return CameraSource(settings)
        return _log_source(settings, self.broker, self.state_dir)


def _log_source(settings: SourceSettings, broker: MqttSettings | None, state_dir: Path | None) -> ObservationSource:
    from sensors.logs.sources import FileTailSource, ReplayFileSource, StdinSource

    cap = settings.max_entry_chars
    if settings.kind == "stdin":
        return StdinSource(settings.id, settings.format, max_entry_chars=cap)
    if settings.kind == "mqtt":
        from sensors.mqtt_source import MqttActivitySource

        assert broker is not None and settings.topic is not None  # validated by Settings and SourceSettings
        return MqttActivitySource(settings.id, broker, topic=settings.topic, max_entry_chars=cap,
                                  max_payload_bytes=settings.max_payload_bytes)
    assert settings.path is not None  # validated by SourceSettings
    if settings.kind == "replay":
        return ReplayFileSource(settings.id, settings.path, settings.format,
                                interval_s=settings.interval_s, speed=settings.speed, max_entry_chars=cap)
    return FileTailSource(settings.id, settings.path, settings.format, from_start=settings.from_start,
                          poll_interval_s=settings.poll_interval_s, max_entry_chars=cap, state_dir=state_dir,
                          resume=settings.resume, resume_max_bytes=settings.resume_max_bytes)


@dataclass(frozen=True)
class SinkSpec:
    """One sink: its settings, and for MQTT the zones it announces (with their names and areas) and the state
    dir of its outbox."""

    name: SinkName
    settings: StdoutSinkSettings | JsonlSinkSettings | SpeakerSinkSettings | NotifySinkSettings | MqttSettings
    zones: tuple[ZoneLabel, ...] = ()
    state_dir: Path | None = None
    notice: str | None = None


# Said once, above the first warning, when the verdicts come from the bundled plumbing model.
EMBEDDED_NOTICE = (
    "Note: these verdicts come from SmolLM2-135M, a tiny local model that only exercises the plumbing; it "
    "cannot judge danger. For real judgements point the monitor at a capable model: README, "
    '"Point it at a real model".'
)


def source_specs(settings: Settings) -> dict[str, SourceSpec]:
    """Every source (activity logs, then cameras, then microphones) by id."""
    specs = {s.id: SourceSpec(s.id, s.zone_id, s, settings.mqtt if s.kind == "mqtt" else None,
                              settings.service.state_dir if s.kind == "file" else None)
             for s in settings.sources}
    specs.update({c.id: SourceSpec(c.id, c.zone_id, c) for c in settings.cameras})
    specs.update({m.id: SourceSpec(m.id, m.zone_id, m) for m in settings.microphones})
    return specs


def zones_of(settings: Settings) -> list[str]:
    """The zones that have sources, in order, once each."""
    return list(dict.fromkeys(spec.zone for spec in source_specs(settings).values()))


def zone_names(settings: Settings) -> dict[str, str]:
    """Each zone's display name (`[[zones]] name`), for what a person reads or hears."""
    return {zone.id: zone.name for zone in settings.zones if zone.name}


def zone_labels(settings: Settings) -> list[ZoneLabel]:
    """The zones that have sources, with the display name and area their `[[zones]]` entry gives, and
    whether a microphone hears them (Home Assistant's smoke and CO sensors)."""
    declared = {zone.id: zone for zone in settings.zones}
    cameras = {camera.zone_id for camera in settings.cameras}
    hearing = {mic.zone_id for mic in settings.microphones if mic.hearing.alarms}
    out = []
    for zone in zones_of(settings):
        entry = declared.get(zone)
        evidence = settings.evidence.enabled and zone in cameras and (entry is None or entry.evidence)
        out.append(ZoneLabel(zone, entry.name if entry else None, entry.area if entry else None, evidence,
                             hears_alarms=zone in hearing))
    return out


def sink_specs(settings: Settings) -> dict[SinkName, SinkSpec]:
    """One spec per enabled sink, in publishing order (MQTT last: it closes last)."""
    specs: dict[SinkName, SinkSpec] = {}
    if settings.sinks.stdout.enabled:
        notice = EMBEDDED_NOTICE if settings.model.backend == "embedded" else None
        specs["stdout"] = SinkSpec("stdout", settings.sinks.stdout, notice=notice)
    if settings.sinks.jsonl.enabled:
        specs["jsonl"] = SinkSpec("jsonl", settings.sinks.jsonl)
    if settings.sinks.speaker.enabled:
        specs["speaker"] = SinkSpec("speaker", settings.sinks.speaker)
    if settings.sinks.notify.enabled:
        specs["notify"] = SinkSpec("notify", settings.sinks.notify, state_dir=settings.service.state_dir)
    if settings.mqtt is not None:
        specs["mqtt"] = SinkSpec("mqtt", settings.mqtt, tuple(zone_labels(settings)), settings.service.state_dir)
    return specs


def build_sink(spec: SinkSpec, *, controls: ZoneControls, stats: Callable[[], Mapping[str, Any]],
               open_alerts: Sequence[Alert], status: ZoneStatus | None = None,
               configuration_url: str | None = None, feedback: FeedbackHandler | None = None,
               reach_counters: Counter[str] | None = None,
               acknowledge: Callable[[AckRequest], None] | None = None,
               evidence: Callable[[str, str], bytes | None] | None = None) -> AlertSink:
    """The sink a spec describes. An MQTT sink follows the service's zone tracker and starts with the
    alerts already open, so its zone state is not reported clear after a reload; with `feedback`, it
    takes feedback messages; `acknowledge` takes acknowledgements from the MQTT ack topics.
    `reach_counters` count speech and notifications; `evidence` reads a kept frame (alert id, frame id)."""
    settings = spec.settings
    if isinstance(settings, StdoutSinkSettings):
        return StdoutSink(color=settings.color, notice=spec.notice)
    if isinstance(settings, JsonlSinkSettings):
        return JsonlSink(settings.path)
    if isinstance(settings, SpeakerSinkSettings):
        from monitor.sinks.speaker import SpeakerSink

        return SpeakerSink(settings, counters=reach_counters)
    if isinstance(settings, NotifySinkSettings):
        return _notify_sink(spec, settings, reach_counters, evidence)
    from monitor.sinks.mqtt import MqttSink

    assert spec.state_dir is not None
    sink = MqttSink(settings, zones=spec.zones, state_dir=spec.state_dir, controls=controls, stats=stats,
                    status=status, configuration_url=configuration_url, acknowledge=acknowledge)
    sink.restore_open_alerts(open_alerts)
    sink.feedback = feedback
    return sink


def _notify_sink(spec: SinkSpec, settings: NotifySinkSettings, counters: Counter[str] | None,
                 evidence: Callable[[str, str], bytes | None] | None) -> AlertSink:
    from monitor.core.files import secrets_dir
    from monitor.sinks.notify import NotifySink

    assert spec.state_dir is not None
    return NotifySink(settings, state_dir=spec.state_dir, counters=counters, secrets_dir=secrets_dir(),
                      evidence=evidence)


def build_assessor(settings: Settings, backend: ModelBackend, *, notes: NotesProvider | None = None,
                   failures: Counter[str] | None = None) -> Assessor:
    """The configured assessment strategy, per zone, with the keyframe choice for camera windows, and the
    home's feedback notes for the zones that ask for them (notes that fail are counted in `failures`)."""
    assessor = build_zone_assessor(backend, settings.assessment, settings.zones, settings.keyframes)
    return with_feedback_context(assessor, notes, settings.assessment, settings.zones, failures=failures)
