"""Replay you can trust, round two (issue 24): no COMPLETE beside an incomplete run log, every setting in the
fingerprint, a content-blind model called blind, the offline judge said to grade the risk only, the paper
preset and the CLI saying only what is true.

End-to-end tests run the real CLI against a scripted OpenAI-compatible model server and a scripted judge
server on 127.0.0.1 (real sockets, the real `openai` client), on ../shared/pasbench."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from monitor.assess.settings import AssessmentSettings
from monitor.settings import Settings
from replay.cli import main as replay_main
from replay.compare import ScoredRun
from replay.errors import RunLogError
from replay.fingerprint import NOT_MEASURED, PIPELINE_SECTIONS, fingerprint, settings_fingerprint
from replay.judge import OFFLINE_CHECKS, RISK_ONLY_SETTINGS
from replay.report import discrimination_line, number, render_html, render_markdown
from replay.runlog import FirstAlert, JudgementRecord, RunHeader, RunLogWriter, TrialRecord, records_data
from replay.runner import _check_compatible
from replay.score import score_run
from replay.tune import Candidate, recommend
from tests.support.openai_server import DANGER, SAFE, Action, ScriptedOpenAIServer, reply
from tests.support.paths import PASBENCH, REPO
from tests.support.replay_cli import kill_replay_after, run_log_lines
from tests.test_replay_score import fixture_records
from tests.test_replay_trust import _complete_records


@pytest.fixture
def judge_server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(model="scripted-judge", default=reply({"correct": True, "reason": "ok"})) as server:
        yield server


def _config(tmp_path: Path, server: ScriptedOpenAIServer, extra: str = "") -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(f'[model]\nbackend = "openai"\nbase_url = "{server.base_url}"\nmodel = "scripted-vlm"\n'
                    f"accepts_images = true\nmax_retries = 0\n{extra}")
    return path


def _args(tmp_path: Path, model: ScriptedOpenAIServer, judge: ScriptedOpenAIServer, out: Path,
          *more: str, extra: str = "") -> list[str]:
    return ["pasbench", "--data", str(PASBENCH), "--out", str(out), "--config", str(_config(tmp_path, model, extra)),
            "--judge-base-url", judge.base_url, "--judge-model", "scripted-judge", "--no-progress", *more]


def _write(path: Path, records: list[Any]) -> Path:
    writer = RunLogWriter(path)
    for record in records:
        writer.append(record)
    return path


# -- 1. never a COMPLETE beside an incomplete run ----------------------------------------------------------


def test_an_interrupted_fresh_rerun_leaves_no_complete_scores_beside_its_partial_log(
        tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    out = tmp_path / "out"
    options = ("--limit", "2", "--trials", "4", "--modality", "text", "--no-safe-controls", "--concurrency", "1")
    with ScriptedOpenAIServer(default=reply(DANGER)) as model:
        args = _args(tmp_path, model, judge_server, out, *options)
        assert replay_main(args) == 0
        assert json.loads((out / "scores.json").read_text())["complete"] is True
        model.default = reply(DANGER, delay_s=0.3)  # slow enough to be killed mid-way
        # Another cache, so the re-run asks the model again instead of answering every trial from the cache.
        fresh = [*args, "--fresh", "--cache", str(tmp_path / "other-cache.jsonl")]
        kill_replay_after(fresh, out / "runs.jsonl", kind="trial", count=1, timeout_s=60,
                          ready=lambda: any(out.glob("runs.jsonl.*.old")))
    trials = run_log_lines(out / "runs.jsonl", "trial")
    assert 1 <= len(trials) < 8, "the fresh run must have been interrupted mid-way"
    # Nothing derived from the earlier, complete run may sit beside the partial log.
    assert not (out / "scores.json").exists()
    assert not (out / "report.md").exists() and not (out / "report.html").exists()
    kept = list(out.glob("runs.jsonl.*.old"))
    assert len(kept) == 1 and len(run_log_lines(kept[0], "trial")) == 8
    # Scoring the partial log says what it is.
    assert replay_main(["score", "--runs", str(out / "runs.jsonl"), "--out", str(out)]) == 3
    assert json.loads((out / "scores.json").read_text())["complete"] is False
    assert (out / "report.md").read_text().splitlines()[2].startswith("**INCOMPLETE")


def test_a_run_log_without_its_header_is_refused_for_scoring(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The case: the `run` header lines removed and two whole samples removed.
    records = [r for r in _complete_records()
               if not isinstance(r, RunHeader) and not (isinstance(r, TrialRecord) and r.sample in ("B", "S2"))]
    runs = _write(tmp_path / "runs.jsonl", records)
    assert replay_main(["score", "--runs", str(runs), "--out", str(tmp_path / "scored")]) == 1
    err = capsys.readouterr().err
    assert f"{runs}: no `run` header line" in err and "refusing to score it" in err
    assert not (tmp_path / "scored" / "scores.json").exists()


def test_whole_samples_missing_from_a_run_log_make_it_incomplete(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [r for r in _complete_records() if not (isinstance(r, TrialRecord) and r.sample in ("B", "S2"))]
    runs = _write(tmp_path / "runs.jsonl", records)
    assert replay_main(["score", "--runs", str(runs), "--out", str(tmp_path / "scored")]) == 3
    assert capsys.readouterr().out.startswith("INCOMPLETE: 8 trials missing (2 samples without any trial)")
    whole = json.loads((tmp_path / "scored" / "scores.json").read_text())["completeness"]
    assert whole["samples_without_trials"] == ["B", "S2"]


def test_scores_are_never_written_beside_another_run_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _write(tmp_path / "a" / "runs.jsonl", _complete_records())
    _write(tmp_path / "b" / "runs.jsonl", _complete_records()[:3])
    assert replay_main(["score", "--runs", str(first), "--out", str(tmp_path / "b")]) == 1
    assert "holds another run log" in capsys.readouterr().err
    assert not (tmp_path / "b" / "scores.json").exists()
    assert replay_main(["score", "--runs", str(first), "--out", str(tmp_path / "a")]) == 0
    # A log set aside by --fresh is not the folder's run log either.
    kept = first.rename(tmp_path / "b" / "runs.jsonl.20260101T000000.old")
    assert replay_main(["score", "--runs", str(kept), "--out", str(tmp_path / "b")]) == 1


# -- 2. the fingerprint covers every setting that can change a verdict ------------------------------------


def _other_values(annotation: Any, current: Any) -> list[Any]:
    """Values of `annotation`'s type other than `current`, most plausible first (validation picks one)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _other_values(get_args(annotation)[0], current)
    if origin is Literal:
        return [value for value in get_args(annotation) if value != current]
    if origin in (Union, types.UnionType):
        return [value for arg in get_args(annotation) for value in _other_values(arg, current)]
    if origin is list:
        return [current[:1], current[1:], []] if current else []
    if annotation is type(None):
        return [] if current is None else [None]
    if annotation is bool:
        return [not current]
    if annotation is int:
        base = current if isinstance(current, int) else 2
        return [base + 1, base - 1, 2, 1]
    if annotation is float:
        base = float(current) if isinstance(current, int | float) else 1.0
        return [round(base + 0.1, 6), base / 2, 0.5, base + 1.0]
    if annotation is str:
        return [f"{current}-other" if current else "http://127.0.0.1:9/v1"]
    if annotation is Path:
        return [Path("/nonexistent/other.json")]
    raise AssertionError(f"no other value known for {annotation!r}: teach this test the new type")


