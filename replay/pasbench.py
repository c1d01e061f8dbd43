"""The PaSBench release as scenarios: loader for the Hugging Face layout, and the safe controls.

Layout (see docs/replay.md): ``text_eval_hugging.json`` and ``multi_modal_eval_hugging.json``
(JSON arrays of records with five string fields), ``severity.json`` (joined on
``safety_knowledge``) and the composites in ``combine_images/`` or ``combine_images.zip``.

Ids: ``text-<index>`` (0-based index in the text file) and ``image-<png name without
.png>``; safe controls are ``safe-<file stem>`` (a folder of logs) or ``safe-<index>`` (a
release-format JSON file). Those are positions, so every scenario also carries a
``content_id``: a short sha256 of the record itself, which is what a run log's
fingerprint compares (``text-1`` of one folder is another record in another). The
reference fields of a record (knowledge, behaviour, reason) are for the judge only and
never reach a prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from monitor.core.errors import JsonInputError
from monitor.core.jsonio import check_depth
from replay.errors import ReleaseError

Modality = Literal["text", "image"]
ModalityChoice = Literal["text", "image", "all"]
SEVERITIES = ("critical", "warning", "info")
UNKNOWN_SEVERITY = "unknown"

TEXT_FILE = "text_eval_hugging.json"
IMAGE_FILE = "multi_modal_eval_hugging.json"
SEVERITY_FILE = "severity.json"
IMAGE_DIR = "combine_images"
IMAGE_ZIP = "combine_images.zip"
MISSING_PNG = f"composite PNG not found (neither in {IMAGE_DIR}/ nor {IMAGE_ZIP})"
RECORD_FIELDS = ("safety_knowledge", "condition_or_scenario", "risk_reason", "risk_triggering_behavior", "input")
CONTENT_ID_LENGTH = 12
# A whole log ends with this marker; without it the record was cut off (its risk may never appear).
_LOG_END = re.compile(r"[\[【]\s*LOG\s*END\s*[\]】]", re.IGNORECASE)
TRUNCATED = "no [LOG END]: the log is cut off, and its risky behaviour may never appear"


def content_id(content: str | dict[str, Any], *, length: int = CONTENT_ID_LENGTH) -> str:
    """A short sha256 of a record (canonical JSON) or of a log's text: the record's own id."""
    text = content if isinstance(content, str) else json.dumps(content, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def is_truncated(text: str) -> bool:
    """True when a text log has no [LOG END] marker: it was cut off."""
    return _LOG_END.search(text) is None


@dataclass(frozen=True, slots=True)
class Reference:
    """What the judge compares a warning with. Never part of a prompt."""

    knowledge: str
    behaviour: str
    reason: str
    scenario: str = ""


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where a composite PNG lives: a file in ``combine_images/`` or a member of the zip."""

    name: str
    path: Path | None = None
    zip_path: Path | None = None
    member: str | None = None

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else f"{self.zip_path}:{self.member}"

    def read_bytes(self, *, limit: int | None = None) -> bytes:
        """The PNG's bytes (blocking: call it off the event loop); a file over `limit` bytes is refused unread."""
        try:
            if self.path is not None:
                size = self.path.stat().st_size
                if limit is None or size <= limit:
                    return self.path.read_bytes()
            else:
                assert self.zip_path is not None and self.member is not None
                with zipfile.ZipFile(self.zip_path) as archive:
                    size = archive.getinfo(self.member).file_size  # as stated: a zip bomb is not inflated
                    if limit is None or size <= limit:
                        return archive.read(self.member)
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise ReleaseError(f"{self.where}: cannot read image: {exc}") from exc
        raise ReleaseError(f"{self.where}: an image of {size} bytes is over the limit of {limit} bytes")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark sample (or safe control) as the replay feeds it to the monitor."""

    id: str
    modality: Modality
    severity: str | None
    reference: Reference | None
    index: int = 0
    text: str | None = None
    image: ImageRef | None = None
    safe: bool = False
    origin: str = ""
    content_id: str = ""
    truncated: bool = False

    @property
    def kind(self) -> Literal["risk", "safe"]:
        return "safe" if self.safe else "risk"

    @property
    def label(self) -> str:
        """How reports name it: position id and content id."""
        return f"{self.id} #{self.content_id}" if self.content_id else self.id


@dataclass(frozen=True, slots=True)
class Skipped:
    """A sample that cannot run, and why; reported in scores and reports."""

    id: str
    modality: Modality
    severity: str | None
    reason: str
    index: int = 0
    content_id: str = ""


@dataclass
class Release:
    """What the loader found: runnable scenarios, skipped samples, and notes for the report."""

    scenarios: list[Scenario] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_release(data_dir: Path, *, modality: ModalityChoice = "all") -> Release:
    """Load the release in `data_dir`; raise ReleaseError naming the file and record on any problem."""
    if not data_dir.is_dir():
        raise ReleaseError(f"{data_dir}: not a directory (expected the PaSBench release layout)")
    severity = _load_severity(data_dir / SEVERITY_FILE)
    release = Release()
    if modality in ("text", "all"):
        _add_text(release, data_dir / TEXT_FILE, severity)
    if modality in ("image", "all"):
        _add_images(release, data_dir, severity)
    return release


def _read_array(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReleaseError(f"{path}: file not found (expected the PaSBench release layout)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{path}: cannot read: {exc}") from None
    try:
        check_depth(text, what="PaSBench release file")
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReleaseError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except JsonInputError as exc:
        raise ReleaseError(f"{path}: {exc.detail}") from None
    if not isinstance(data, list):
        raise ReleaseError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    return data


def _fields(path: Path, index: int, record: Any, names: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(record, dict):
        raise ReleaseError(f"{path.name}: record {index}: expected an object, got {type(record).__name__}")
    values: dict[str, str] = {}
    for name in names:
        value = record.get(name)
        if value is None:
            raise ReleaseError(f"{path.name}: record {index}: field '{name}' is missing")
        if not isinstance(value, str):
            raise ReleaseError(f"{path.name}: record {index}: field '{name}' must be a string, "
                               f"got {type(value).__name__}")
        values[name] = value
    return values


def _key(knowledge: str) -> str:
    return " ".join(knowledge.split())


def _load_severity(path: Path) -> dict[str, str]:
    severity: dict[str, str] = {}
    for index, record in enumerate(_read_array(path)):
        values = _fields(path, index, record, ("safety_knowledge", "severity"))
        level = values["severity"].strip().lower()
        if level not in SEVERITIES:
            raise ReleaseError(f"{path.name}: record {index}: severity {values['severity']!r} "
                               f"is not one of {', '.join(SEVERITIES)}")
        key = _key(values["safety_knowledge"])
        if severity.get(key, level) != level:
            raise ReleaseError(f"{path.name}: record {index}: safety_knowledge {key[:60]!r} "
                               f"has two severities ({severity[key]}, {level})")
        severity[key] = level
    return severity


def _reference(values: dict[str, str]) -> Reference:
    return Reference(
        knowledge=values["safety_knowledge"].strip(),
        behaviour=values["risk_triggering_behavior"].strip(),
        reason=values["risk_reason"].strip(),
        scenario=values["condition_or_scenario"].strip(),
    )


def _severity_of(release: Release, severity: dict[str, str], values: dict[str, str], sample: str) -> str:
    level = severity.get(_key(values["safety_knowledge"]))
    if level is None:
        release.notes.append(f"{sample}: safety_knowledge not found in {SEVERITY_FILE}; severity '{UNKNOWN_SEVERITY}'")
        return UNKNOWN_SEVERITY
    return level


def _add_text(release: Release, path: Path, severity: dict[str, str]) -> None:
    for index, record in enumerate(_read_array(path)):
        values = _fields(path, index, record, RECORD_FIELDS)
        sample = f"text-{index}"
        if not values["input"].strip():
            raise ReleaseError(f"{path.name}: record {index}: field 'input' is empty")
        release.scenarios.append(Scenario(
            id=sample, modality="text", severity=_severity_of(release, severity, values, sample),
            reference=_reference(values), index=index, text=values["input"], origin=f"{path.name}[{index}]",
            content_id=content_id(values), truncated=is_truncated(values["input"]),
        ))


def _add_images(release: Release, data_dir: Path, severity: dict[str, str]) -> None:
    path = data_dir / IMAGE_FILE
    records = _read_array(path)
    folder = data_dir / IMAGE_DIR
    members = _zip_members(data_dir / IMAGE_ZIP)
    seen: set[str] = set()
    for index, record in enumerate(records):
        values = _fields(path, index, record, RECORD_FIELDS)
        name = values["input"].strip()
        if not name.lower().endswith(".png") or "/" in name or "\\" in name:
            raise ReleaseError(f"{path.name}: record {index}: 'input' must be a PNG file name, got {name[:60]!r}")
        sample = f"image-{name[:-4]}"
        if sample in seen:
            raise ReleaseError(f"{path.name}: record {index}: duplicate image {name}")
        seen.add(sample)
        level = _severity_of(release, severity, values, sample)
        image = _locate(name, folder, data_dir / IMAGE_ZIP, members)
        # The record names its PNG, so hashing the record is cheap and identifies the sample; the
        # 5 MB composites are not read just to name them.
        record_id = content_id(values)
        if image is None:
            release.skipped.append(Skipped(sample, "image", level, MISSING_PNG, index, record_id))
            continue
        release.scenarios.append(Scenario(
            id=sample, modality="image", severity=level, reference=_reference(values), index=index,
            image=image, origin=f"{path.name}[{index}]", content_id=record_id,
        ))


def _zip_members(path: Path) -> dict[str, str]:
    """PNG members of the zip by file name (macOS resource forks ignored); empty without a zip."""
    if not path.is_file():
        return {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise ReleaseError(f"{path}: not a readable zip archive: {exc}") from None
    members: dict[str, str] = {}
    for member in names:
        pure = PurePosixPath(member)
        if member.startswith("__MACOSX/") or pure.name.startswith("._") or pure.suffix.lower() != ".png":
            continue
        members.setdefault(pure.name, member)
    return members


def _locate(name: str, folder: Path, zip_path: Path, members: dict[str, str]) -> ImageRef | None:
    if (folder / name).is_file():
        return ImageRef(name=name, path=folder / name)
    if name in members:
        return ImageRef(name=name, zip_path=zip_path, member=members[name])
    return None


def select(release: Release, *, limit: int | None) -> Release:
    """The first `limit` records of each modality's file (runnable or skipped), in file order."""
    if limit is None:
        return release
    return Release(
        scenarios=[s for s in release.scenarios if s.index < limit],
        skipped=[s for s in release.skipped if s.index < limit],
        notes=list(release.notes),
    )


