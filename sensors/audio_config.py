"""Microphone settings: the `[[microphones]]` section.

A section of its own rather than an option on a camera: a microphone often hangs
where no camera looks (a hallway, a bedroom), a camera's audio track fails and
comes back independently of its video (and is decoded by PyAV, not OpenCV), and
its health is reported apart. A camera's audio is a microphone of kind `url`
with the camera's stream URL and the camera's zone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, model_validator

from monitor.core.config import Identifier, Section
from sensors.camera_config import URL_SCHEMES, ReconnectSettings

MicrophoneKind = Literal["device", "url", "file"]


class HearingSettings(Section):
    """What a microphone listens for, and how loud a sudden sound must be to be reported."""

    alarms: bool = Field(default=True,
                         description="smoke (T3) and CO (T4) alarm patterns: a critical alert on their own")
    sounds: bool = Field(default=True, description="loud impacts and sustained high-pitched sounds, as observations")
    impact_db: float = Field(default=20.0, ge=6.0, le=60.0, description="an impact: this far above the background")
    high_pitch_db: float = Field(default=15.0, ge=6.0, le=60.0,
                                 description="a scream or a whistle: this far above the background")
    repeat_s: float = Field(default=10.0, ge=2.0, le=600.0,
                            description="a sounding alarm is reported again (and its alert confirmed) this often")


class MicrophoneSettings(Section):
    """One microphone (an ALSA device, a stream's audio track or a file). Shares its zone's window."""

    id: Identifier
    zone: Identifier | None = Field(default=None, description="default: the microphone id")
    kind: MicrophoneKind
    device: str | None = Field(default=None, description="device: the ALSA capture device, e.g. 'hw:1,0', "
                                                          "'plughw:CARD=USB,DEV=0', 'default'")
    url: str | None = Field(default=None, description="url: an rtsp:// (or http, rtmp) stream with an audio track")
    path: Path | None = Field(default=None, description="file: a WAV file, or a video with an audio track")
    options: dict[str, str] = Field(default_factory=dict,
                                    description="url/device: FFmpeg input options, e.g. {rtsp_transport = 'tcp'}")
    speed: float = Field(default=1.0, ge=0.0, le=1000.0, description="file: playback speed; 0 = as fast as possible")
    loop: bool = Field(default=False, description="file: start again at the end")
    hearing: HearingSettings = Field(default_factory=HearingSettings)
    reconnect: ReconnectSettings = Field(default_factory=ReconnectSettings)

    @model_validator(mode="after")
    def _target_matches_kind(self) -> MicrophoneSettings:
        needed = {"device": "device", "file": "path", "url": "url"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"microphone kind '{self.kind}' needs {needed}")
        for key in ("device", "path", "url"):
            if key != needed and getattr(self, key) is not None:
                raise ValueError(f"{key} is not used by microphone kind '{self.kind}' (it uses {needed})")
        if self.url is not None:
            parsed = urlparse(self.url)
            if parsed.scheme not in URL_SCHEMES or not parsed.netloc:
                raise ValueError(f"url must be {', '.join(s + '://' for s in URL_SCHEMES)} with a host, "
                                 f"got scheme '{parsed.scheme}'")
        if self.kind != "file" and (self.speed != 1.0 or self.loop):
            raise ValueError(f"speed and loop are only used by kind 'file', not '{self.kind}'")
        return self

    @property
    def zone_id(self) -> str:
        return self.zone or self.id

    @property
    def live(self) -> bool:
        return self.kind != "file" or self.speed > 0


def alsa_device_problem(device: str, asound: Path = Path("/proc/asound")) -> str | None:
    """Why ALSA capture device `device` cannot exist on this machine now, or None when it may.

    Only what can be told without opening it: no sound cards at all, or a card index or name the
    kernel does not list. Plugin names ('default', 'pulse', 'dsnoop') are not second-guessed.
    """
    cards_file = asound / "cards"
    try:
        cards = cards_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"no sound cards on this machine ({cards_file} cannot be read)"
    indices, names = set(), set()
    for line in cards.splitlines():
        head = line.strip().split(" ", 1)
        if head[0].isdigit():
            indices.add(head[0])
            if "[" in line and "]" in line:
                names.add(line[line.index("[") + 1:line.index("]")].strip())
    if not indices:
        return f"no sound cards on this machine ({cards_file} lists none)"
    card = _card_of(device)
    if card is None or card in indices or card in names:
        return None
    return f"no sound card '{card}' (cards: {', '.join(sorted(names | indices))})"


def _card_of(device: str) -> str | None:
    """The card a device name refers to: 'hw:1,0' -> '1', 'plughw:CARD=USB,DEV=0' -> 'USB'; None for plugins."""
    if ":" not in device:
        return None
    plugin, args = device.split(":", 1)
    if plugin not in ("hw", "plughw", "sysdefault", "front", "dsnoop"):
        return None
    first = args.split(",", 1)[0].strip()
    return first.removeprefix("CARD=") or None