def _changed(section: BaseModel, prefix: str) -> Iterator[tuple[str, Any, Any, BaseModel]]:
    """Every field of `section` (recursively) changed in turn: (dotted key, old, new, the changed section)."""
    for name, info in type(section).model_fields.items():
        key, current = f"{prefix}.{name}", getattr(section, name)
        if key in NOT_MEASURED:
            continue
        if isinstance(current, BaseModel):
            for inner_key, old, new, inner in _changed(current, key):
                yield inner_key, old, new, section.model_copy(update={name: inner})
            continue
        for value in _other_values(info.annotation, current):
            try:
                changed = type(section).model_validate({**section.model_dump(), name: value})
            except ValidationError:
                continue
            if getattr(changed, name) != current:
                yield key, current, getattr(changed, name), changed
                break
        else:
            raise AssertionError(f"{key}: no other valid value found")


def _header(settings: Settings) -> RunHeader:
    marks = fingerprint(data={"text-0": "a"}, safe={}, modality="text", limit=1, protocol="paper", trials=1,
                        pacing={"interval_s": 2.0}, preset="none", image_input="frames", model={}, judge={},
                        settings=settings_fingerprint(settings))
    return RunHeader(protocol="paper", modality="text", trials=1, model={}, judge={}, planned=["text-0"],
                     fingerprint=marks, records={"text-0": "a"})