SAFE_CONTROLS_PACKAGE = "replay"
SAFE_CONTROLS_DIR = ("data", "safe_controls")


def safe_controls_dir() -> Path:
    """The folder of the bundled safe-control logs."""
    return Path(str(resources.files(SAFE_CONTROLS_PACKAGE).joinpath(*SAFE_CONTROLS_DIR)))


def load_safe_controls(path: Path | None = None, *, limit: int | None = None) -> list[Scenario]:
    """The safe daily-life logs (no hazard) as text scenarios.

    `path` is a folder of ``*.log`` files (sorted by name; the bundled set by default) or a
    release-format JSON file: an array of records whose ``input`` is the log text.
    """
    path = path or safe_controls_dir()
    scenarios = _safe_from_json(path) if path.is_file() else _safe_from_folder(path)
    return scenarios[:limit]


def _safe_from_folder(folder: Path) -> list[Scenario]:
    if not folder.is_dir():
        raise ReleaseError(f"{folder}: no such folder or file (--safe-controls takes a folder of *.log files "
                           "or a JSON file of records with 'input')")
    paths = sorted(folder.glob("*.log"))
    if not paths:
        raise ReleaseError(f"{folder}: no safe-control logs (*.log) found")
    scenarios: list[Scenario] = []
    for index, path in enumerate(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ReleaseError(f"{path}: cannot read safe control: {exc}") from None
        if not text.strip():
            raise ReleaseError(f"{path}: safe control is empty")
        scenarios.append(_safe_scenario(f"safe-{path.stem}", index, text, origin=path.name,
                                        record_id=content_id(text)))
    return scenarios


def _safe_from_json(path: Path) -> list[Scenario]:
    records = _read_array(path)
    if not records:
        raise ReleaseError(f"{path}: no safe-control records (expected a JSON array of records with 'input')")
    scenarios: list[Scenario] = []
    for index, record in enumerate(records):
        text = _fields(path, index, record, ("input",))["input"]
        if not text.strip():
            raise ReleaseError(f"{path.name}: record {index}: field 'input' is empty")
        if text.strip().lower().endswith(".png") and "\n" not in text.strip():
            raise ReleaseError(f"{path.name}: record {index}: 'input' names an image; safe controls must be "
                               "text logs")
        scenarios.append(_safe_scenario(f"safe-{index}", index, text, origin=f"{path.name}[{index}]",
                                        record_id=content_id(record)))
    return scenarios


def _safe_scenario(sample: str, index: int, text: str, *, origin: str, record_id: str) -> Scenario:
    return Scenario(id=sample, modality="text", severity=None, reference=None, index=index, text=text, safe=True,
                    origin=origin, content_id=record_id, truncated=is_truncated(text))
