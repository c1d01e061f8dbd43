"""Scoring against hand-computed expectations on a fixture run log (no model, no judge)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replay.cli import main as replay_main
from replay.report import render_html, render_markdown, write_reports
from replay.runlog import (
    FirstAlert,
    JudgementRecord,
    Record,
    RunHeader,
    RunLogWriter,
    SkippedRecord,
    TrialRecord,
    read_run_log,
    records_data,
)
from replay.score import clustered, proportion, score_run, wilson

ENTRIES = 5


def _trial(sample: str, trial: int, *, correct: bool | None, alert_at: int | None = None,
           status: str = "ok", modality: str = "text", severity: str | None = "critical",
           kind: str = "risk", approximate: bool = False) -> TrialRecord:
    first = None
    if alert_at is not None:
        first = FirstAlert(window=alert_at, entry_index=alert_at, entries=ENTRIES, offset_s=2.0 * alert_at)
    judgement = None
    if correct is not None:
        by_rule = alert_at is None
        judgement = JudgementRecord(correct=correct, reason="fixture", judge="rule" if by_rule else "judge-x",
                                    kind="rule" if by_rule else ("offline" if approximate else "llm"),
                                    approximate=approximate and not by_rule)
    return TrialRecord(sample=sample, modality=modality, severity=severity, kind=kind, trial=trial,  # type: ignore[arg-type]
                       protocol="stream", status=status, entries=ENTRIES, first_alert=first,  # type: ignore[arg-type]
                       judgement=judgement)


def fixture_records(*, approximate: bool = False) -> list[Record]:
    """Four scored risk samples (one incomplete, one with an errored trial), one planned without
    trials, one skipped, and two safe controls. Trials per sample: 4."""
    t = _trial
    return [
        RunHeader(protocol="stream", modality="all", trials=4, model={"model": "m", "backend": "openai"},
                  judge={"kind": "offline" if approximate else "llm", "model": "judge-x", "approximate": approximate},
                  planned=["A", "B", "C", "D", "E", "F", "S1", "S2"]),
        SkippedRecord(sample="F", modality="image", severity="info", reason="composite PNG not found"),
        # A: 4 of 4 correct; first warnings at entries 4, 4, 2, 3.
        t("A", 0, correct=True, alert_at=4, approximate=approximate),
        t("A", 1, correct=True, alert_at=4, approximate=approximate),
        t("A", 2, correct=True, alert_at=2, approximate=approximate),
        t("A", 3, correct=True, alert_at=3, approximate=approximate),
        # B (warning): 1 of 4 correct: a right early warning, a wrong late one, two silences.
        t("B", 0, correct=True, alert_at=1, severity="warning"),
        t("B", 1, correct=False, alert_at=4, severity="warning"),
        t("B", 2, correct=False, severity="warning"),
        t("B", 3, correct=False, severity="warning"),
        # C (image): only trials 0 and 1 recorded (the run was interrupted): 0 of 2.
        t("C", 0, correct=False, modality="image"),
        t("C", 1, correct=False, modality="image"),
        # D (info): 2 of 3 judged correct; trial 3 failed at the model (not judged, not counted).
        t("D", 0, correct=True, alert_at=4, severity="info"),
        t("D", 1, correct=True, alert_at=3, severity="info"),
        t("D", 2, correct=False, alert_at=4, severity="info"),
        t("D", 3, correct=None, status="error", severity="info"),
        # Safe controls: S1 alarms once in 4 trials (at entry 2), S2 never.
        t("S1", 0, correct=None, alert_at=2, kind="safe", severity=None),
        *[t("S1", i, correct=None, kind="safe", severity=None) for i in (1, 2, 3)],
        *[t("S2", i, correct=None, kind="safe", severity=None) for i in range(4)],
    ]


def test_wilson_matches_the_textbook_formula() -> None:
    # 3 of 4: centre (0.75 + 0.4802) / 1.9604 = 0.6276, half 0.3270 -> [0.3006, 0.9544]
    assert wilson(3, 4) == pytest.approx((0.3006, 0.9544), abs=1e-4)
    assert wilson(0, 4) == pytest.approx((0.0, 0.4899), abs=1e-4)
    assert wilson(0, 0) is None


def test_clustered_interval_uses_the_effective_sample_size() -> None:
    # Perfectly correlated trials: n_eff falls back to the number of samples.
    same = clustered([(4, 4), (0, 4)])
    assert same.value == 0.5 and same.n_eff == 2.0
    assert [same.low, same.high] == pytest.approx(list(wilson(1, 2) or ()), abs=1e-9)
    # Independent-looking trials cannot claim more than the number of trials.
    assert clustered([(2, 4), (2, 4)]).n_eff == 8.0
    assert proportion(0, 0).value is None


def test_scores_match_hand_computed_expectations() -> None:
    scores = score_run(records_data(fixture_records()))
    # Judged trials: A 4/4, B 1/4, C 0/2, D 2/3 (the errored trial is out) -> 7/13.
    assert scores["n_samples"] == 4
    assert scores["n_trials"] == 13
    assert scores["n_correct"] == 7
    assert scores["accuracy"] == pytest.approx(7 / 13, abs=1e-6)
    # Cluster-robust variance: residuals c - p n = 24/13, -15/13, -14/13, 5/13; sum of squares 1022/169;
    # v = 4/3 * 1022/169 / 13^2 = 0.047711; n_eff = (42/169) / v = 5.2089; Wilson(0.5385, 5.2089).
    assert scores["accuracy_n_eff"] == pytest.approx(5.2089, abs=1e-3)
    assert scores["accuracy_ci"] == pytest.approx([0.1969, 0.8473], abs=1e-4)
    # Potential: A, B, D have a correct trial -> 3/4; robustness: only A -> 1/4 (Wilson over 4 samples).
    assert scores["potential"] == 0.75
    assert scores["potential_ci"] == pytest.approx([0.3006, 0.9544], abs=1e-4)
    assert scores["robustness"] == 0.25
    assert scores["robustness_ci"] == pytest.approx([0.0456, 0.6994], abs=1e-4)
    assert scores["protocol"] == "stream"
    assert scores["trials_per_sample"] == 4
    assert scores["judge"]["model"] == "judge-x" and scores["judge"]["approximate"] is False


def test_breakdowns_by_modality_and_severity() -> None:
    scores = score_run(records_data(fixture_records()))
    text, image = scores["by_modality"]["text"], scores["by_modality"]["image"]
    assert (text["n_correct"], text["n_trials"], text["potential"]) == (7, 11, 1.0)
    assert text["robustness"] == pytest.approx(1 / 3, abs=1e-6)
    assert (image["accuracy"], image["n_trials"], image["potential"]) == (0.0, 2, 0.0)
    severity = scores["by_severity"]
    assert list(severity) == ["critical", "warning", "info"]
    assert severity["critical"]["accuracy"] == pytest.approx(4 / 6)  # A 4/4 + C 0/2
    assert severity["warning"]["accuracy"] == 0.25
    assert severity["info"]["accuracy"] == pytest.approx(2 / 3)


def test_coverage_reports_skipped_missing_incomplete_and_failed() -> None:
    coverage = score_run(records_data(fixture_records()))["coverage"]
    assert coverage["planned_samples"] == 8
    assert coverage["skipped"] == {"count": 1, "ids": ["F"], "reasons": {"composite PNG not found": 1}}
    assert coverage["samples_without_trials"] == ["E"]
    assert coverage["incomplete_samples"] == ["C", "D"]
    assert coverage["errored_trials"] == 1


def test_stream_measures() -> None:
    stream = score_run(records_data(fixture_records()))["stream"]
    # Before the last entry (index < 4): A at 2 and 3, B at 1, D at 3 -> 4 of 13 judged trials, all correct.
    assert stream["warned_before_last"] == pytest.approx(4 / 13, abs=1e-6)
    assert stream["correct_before_last"] == pytest.approx(4 / 13, abs=1e-6)
    first = stream["first_warning"]
    # Warned trials' entry indices: 4, 4, 2, 3, 1, 4, 4, 3, 4.
    assert first["n_warned_trials"] == 9
    assert first["entry_index"]["mean"] == pytest.approx(29 / 9, abs=1e-4)
    assert first["entry_index"]["median"] == 4.0
    assert first["position"]["mean"] == pytest.approx(29 / 36, abs=1e-4)
    assert first["lead_entries"]["mean"] == pytest.approx(7 / 9, abs=1e-4)


def test_false_alarms_on_safe_controls() -> None:
    alarms = score_run(records_data(fixture_records()))["false_alarms"]
    # 1 alarm in 8 safe trials; residuals 0.5 and -0.5 -> v = 2 * 0.5 / 64, n_eff = (7/64) / v = 7.
    assert alarms["rate"] == 0.125
    assert alarms["rate_ci"] == pytest.approx([0.0204, 0.4954], abs=1e-4)
    assert alarms["samples_with_alarm"] == 0.5
    assert alarms["samples_with_alarm_ci"] == pytest.approx([0.0945, 0.9055], abs=1e-4)
    assert alarms["samples_always_alarmed"] == 0.0
    assert (alarms["n_samples"], alarms["n_trials"], alarms["n_false_alarms"]) == (2, 8, 1)
    assert alarms["first_alarm"]["entry_index"]["mean"] == 2.0


def test_a_later_ok_line_replaces_an_errored_attempt() -> None:
    records = [*fixture_records(), _trial("D", 3, correct=True, alert_at=2, severity="info")]
    scores = score_run(records_data(records))
    assert (scores["n_correct"], scores["n_trials"]) == (8, 14)
    assert scores["coverage"]["errored_trials"] == 0
    assert "D" not in scores["coverage"]["incomplete_samples"]


def test_the_paper_protocol_has_no_stream_measures() -> None:
    records = [r.model_copy(update={"protocol": "paper"}) for r in fixture_records()]
    scores = score_run(records_data(records))
    assert scores["protocol"] == "paper"
    assert scores["stream"] is None
    assert scores["accuracy"] == pytest.approx(7 / 13, abs=1e-6)


def test_reports_label_an_approximate_judge(tmp_path: Path) -> None:
    scores = score_run(records_data(fixture_records(approximate=True)))
    assert scores["judge"]["approximate"] is True
    markdown, html = render_markdown(scores), render_html(scores)
    assert "APPROXIMATE" in markdown and "APPROXIMATE" in html
    assert html.count("<svg") == 3  # by severity, correct trials per sample, warning position
    assert "| critical |" in markdown
    paths = write_reports(scores, tmp_path)
    assert [p.name for p in paths] == ["scores.json", "report.md", "report.html"]
    assert json.loads(paths[0].read_text())["accuracy"] == scores["accuracy"]


def test_score_cli_rescores_a_run_log_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs.jsonl"
    writer = RunLogWriter(runs)
    for record in fixture_records():
        writer.append(record)
    with runs.open("a") as handle:
        handle.write('{"type": "trial", "sample": "A", "tri')  # a run killed mid-write
    assert read_run_log(runs).torn_lines == 1
    # The fixture is incomplete on purpose (missing, failed trials): scored, said first, exit 3.
    assert replay_main(["score", "--runs", str(runs), "--out", str(tmp_path / "scored")]) == 3
    scores = json.loads((tmp_path / "scored" / "scores.json").read_text())
    for key in ("accuracy", "potential", "robustness", "n_samples", "n_trials", "protocol", "judge",
                "by_modality", "by_severity"):
        assert key in scores
    assert scores["accuracy"] == pytest.approx(7 / 13, abs=1e-6)
    out = capsys.readouterr().out
    assert "accuracy 53.8%" in out and "\nINCOMPLETE: 6 trials missing" in out
    # A writer opened on the torn log drops the partial line instead of gluing the next record to it.
    RunLogWriter(runs).append(_trial("E", 0, correct=True, alert_at=4))
    assert read_run_log(runs).torn_lines == 0