def test_every_pipeline_setting_is_in_the_fingerprint_and_named_in_full_when_it_differs(tmp_path: Path) -> None:
    base = Settings(model={"backend": "openai", "base_url": "http://127.0.0.1:8/v1", "model": "m"})
    checked = []
    for section in PIPELINE_SECTIONS:
        for key, old, new, changed in _changed(getattr(base, section), section):
            other = base.model_copy(update={section: changed})
            with pytest.raises(RunLogError) as refused:
                _check_compatible(_header(base), _header(other), tmp_path / "runs.jsonl")
            shown = [_shown(old), _shown(new)]
            assert f"setting {key}: {shown[0]} there, {shown[1]} now" in str(refused.value), key
            checked.append(key)
    assert len(checked) >= 40 and "alerts.min_severity" in checked and "windows.max_entries" in checked
    assert "keyframes.longest_side" in checked and "assessment.vote.m" in checked
    # What cannot change a verdict is left out, so such a change resumes.
    quiet = base.model_copy(update={"model": base.model.model_copy(update={"concurrency": 9, "max_retries": 0})})
    _check_compatible(_header(base), _header(quiet), tmp_path / "runs.jsonl")


def test_a_run_log_of_an_older_fingerprint_version_is_refused_saying_so(tmp_path: Path) -> None:
    base = Settings()
    old = _header(base)
    old = old.model_copy(update={"fingerprint": {**old.fingerprint, "version": 1}})
    with pytest.raises(RunLogError, match=r"fingerprint version 1 there, 2 now .*cannot be resumed safely"):
        _check_compatible(old, _header(base), tmp_path / "runs.jsonl")


