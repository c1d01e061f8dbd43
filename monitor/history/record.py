"""The record of one assessed window: the one format of the history and of `service.audit_log`.

A record is one JSON object on one line (docs/history.md has the full spec). Version 1
keeps every key of the audit log that came before it (`at`, `zone`, `window`,
`observations`, `frames`, `verdict`, `raw`, `usage`, `alert`, `error`), with the same
meaning, and adds what a replay and a person reading it need: the camera frames'
details, the window bounds, the model and strategy settings, the prompts as the model
saw them (images replaced by their sha256, the system prompt by its sha256), every call
with its reply and cost, and the timings.

`build_record` runs on the recorder's writer thread: decoding and hashing the images
sent stays off the event loop. `parse_record` reads a line back for a replay.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from monitor.assess.prompt import time_label
from monitor.backends import Message, ModelReply, ModelRequest
from monitor.core.errors import JsonInputError, MalformedReplyError
from monitor.core.jsonio import MAX_LINE_BYTES, loads_bounded
from monitor.core.text import cut
from monitor.evidence import jpeg_of
from monitor.observer import Settled
from monitor.windows import Window
from sensors.types import Frame, LogEntry

RECORD_VERSION = 1
# A model's raw answer is kept up to this many characters (a marker says how much was cut): a record
# stays one readable line whatever a misbehaving server sends.
MAX_REPLY_CHARS = 16 * 1024
_MAX_LABEL_BYTES = 4096
# Stores one image sent to the model: (sha256, JPEG bytes).
ImageKeeper = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class CapturedCall:
    """One model call of a window as the backend saw it: the request, and its reply or error."""

    request: ModelRequest
    reply: ModelReply | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ZoneDescription:
    """The settings that produced a zone's verdicts: model, strategy, window bounds (no secrets)."""

    model: dict[str, Any]
    strategy: dict[str, Any]
    strategy_label: str
    windows: dict[str, Any]


# --------------------------------------------------------------------------- writing


def build_record(settled: Settled, calls: Sequence[CapturedCall], description: ZoneDescription, *, at: float,
                 keep_image: ImageKeeper | None = None) -> dict[str, Any]:
    """The record of one settled window; `keep_image(sha256, jpeg)` stores the images sent (record_frames)."""
    window, verdict, error, event = settled.window, settled.verdict, settled.error, settled.event
    images = _Images(keep_image)
    raw = verdict.raw if verdict else (error.raw if isinstance(error, MalformedReplyError) else None)
    prompts, call_records = _calls(calls, images, raw)
    return {
        "type": "window", "version": RECORD_VERSION, "at": round(at, 3),
        "zone": window.zone, "window": window.id, "created_at": round(window.created_at, 3),
        "sources": list(window.sources),
        "observations": [entry.to_json() for entry in window.entries],
        "frames": len(window.frames),
        "camera": _camera(window, images),
        "windows": description.windows, "model": description.model,
        "strategy": description.strategy, "strategy_label": description.strategy_label,
        "prompts": prompts, "calls": call_records,
        "verdict": verdict.assessment.model_dump() if verdict else None,
        "answered_by": verdict.model if verdict else None,
        # The configured backend (model.name) that answered, and what was lost when a fallback did.
        "backend": verdict.backend or None if verdict else None,
        "degraded": verdict.degraded if verdict else None,
        "decided_by": verdict.strategy if verdict else None,
        "raw": cut(raw, MAX_REPLY_CHARS) if raw is not None else None,
        "usage": verdict.usage.to_json() if verdict else None,
        "alert": event.to_json() if event else None,
        "error": {"kind": error.kind, "message": str(error)} if error else None,
        "timings": {"assessment_s": round(settled.latency_s, 4),
                    "model_s": round(sum(c.reply.usage.latency_s for c in calls if c.reply is not None), 4)},
    }


class _Images:
    """The images of a window's requests: each decoded once, hashed, and kept when asked."""

    def __init__(self, keep: ImageKeeper | None) -> None:
        self.keep = keep
        self.sent: dict[str, int] = {}  # sha256 -> bytes
        self.labels: list[tuple[str, str, str]] = []  # (source, time label, sha256) in the order sent

    def reference(self, url: str, label: dict[str, Any] | None) -> dict[str, Any]:
        jpeg = jpeg_of(url)
        if jpeg is None:
            return {"sha256": None, "bytes": len(url), "recorded": False}
        digest = hashlib.sha256(jpeg).hexdigest()
        if digest not in self.sent:
            self.sent[digest] = len(jpeg)
            if label is not None:
                self.labels.append((str(label.get("source", "")), str(label.get("time", "")), digest))
            if self.keep is not None:
                self.keep(digest, jpeg)
        return {"sha256": digest, "bytes": len(jpeg), "recorded": self.keep is not None}


