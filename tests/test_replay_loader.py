"""The PaSBench loader on the shared development subset and on broken copies of it; `--list`."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from replay.cli import main as replay_main
from replay.errors import ReleaseError
from replay.pasbench import (
    MISSING_PNG,
    SEVERITY_FILE,
    TEXT_FILE,
    load_release,
    load_safe_controls,
    select,
)
from sensors.logs.parsers import parse_pasbench_log
from tests.support.paths import PASBENCH


@pytest.fixture
def release_copy(tmp_path: Path) -> Path:
    data = tmp_path / "pasbench"
    shutil.copytree(PASBENCH, data)
    for path in data.iterdir():
        path.chmod(0o644)
    return data


def test_the_subset_loads_with_stable_ids_and_severity() -> None:
    release = load_release(PASBENCH)
    text = [s for s in release.scenarios if s.modality == "text"]
    assert len(text) == 96
    assert [s.id for s in text[:3]] == ["text-0", "text-1", "text-2"]
    assert {s.severity for s in text} <= {"critical", "warning", "info"}
    assert text[0].reference is not None and text[0].reference.knowledge
    assert text[0].text is not None and text[0].text.lstrip().startswith("[LOG START]")
    # The subset ships no PNGs: every image record is reported as skipped, none silently dropped.
    assert len(release.skipped) == 41
    assert all(s.reason == MISSING_PNG and s.id.startswith("image-") for s in release.skipped)
    assert release.skipped[0].id == "image-77"
    assert release.notes == []


def test_limit_takes_the_first_records_of_each_modality() -> None:
    release = select(load_release(PASBENCH), limit=3)
    assert [s.id for s in release.scenarios] == ["text-0", "text-1", "text-2"]
    assert [s.id for s in release.skipped] == ["image-77", "image-61", "image-41"]
    assert load_release(PASBENCH, modality="text").skipped == []


def test_missing_file_is_named(release_copy: Path) -> None:
    (release_copy / SEVERITY_FILE).unlink()
    with pytest.raises(ReleaseError, match=r"severity\.json: file not found"):
        load_release(release_copy)


def test_malformed_json_names_file_and_position(release_copy: Path) -> None:
    (release_copy / TEXT_FILE).write_text('[{"safety_knowledge": "x",,]')
    with pytest.raises(ReleaseError, match=r"text_eval_hugging\.json: not valid JSON: .* line 1, column"):
        load_release(release_copy)


def test_malformed_record_names_file_record_and_field(release_copy: Path) -> None:
    records = json.loads((release_copy / TEXT_FILE).read_text())
    del records[7]["risk_reason"]
    (release_copy / TEXT_FILE).write_text(json.dumps(records))
    with pytest.raises(ReleaseError, match=r"text_eval_hugging\.json: record 7: field 'risk_reason' is missing"):
        load_release(release_copy)
    records[7]["risk_reason"] = 3
    (release_copy / TEXT_FILE).write_text(json.dumps(records))
    with pytest.raises(ReleaseError, match=r"record 7: field 'risk_reason' must be a string"):
        load_release(release_copy)


def test_bad_severity_value_is_an_error(release_copy: Path) -> None:
    records = json.loads((release_copy / SEVERITY_FILE).read_text())
    records[2]["severity"] = "deadly"
    (release_copy / SEVERITY_FILE).write_text(json.dumps(records))
    with pytest.raises(ReleaseError, match=r"severity\.json: record 2: severity 'deadly'"):
        load_release(release_copy)


def test_unjoined_knowledge_gets_unknown_severity_and_a_note(release_copy: Path) -> None:
    records = json.loads((release_copy / TEXT_FILE).read_text())
    records[0]["safety_knowledge"] = "A knowledge point severity.json does not have"
    (release_copy / TEXT_FILE).write_text(json.dumps(records))
    release = load_release(release_copy, modality="text")
    assert release.scenarios[0].severity == "unknown"
    assert release.notes and release.notes[0].startswith("text-0:")


def test_images_are_found_in_the_folder_or_the_zip(release_copy: Path) -> None:
    (release_copy / "combine_images").mkdir()
    (release_copy / "combine_images" / "77.png").write_bytes(b"png-77")
    with zipfile.ZipFile(release_copy / "combine_images.zip", "w") as archive:
        archive.writestr("combine_images/61.png", b"png-61")
        archive.writestr("__MACOSX/combine_images/._41.png", b"resource fork")
    release = load_release(release_copy, modality="image")
    found = {s.id: s for s in release.scenarios}
    assert set(found) == {"image-77", "image-61"}
    assert found["image-77"].image is not None and found["image-77"].image.read_bytes() == b"png-77"
    assert found["image-61"].image is not None and found["image-61"].image.read_bytes() == b"png-61"
    assert len(release.skipped) == 39


def test_safe_controls_are_sixty_parseable_logs_covering_the_risk_logs_places() -> None:
    safe = load_safe_controls()
    assert len(safe) >= 60
    for scenario in safe:
        assert scenario.safe and scenario.reference is None and scenario.severity is None
        assert not scenario.truncated and len(scenario.content_id) == 12
        entries = parse_pasbench_log(scenario.text or "", source="t")
        assert len(entries) == (scenario.text or "").count("Behavioral Observation") >= 5, scenario.id
        assert all(e.behaviour and e.clock and e.location and e.environment for e in entries), scenario.id
    themes = {s.id.removeprefix("safe-").split("-")[0] for s in safe}
    assert themes >= {"kitchen", "bathroom", "stairs", "garden", "workshop", "garage", "childcare", "outdoors",
                      "sport", "travel", "work"}
    # As long as the risk logs (docs/replay.md has both distributions, from benchmarks/safe_log_stats.py).
    lengths = sorted(len(s.text or "") for s in safe)
    assert 3200 <= lengths[len(lengths) // 2] <= 4100


def test_list_prints_one_json_line_per_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main(["pasbench", "--data", str(PASBENCH), "--list", "--limit", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows[:4]] == ["text-0", "text-1", "image-77", "image-61"]
    assert rows[0]["modality"] == "text" and rows[0]["entries"] >= 2 and rows[0]["severity"] == "critical"
    assert rows[2]["entries"] is None and rows[2]["missing"] == MISSING_PNG
    assert rows[4]["id"].startswith("safe-") and rows[4]["severity"] is None
    assert len(rows) == 6
    for row in rows:
        assert {"id", "modality", "entries", "severity"} <= set(row)


def test_list_error_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main(["pasbench", "--data", str(tmp_path), "--list"]) == 1
    assert "severity.json: file not found" in capsys.readouterr().err