def _shown(value: Any) -> str:
    value = str(value) if isinstance(value, Path) else value
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def test_resuming_with_another_alert_threshold_is_refused_naming_the_key(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    options = ("--limit", "1", "--trials", "1", "--modality", "text", "--no-safe-controls")
    with ScriptedOpenAIServer(default=reply(DANGER)) as model:
        assert replay_main(_args(tmp_path, model, judge_server, out, *options)) == 0
        calls = model.calls
        capsys.readouterr()
        changed = _args(tmp_path, model, judge_server, out, *options, extra='[alerts]\nmin_severity = "critical"\n')
        assert replay_main(changed) == 1
        assert model.calls == calls
    assert "setting alerts.min_severity: info there, critical now" in capsys.readouterr().err


# -- 3. a blind model is called blind ------------------------------------------------------------------------


def _content_blind(share: float) -> Any:
    """A scripted model that warns on `share` of the windows it is asked about, whatever they hold: the
    decision is a hash of the request (its trial seed and text), so it is reproducible and ignores danger."""
    def respond(body: dict[str, Any]) -> Any:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
        return reply(DANGER if digest[0] < share * 256 else SAFE)
    return respond


def test_a_content_blind_model_is_called_blind_in_every_first_line(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    with ScriptedOpenAIServer(responder=_content_blind(0.15)) as model:
        code = replay_main(_args(tmp_path, model, judge_server, out, "--protocol", "stream", "--limit", "6",
                                 "--trials", "2", "--modality", "text"))
    assert code == 0
    scores = json.loads((out / "scores.json").read_text())
    verdict = scores["discrimination_verdict"]
    assert verdict["verdict"] == "content-blind", verdict
    risk, safe = verdict["risk_stream_alert_rate_ci"], verdict["safe_stream_alert_rate_ci"]
    # The rule: each rate lies inside the other's interval.
    assert risk[0] <= verdict["safe_stream_alert_rate"] <= risk[1]
    assert safe[0] <= verdict["risk_stream_alert_rate"] <= safe[1]
    banner = "NO BETTER THAN CONTENT-BLIND on these controls: its alerts do not depend on danger"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("COMPLETE") and printed[1].startswith(banner)
    assert f"[{100 * risk[0]:.1f}, {100 * risk[1]:.1f}]" in printed[1]
    assert f"[{100 * safe[0]:.1f}, {100 * safe[1]:.1f}]" in printed[1]
    markdown = (out / "report.md").read_text().splitlines()
    assert markdown[3].startswith(f"**{banner}")
    html = (out / "report.html").read_text()
    assert html.index(banner) < html.index("<h2>Headline</h2>")
    assert "class='banner'>NO BETTER THAN CONTENT-BLIND" in html


def test_a_model_that_reads_is_said_to_discriminate_without_a_banner(tmp_path: Path) -> None:
    # Risk streams: every trial warned; safe streams: none. Sixteen samples of each, four trials.
    header = RunHeader(protocol="paper", modality="text", trials=4, model={}, judge={"kind": "llm"},
                       planned=[f"R{i}" for i in range(16)] + [f"S{i}" for i in range(16)])
    trials = [_paper_trial(f"{kind}{i}", t, kind="risk" if kind == "R" else "safe", warned=kind == "R")
              for kind in "RS" for i in range(16) for t in range(4)]
    scores = score_run(records_data([header, *trials]))
    assert scores["discrimination_verdict"]["verdict"] == "discriminates"
    line = discrimination_line(scores)
    assert line is not None and line.startswith("Discrimination: risk streams with an alert 100.0% [")
    assert "CONTENT-BLIND" not in render_markdown(scores) and "CONTENT-BLIND" not in render_html(scores)
    # The other way round is called out too, and without safe controls it is said to be unmeasured.
    flipped = [t.model_copy(update={"first_alert": None if t.kind == "risk" else _FIRST}) for t in trials]
    assert score_run(records_data([header, *flipped]))["discrimination_verdict"]["verdict"] == "inverted"
    # Risk streams alerted far more often, but on too few samples to tell: not shown, and said so.
    few = [t for t in trials if t.sample in ("R0", "R1", "S0", "S1")]
    few_header = header.model_copy(update={"planned": ["R0", "R1", "S0", "S1"]})
    unshown = score_run(records_data([few_header, *few]))
    assert unshown["discrimination_verdict"]["verdict"] == "not clearly different"
    assert (discrimination_line(unshown) or "").startswith("NOT SHOWN TO DISCRIMINATE on these controls: risk "
                                                           "streams with an alert 100.0% [")
    assert "**NOT SHOWN TO DISCRIMINATE" in render_markdown(unshown)
    no_safe = score_run(records_data([header, *(t for t in trials if t.kind == "risk")]))
    assert discrimination_line(no_safe) == ("Discrimination: not measured (no safe controls in this run): whether "
                                            "its alerts depend on danger is unknown")


_FIRST = FirstAlert(window=0, entry_index=0, entries=1, offset_s=0.0)


def _paper_trial(sample: str, trial: int, *, kind: str, warned: bool) -> TrialRecord:
    judgement = None
    if kind == "risk":
        judgement = JudgementRecord(correct=warned, reason="fixture", judge="j", kind="llm", approximate=False)
    return TrialRecord(sample=sample, modality="text", kind=kind, trial=trial, protocol="paper",  # type: ignore[arg-type]
                       status="ok", entries=1, alerts=[{"type": "new"}] if warned else [],
                       first_alert=_FIRST if warned else None, judgement=judgement, usage={"windows_assessed": 1})


# -- 4. the offline judge says it grades the risk only -------------------------------------------------------


def test_reports_of_the_offline_judge_say_it_grades_the_risk_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = fixture_records(approximate=True)
    header = records[0]
    assert isinstance(header, RunHeader)
    # A run log of the offline judge from before its reason check: its settings, its measure on paraphrases.
    old_measure = {"precision": 0.906, "recall": 0.906, "how": "on paraphrases of each record's own risky-behaviour "
                   "text"}
    records[0] = header.model_copy(update={"judge": {**header.judge, **RISK_ONLY_SETTINGS,
                                                     "measured": old_measure}})
    runs = _write(tmp_path / "runs.jsonl", records)
    replay_main(["score", "--runs", str(runs), "--out", str(tmp_path / "scored")])
    assert "APPROXIMATE offline judge: risk only, reason not assessed" in capsys.readouterr().out
    scores = json.loads((tmp_path / "scored" / "scores.json").read_text())
    assert scores["judge"]["criteria"]["reason"].startswith("not assessed")
    markdown = (tmp_path / "scored" / "report.md").read_text()
    assert "Reason criterion (the paper's second): **not assessed**" in markdown
    judge_line = next(line for line in markdown.splitlines() if line.startswith("- Judge:"))
    assert "It grades the risk only" in judge_line
    # Its error rate is the one measured on written warnings (issue 24), the paraphrase figure only as a note.
    assert ("precision 73.1% (95% CI 61.5-82.3%) and recall 59.8% (95% CI 48.9-69.7%) on 205 warnings written for "
            "this project") in judge_line
    assert "secondary: the earlier, risk-only settings scored precision and recall 91% on paraphrases" in judge_line
    assert "90.6%" not in judge_line
    assert "the reason criterion is not assessed" in (tmp_path / "scored" / "report.html").read_text()


# -- 5. the paper preset and the CLI say only what is true ----------------------------------------------------


def test_the_paper_preset_refuses_a_strategy_that_is_not_single(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    with ScriptedOpenAIServer(default=reply(DANGER)) as model:
        args = _args(tmp_path, model, judge_server, tmp_path / "out", "--preset", "paper", "--limit", "1",
                     extra='[assessment]\nstrategy = "vote"\n')
        assert replay_main(args) == 1
        assert model.calls == 0
    err = capsys.readouterr().err
    assert '--preset paper follows the paper, which asks the model once per trial; [assessment] strategy = "vote" ' \
           "(vote(2/3)) makes more calls per trial" in err
    assert not (tmp_path / "out" / "runs.jsonl").exists()


def test_without_a_judge_endpoint_the_cli_says_which_judge_grades_and_what_it_checks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The data folder does not exist: the run stops before loading any model, after saying what it would do.
    assert replay_main(["pasbench", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"),
                        "--preset", "paper", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "the judge uses the paper's two criteria" not in err
    assert "no judge endpoint, so not the paper's judge" in err
    assert f"judge: the offline approximate judge (no --judge-base-url): {OFFLINE_CHECKS}" in err
    assert "checks both of the paper's criteria approximately" in OFFLINE_CHECKS
    assert "--preset paper: the safe controls run too" in err


# -- 6. numbers, pipes and modes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "digits", "shown"), [
    (750.35, 0, "750"), (739.5, 0, "740"), (740, 0, "740"), (100, 2, "100"), (1000.0, 1, "1000"), (0, 0, "0"),
    (0.0, 2, "0"), (-20.0, 0, "-20"), (10.5, 2, "10.5"), (0.25, 3, "0.25"), (762.0, 0, "762"), (None, 2, "n/a"),
])
def test_the_number_formatter_keeps_the_zeros_of_whole_numbers(value: float | None, digits: int, shown: str) -> None:
    assert number(value, digits) == shown


def _scored_folder(tmp_path: Path) -> Path:
    runs = _write(tmp_path / "run" / "runs.jsonl", _complete_records())
    assert replay_main(["score", "--runs", str(runs), "--out", str(tmp_path / "run")]) == 0
    return tmp_path / "run"


@pytest.mark.parametrize("command", [
    ["-m", "monitor", "replay", "compare", "{run}"],
    ["-m", "replay.cli", "compare", "{run}", "{run}"],
    ["-m", "monitor", "replay", "pasbench", "--data", str(PASBENCH), "--list"],
    ["-m", "monitor", "replay", "score", "--runs", "{run}/runs.jsonl", "--out", "{run}"],
    ["-m", "monitor", "inspect-log", str(REPO / "replay" / "data" / "safe_controls" / "bathroom-01-toddler-bath.log")],
])
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path, command: list[str]) -> None:
    """`monitor replay compare ... | head`: the pipe is closed before the command writes; no traceback."""
    run = _scored_folder(tmp_path)
    args = [part.replace("{run}", str(run)) for part in command]
    process = subprocess.Popen([sys.executable, *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line
    err = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


def test_pasbench_replay_outputs_are_private(tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    out = tmp_path / "out"
    old = os.umask(0o022)  # what a shell gives
    try:
        with ScriptedOpenAIServer(default=reply(DANGER)) as model:
            assert replay_main(_args(tmp_path, model, judge_server, out, "--limit", "1", "--trials", "1")) == 0
            (out / "scores.json").chmod(0o644)  # an older version's scores: made private again when rewritten
            assert replay_main(_args(tmp_path, model, judge_server, out, "--limit", "1", "--trials", "1",
                                     "--fresh")) == 0
        assert replay_main(["compare", str(out), "--out", str(tmp_path / "cmp" / "compare.md")]) == 0
    finally:
        os.umask(old)
    files = [*out.rglob("*"), *(tmp_path / "cmp").rglob("*")]
    assert {p.name for p in files} >= {"runs.jsonl", "cache.jsonl", "judge-cache.jsonl", "scores.json", "report.md",
                                       "report.html", "compare.md", "compare.html"}
    wrong = [f"{p} {oct(p.stat().st_mode & 0o777)}" for p in files
             if p.stat().st_mode & 0o777 != (0o700 if p.is_dir() else 0o600)]
    wrong += [f"{d} {oct(d.stat().st_mode & 0o777)}" for d in (out, tmp_path / "cmp")
              if d.stat().st_mode & 0o777 != 0o700]
    assert wrong == []


def test_a_sweep_that_stops_leaves_no_earlier_comparison_or_recommendation(
        tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    out = tmp_path / "tune"
    out.mkdir()
    for name in ("compare.md", "compare.html", "recommended.toml"):
        (out / name).write_text("from an earlier sweep\n")
    with ScriptedOpenAIServer(default=Action(status=401)) as model:  # a fatal model error stops the sweep
        args = _args(tmp_path, model, judge_server, out, "--limit", "1", "--trials", "1", "--modality", "text")
        assert replay_main(["tune", *args[1:], "--param", "vote.m=1,2"]) == 1
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == []


def _html_rows(html: str) -> list[list[str]]:
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", html) if "<td>" in row]


def _md_row(markdown: str, first_cell: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_every_figure_of_the_pasbench_reports_matches_the_hand_computation(tmp_path: Path) -> None:
    """The fixture run log's figures, computed by hand (tests/test_replay_score.py), as report.md and
    report.html show them: the formatting must not change a number."""
    runs = _write(tmp_path / "runs.jsonl", fixture_records())
    replay_main(["score", "--runs", str(runs), "--out", str(tmp_path)])
    markdown, html = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    rows = _html_rows(html)
    expected = {
        # A 4/4, B 1/4, C 0/2, D 2/3: accuracy 7/13 (cluster-aware interval), potential 3/4, robustness 1/4.
        "all risk samples": ["53.8% [19.7, 84.7]", "75.0% [30.1, 95.4]", "25.0% [4.6, 69.9]", "4", "13"],
        "text": ["63.6%", "100.0%", "33.3%", "3", "11"],  # A, B, D: 7/11
        "image": ["0.0%", "0.0%", "0.0%", "1", "2"],
        "critical": ["66.7%", "50.0%", "50.0%", "2", "6"],  # A 4/4 + C 0/2
        "warning": ["25.0%", "100.0%", "0.0%", "1", "4"],
        "info": ["66.7%", "100.0%", "0.0%", "1", "3"],
    }
    for group, cells in expected.items():
        row = _md_row(markdown, group)
        with_intervals = "[" in cells[0]
        shown = row[1:] if with_intervals else [*(cell.split(" [")[0] for cell in row[1:4]), *row[4:]]
        assert shown == cells, (group, row)
        assert row in rows, group
    # Warned at all: A 4, B 2, C 0, D 3 of 13 judged risk trials.
    assert "The monitor warned at all in 69.2% [" in markdown
    # Correct trials per sample (N = 4): C 0, B 1, D 2, A 4.
    assert _md_row(markdown, "samples") == ["samples", "1", "1", "1", "0", "1"]
    # Safe controls: 1 alarm in 8 trials of 2 logs; the per-sample shares over 2 logs.
    assert "- Trials with a false alarm: 12.5% [2.0, 49.5] (1 of 8 trials, 2 logs)" in markdown
    assert "- Safe logs with an alarm in any trial: 50.0% [9.5, 90.5]" in markdown
    # Stream: warned before the last entry 4 of 13; first-warning entry indices 4,4,2,3,1,4,4,3,4.
    assert "- Risk trials warned before their last entry: 30.8% [" in markdown
    assert _md_row(markdown, "risk streams")[:3] == ["risk streams", "9", "3.22 / 4.00"]
    # Coverage: 8 planned, 4 scored, 1 skipped, E without trials, C and D short, D's trial failed.
    for line in ("- Planned samples: 8; scored risk samples: 4", "- Skipped (not in any denominator): 1",
                 "- Samples without any trial: 1", "- Samples with fewer judged trials than planned: 2",
                 "- Trials failed (model error, retried on resume): 1; not judged (judge error): 0"):
        assert line in markdown
    assert "53.8% [19.7, 84.7]" in html and "69.2% [" in html


def test_a_sweep_never_recommends_an_incomplete_or_content_blind_setting() -> None:
    def scored(name: str, robustness: float, **extra: Any) -> Candidate:
        scores = {"robustness": robustness, "false_alarms": {"rate": 0.0}, "calls_per_sample": 1.0, **extra}
        return Candidate(name, AssessmentSettings(), ScoredRun(name, Path(name), scores))

    blind = {"discrimination_verdict": {"verdict": "content-blind"}}
    result = recommend([scored("a", 0.9, complete=False), scored("b", 0.8, **blind), scored("c", 0.1, complete=True)],
                       max_false_alarm=0.05)
    assert result.chosen is not None and result.chosen.value == "c"
    assert result.lines[0] == "a: INCOMPLETE run (run the same command again to finish it); not eligible"
    assert result.lines[1].startswith("b: its alerts do not depend on danger on these controls (content-blind)")