def _calls(calls: Sequence[CapturedCall], images: _Images,
           raw: str | None) -> tuple[list[Any], list[dict[str, Any]]]:
    """The distinct prompts and a record per call; a reply that is the record's `raw` is not written twice."""
    prompts: list[Any] = []
    seen: dict[str, int] = {}
    records = []
    for call in calls:
        system, user = _split(call.request.messages)
        content = _redact(user.get("content", ""), images)
        key = json.dumps(content, sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen[key] = len(prompts)
            prompts.append(content)
        reply = call.reply
        is_raw = reply is not None and raw is not None and (reply.text is raw or reply.text == raw)
        record = {
            "tag": call.request.tag, "temperature": call.request.temperature, "seed": call.request.seed,
            "system_sha256": hashlib.sha256(str(system.get("content", "")).encode("utf-8")).hexdigest(),
            "prompt": seen[key], "reply": cut(reply.text, MAX_REPLY_CHARS) if reply and not is_raw else None,
            "model": reply.model if reply else None, "backend": reply.backend or None if reply else None,
            "usage": reply.usage.to_json() if reply else None,
            "error": call.error,
        }
        if is_raw:
            record["reply_is_raw"] = True
        records.append(record)
    return prompts, records


def _split(messages: Sequence[Message]) -> tuple[Message, Message]:
    system = next((m for m in messages if m.get("role") == "system"), {})
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    return system, user


def _redact(content: Any, images: _Images) -> Any:
    """The user message as the model saw it, each image replaced by its sha256 and size."""
    if not isinstance(content, list):
        return content
    parts: list[Any] = []
    label: dict[str, Any] | None = None
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            parts.append({"type": "image_url", "image_url": images.reference(url, label)})
            continue
        parts.append(part)
        label = _frame_label(part)
    return parts


def _frame_label(part: Any) -> dict[str, Any] | None:
    # build_messages puts {"time", "source", "frame": "image follows"} right before each image.
    if not isinstance(part, dict) or part.get("type") != "text":
        return None
    try:
        label = loads_bounded(str(part.get("text", "")), what="frame label", max_bytes=_MAX_LABEL_BYTES)
    except JsonInputError:
        return None
    return label if isinstance(label, dict) and "frame" in label else None


def _camera(window: Window, images: _Images) -> list[dict[str, Any]]:
    frames = window.frames
    sent = _match_sent(frames, images) if images.sent else {}
    return [{"source": f.source, "ts": f.ts, "width": f.width, "height": f.height, "change": round(f.change, 5),
             "facts": list(f.facts), "image": sent.get(index)} for index, f in enumerate(frames)]


def _match_sent(frames: Sequence[Frame], images: _Images) -> dict[int, str]:
    """Which frame each sent image is: the same JPEG, else (downscaled on the way) its source and time."""
    matched: dict[int, str] = {}
    by_hash = {hashlib.sha256(f.jpeg).hexdigest(): i for i, f in enumerate(frames)}
    for digest in images.sent:
        if digest in by_hash:
            matched[by_hash[digest]] = digest
    for source, label, digest in images.labels:
        if digest in matched.values():
            continue
        index = next((i for i, f in enumerate(frames)
                      if i not in matched and f.source == source and time_label(f.ts) == label), None)
        if index is not None:
            matched[index] = digest
    return matched


# --------------------------------------------------------------------------- reading


class EntryRecord(BaseModel):
    """A log entry of a record (`LogEntry.to_json()`)."""

    model_config = ConfigDict(extra="ignore")

    source: str
    ts: float
    text: str = ""
    clock: str | None = None
    location: str | None = None
    environment: str | None = None
    behaviour: str | None = None
    actor: str | None = None
    raw: str = ""

    def entry(self) -> LogEntry:
        return LogEntry(source=self.source, ts=self.ts, text=self.text, clock=self.clock, location=self.location,
                        environment=self.environment, behaviour=self.behaviour, actor=self.actor, raw=self.raw)

    @property
    def key(self) -> tuple[str, float, str]:
        return self.source, self.ts, self.text


class FrameRecord(BaseModel):
    """A camera frame of a record: its details, and the sha256 of the image sent (None if it was not)."""

    model_config = ConfigDict(extra="ignore")

    source: str
    ts: float
    width: int = 0
    height: int = 0
    change: float = 0.0
    facts: list[str] = Field(default_factory=list)
    image: str | None = None

    @property
    def key(self) -> tuple[str, float]:
        return self.source, self.ts


class WindowRecord(BaseModel):
    """A record as a replay reads it. Unknown keys are kept out; version 0 is the audit log of before."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["window"] = "window"
    version: int = Field(default=0, ge=0)
    at: float
    zone: str
    window: str
    created_at: float | None = None
    observations: list[EntryRecord] = Field(default_factory=list)
    frames: int = 0
    camera: list[FrameRecord] = Field(default_factory=list)
    windows: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    strategy: dict[str, Any] = Field(default_factory=dict)
    strategy_label: str = ""
    prompts: list[Any] = Field(default_factory=list)
    calls: list[dict[str, Any]] = Field(default_factory=list)
    verdict: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    alert: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def danger(self) -> bool:
        return bool(self.verdict and self.verdict.get("danger"))

    @property
    def warned(self) -> bool:
        """The window raised or confirmed an alert (a `new` or `update` event)."""
        return self.alert is not None and self.alert.get("type") in ("new", "update")

    @property
    def alert_id(self) -> str | None:
        return str(self.alert["id"]) if self.alert and self.alert.get("id") else None


class RecordError(ValueError):
    """A history line that is not a readable record; the message says why (the caller adds file and line)."""


def parse_record(line: str) -> WindowRecord:
    """One line of a history file as a record; RecordError saying what is wrong otherwise."""
    try:
        data = loads_bounded(line, what="history line", max_bytes=MAX_LINE_BYTES)
    except JsonInputError as exc:  # too large, too deep, not JSON: named and counted by the reader
        raise RecordError(exc.detail) from None
    if not isinstance(data, dict):
        raise RecordError(f"not a record (a JSON {type(data).__name__}, not an object)")
    if data.get("type", "window") != "window":
        raise RecordError(f"not a window record (type {data.get('type')!r})")
    if isinstance(data.get("version"), int) and data["version"] > RECORD_VERSION:
        raise RecordError(f"written by a newer monitor (record version {data['version']}, this one reads up to "
                          f"{RECORD_VERSION}): upgrade to replay it")
    try:
        return WindowRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise RecordError(f"invalid record: {place}: {first['msg']}") from None
