"""A replay you can trust (issue 11): no silently mixed runs, incompleteness in the headline, false alarms
measured against a content-blind baseline, release-format safe controls, the paper preset.

End-to-end tests run the real CLI against a scripted OpenAI-compatible model server and a scripted judge
server on 127.0.0.1 (real sockets, the real `openai` client), on ../shared/pasbench and copies of it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.core.errors import ConfigError
from replay.cli import main as replay_main
from replay.pasbench import TEXT_FILE, content_id, load_release
from replay.preset import resolve
from replay.runlog import FirstAlert, JudgementRecord, RunHeader, RunLogWriter, TrialRecord, records_data
from replay.score import score_run
from tests.support.openai_server import DANGER, SAFE, ScriptedOpenAIServer, reply
from tests.test_replay_images import _release as image_release
from tests.test_replay_score import fixture_records

PASBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "pasbench"


@pytest.fixture
def judge_server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(model="scripted-judge", default=reply({"correct": True, "reason": "ok"})) as server:
        yield server


def _config(tmp_path: Path, server: ScriptedOpenAIServer) -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(f'[model]\nbackend = "openai"\nbase_url = "{server.base_url}"\nmodel = "scripted-vlm"\n'
                    "accepts_images = true\nmax_retries = 0\n")
    return path


def _run(tmp_path: Path, model: ScriptedOpenAIServer, judge: ScriptedOpenAIServer, data: Path, out: Path,
         *args: str) -> int:
    return replay_main(["pasbench", "--data", str(data), "--out", str(out), "--config", str(_config(tmp_path, model)),
                        "--judge-base-url", judge.base_url, "--judge-model", "scripted-judge", "--no-progress",
                        *args])


def _lines(out: Path, kind: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return [line for line in lines if line["type"] == kind]


def _reordered_copy(tmp_path: Path) -> Path:
    """The development subset with its text records in reverse order: same ids, other records."""
    data = tmp_path / "other-release"
    shutil.copytree(PASBENCH, data)
    for path in data.iterdir():
        path.chmod(0o644)
    records = json.loads((data / TEXT_FILE).read_text())
    (data / TEXT_FILE).write_text(json.dumps(records[::-1]))
    return data


# -- 1. a resumed run never mixes data ------------------------------------------------------------------


def test_resuming_into_a_run_of_other_records_is_refused_naming_what_differs(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    options = ("--limit", "2", "--trials", "1", "--modality", "text", "--no-safe-controls")
    with ScriptedOpenAIServer(default=reply(DANGER)) as model:
        assert _run(tmp_path, model, judge_server, PASBENCH, out, *options) == 0
        calls = model.calls
        capsys.readouterr()
        # Same options, same ids (text-0, text-1), other records: refused, nothing run, nothing scored as done.
        assert _run(tmp_path, model, judge_server, _reordered_copy(tmp_path), out, *options) == 1
        assert model.calls == calls
        err = capsys.readouterr().err
        assert "benchmark records: 2 records there, 2 now; 2 ids name other records (e.g. text-0 is #" in err
        assert "--fresh" in err
        # --fresh sets the old log aside (kept) and starts over.
        assert _run(tmp_path, model, judge_server, _reordered_copy(tmp_path / "b"), out, *options, "--fresh") == 0
    assert len(_lines(out, "run")) == 1 and len(_lines(out, "trial")) == 2
    kept = list(out.glob("runs.jsonl.*.old"))
    assert len(kept) == 1 and len(kept[0].read_text().splitlines()) == 3  # header + 2 trials of the first run


@pytest.mark.parametrize(("first", "second", "named"), [
    (("--limit", "1"), ("--limit", "2"), "--limit: 1 there, 2 now"),
    (("--modality", "text"), ("--modality", "all"), "modality: text there, all now"),
])
def test_resuming_with_another_limit_or_modality_is_refused(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str],
        first: tuple[str, ...], second: tuple[str, ...], named: str) -> None:
    out = tmp_path / "out"
    base = {"--limit": "1", "--modality": "text"}
    with ScriptedOpenAIServer() as model:
        for option, code in ((first, 0), (second, 1)):
            args = {**base, option[0]: option[1]}
            flat = [item for pair in args.items() for item in pair]
            assert _run(tmp_path, model, judge_server, PASBENCH, out, *flat, "--trials", "1",
                        "--no-safe-controls") == code
    assert named in capsys.readouterr().err


def test_run_logs_and_scores_identify_records_by_content(
        tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    out = tmp_path / "out"
    with ScriptedOpenAIServer(default=reply(DANGER)) as model:
        assert _run(tmp_path, model, judge_server, PASBENCH, out, "--limit", "2", "--trials", "1") == 0
    records = json.loads((PASBENCH / TEXT_FILE).read_text())
    trials = {t["sample"]: t for t in _lines(out, "trial")}
    assert trials["text-1"]["record"] == content_id(records[1])
    assert all(len(t["record"]) == 12 for t in trials.values())
    skipped = _lines(out, "skipped")
    assert skipped and all(s["record"] for s in skipped)
    header = _lines(out, "run")[0]
    assert header["records"]["text-0"] == content_id(records[0])
    assert header["fingerprint"]["data"]["n"] == 4 and header["fingerprint"]["limit"] == 2
    scores = json.loads((out / "scores.json").read_text())
    assert scores["records"]["text-1"] == content_id(records[1])
    assert {s["record"] for s in scores["per_sample"] if s["id"] == "text-1"} == {content_id(records[1])}


# -- 2. incomplete is said in the headline ----------------------------------------------------------------


def _write(path: Path, records: list[Any]) -> Path:
    writer = RunLogWriter(path)
    for record in records:
        writer.append(record)
    return path


def _complete_records() -> list[Any]:
    """The fixture run log reduced to its complete samples: A, B and the safe controls."""
    keep = {"A", "B", "S1", "S2"}
    records = [r for r in fixture_records() if not isinstance(r, TrialRecord) or r.sample in keep]
    header = records[0]
    assert isinstance(header, RunHeader)
    return [header.model_copy(update={"planned": sorted(keep)}), *records[2:]]


def test_a_complete_run_says_so_first_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _write(tmp_path / "runs.jsonl", _complete_records())
    assert replay_main(["score", "--runs", str(runs), "--out", str(tmp_path / "scored")]) == 0
    assert capsys.readouterr().out.startswith("COMPLETE: all 4 planned samples x 4 trials")
    scores = json.loads((tmp_path / "scored" / "scores.json").read_text())
    assert scores["complete"] is True and scores["completeness"]["missing_trials"] == 0


def test_dropped_trial_lines_make_the_run_incomplete_with_exit_3(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [r for r in _complete_records() if not (isinstance(r, TrialRecord) and r.sample == "B" and r.trial)]
    runs = _write(tmp_path / "runs.jsonl", records)
    assert replay_main(["score", "--runs", str(runs), "--out", str(tmp_path / "scored")]) == 3
    assert capsys.readouterr().out.startswith("INCOMPLETE: 3 trials missing.")
    scores = json.loads((tmp_path / "scored" / "scores.json").read_text())
    whole = scores["completeness"]
    assert scores["complete"] is False
    assert (whole["missing_trials"], whole["samples_affected"]) == (3, ["B"])
    markdown = (tmp_path / "scored" / "report.md").read_text().splitlines()
    assert markdown[2].startswith("**INCOMPLETE: 3 trials missing.")
    assert "INCOMPLETE: 3 trials missing." in (tmp_path / "scored" / "report.html").read_text()


def test_a_planned_sample_without_any_trial_is_named(tmp_path: Path) -> None:
    scores = score_run(records_data(fixture_records()))
    whole = scores["completeness"]
    assert whole["samples_without_trials"] == ["E"]
    assert whole["missing_trials"] == 4 + 2  # E's four, and C's two not recorded
    assert whole["errored_trials"] == 1 and set(whole["samples_affected"]) == {"C", "D", "E"}
    assert scores["complete"] is False


def _unjudged_records() -> list[Any]:
    # B's two warned trials were not judged (the judge failed): only warned trials can be unjudged.
    first = FirstAlert(window=0, entry_index=1, entries=5, offset_s=2.0)
    records = _complete_records()
    for index, record in enumerate(records):
        if isinstance(record, TrialRecord) and record.sample == "B" and record.trial in (0, 1):
            records[index] = record.model_copy(update={"status": "unjudged", "judgement": None, "first_alert": first})
    return records


def test_unjudged_trials_follow_an_explicit_policy_recorded_in_the_scores(tmp_path: Path) -> None:
    runs = _write(tmp_path / "runs.jsonl", _unjudged_records())
    assert replay_main(["score", "--runs", str(runs), "--out", str(tmp_path / "excl")]) == 3
    assert replay_main(["score", "--runs", str(runs), "--out", str(tmp_path / "inc"), "--unjudged", "incorrect"]) == 3
    exclude = json.loads((tmp_path / "excl" / "scores.json").read_text())
    incorrect = json.loads((tmp_path / "inc" / "scores.json").read_text())
    # A: 4/4; B: trials 2 and 3 judged incorrect (no warning); trials 0 and 1 unjudged.
    assert (exclude["n_trials"], exclude["accuracy"]) == (6, pytest.approx(4 / 6, abs=1e-6))
    assert (incorrect["n_trials"], incorrect["accuracy"]) == (8, 0.5)
    assert exclude["unjudged_policy"] == "exclude" and incorrect["unjudged_policy"] == "incorrect"
    assert incorrect["completeness"]["unjudged_trials"] == 2
    assert "counted as incorrect in the scores" in incorrect["completeness"]["reasons"][0]
    assert "Unjudged trials policy: incorrect" in (tmp_path / "inc" / "report.md").read_text()


def test_a_run_where_every_sample_was_skipped_exits_3(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    # The development subset ships no PNGs: an image run skips every sample and scores nothing.
    with ScriptedOpenAIServer() as model:
        assert _run(tmp_path, model, judge_server, PASBENCH, tmp_path / "out", "--modality", "image",
                    "--limit", "3", "--trials", "1", "--no-safe-controls") == 3
    assert "INCOMPLETE: no risk sample was scored (3 skipped)" in capsys.readouterr().out


def test_a_truncated_record_is_flagged_in_list_and_reports(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    release = load_release(PASBENCH, modality="text")
    truncated = [s.id for s in release.scenarios if s.truncated]
    assert truncated and all("[LOG END]" not in (s.text or "") for s in release.scenarios if s.truncated)
    cut = int(truncated[0].removeprefix("text-"))
    assert replay_main(["pasbench", "--data", str(PASBENCH), "--list", "--modality", "text", "--limit",
                        str(cut + 1), "--no-safe-controls"]) == 0
    rows = {r["id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert "no [LOG END]" in rows[truncated[0]]["truncated"]
    assert "truncated" not in rows["text-0"]
    with ScriptedOpenAIServer(default=reply(DANGER)) as model:
        assert _run(tmp_path, model, judge_server, PASBENCH, tmp_path / "out", "--modality", "text", "--limit",
                    str(cut + 1), "--trials", "1", "--no-safe-controls") == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["completeness"]["truncated_samples"] == [truncated[0]]
    assert "TRUNCATED (no [LOG END]" in (tmp_path / "out" / "report.md").read_text()


# -- 3. false alarms measured fairly ---------------------------------------------------------------------


def _stream_trial(sample: str, trial: int, *, kind: str, windows: int, alerted: list[int]) -> TrialRecord:
    alerts = [{"type": "new" if i == 0 else "update"} for i in range(len(alerted))]
    first = (FirstAlert(window=alerted[0], entry_index=alerted[0], entries=windows, offset_s=0.0)
             if alerted else None)
    judgement = None
    if kind == "risk":
        judgement = JudgementRecord(correct=bool(alerted), reason="fixture", judge="j", kind="llm", approximate=False)
    return TrialRecord(sample=sample, modality="text", kind=kind, trial=trial, protocol="stream",  # type: ignore[arg-type]
                       status="ok", entries=windows, alerts=alerts, first_alert=first, judgement=judgement,
                       usage={"windows_assessed": windows})


def test_per_window_rates_and_the_content_blind_baseline_by_hand() -> None:
    header = RunHeader(protocol="stream", modality="text", trials=1, model={}, judge={"kind": "llm"},
                       planned=["R1", "R2", "S1"])
    # Risk: R1 6 windows, alerts on windows 4 and 5; R2 4 windows, alert on 3. Safe: S1 10 windows, one alert.
    trials = [_stream_trial("R1", 0, kind="risk", windows=6, alerted=[4, 5]),
              _stream_trial("R2", 0, kind="risk", windows=4, alerted=[3]),
              _stream_trial("S1", 0, kind="safe", windows=10, alerted=[7])]
    block = score_run(records_data([header, *trials]))["discrimination"]
    rate = 4 / 20
    assert block["pooled_window_rate"] == pytest.approx(rate)
    assert block["risk"]["window_alert_rate"] == pytest.approx(3 / 10)
    assert block["safe"]["window_alert_rate"] == pytest.approx(1 / 10)
    assert block["risk"]["stream_alert_rate"] == 1.0 and block["safe"]["stream_alert_rate"] == 1.0
    blind_risk = ((1 - (1 - rate) ** 6) + (1 - (1 - rate) ** 4)) / 2
    assert block["risk"]["blind_stream_alert_rate"] == pytest.approx(blind_risk, abs=1e-6)
    assert block["safe"]["blind_stream_alert_rate"] == pytest.approx(1 - (1 - rate) ** 10, abs=1e-6)
    assert block["risk"]["blind_before_last_rate"] == pytest.approx(
        ((1 - (1 - rate) ** 5) + (1 - (1 - rate) ** 3)) / 2, abs=1e-6)
    assert "1 - (1 - r)^n" in block["method"]
    alarms = score_run(records_data([header, *trials]))["false_alarms"]
    assert (alarms["window_rate"], alarms["n_windows"], alarms["n_windows_alerted"]) == (0.1, 10, 1)


def _entries_in(body: dict[str, Any]) -> int:
    content = body["messages"][-1]["content"]
    return (content if isinstance(content, str) else json.dumps(content)).count('"time"')


def test_a_stream_report_from_a_scripted_model_shows_the_content_blind_baseline(
        tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    # This model ignores what it reads: it warns on every window that holds exactly 3 entries.
    blind = lambda body: reply(DANGER if _entries_in(body) == 3 else SAFE)  # noqa: E731
    out = tmp_path / "out"
    with ScriptedOpenAIServer(responder=blind) as model:
        assert _run(tmp_path, model, judge_server, PASBENCH, out, "--protocol", "stream", "--limit", "3",
                    "--trials", "1", "--modality", "text") == 0
    scores = json.loads((out / "scores.json").read_text())
    block = scores["discrimination"]
    trials = _lines(out, "trial")
    windows = sum(t["usage"]["windows_assessed"] for t in trials)
    alerted = sum(1 for t in trials for a in t["alerts"] if a["type"] in ("new", "update"))
    assert alerted == len(trials)  # one alerting window per stream: every stream here has at least 3 entries
    rate = alerted / windows
    assert block["pooled_window_rate"] == pytest.approx(rate, abs=1e-6)
    safe = [t["usage"]["windows_assessed"] for t in trials if t["kind"] == "safe"]
    expected = sum(1 - (1 - rate) ** n for n in safe) / len(safe)
    assert block["safe"]["blind_stream_alert_rate"] == pytest.approx(expected, abs=1e-5)
    report = (out / "report.md").read_text()
    assert "## Discrimination and a content-blind baseline" in report
    assert "content-blind: streams with an alert" in report and "1 - (1 - r)^n" in report
    assert scores["false_alarms"]["n_windows"] == sum(safe)


def test_safe_controls_from_a_release_format_json_file(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    logs = sorted((Path(__file__).resolve().parents[1] / "replay" / "data" / "safe_controls").glob("*.log"))[:2]
    safe = tmp_path / "safe.json"
    safe.write_text(json.dumps([{"input": path.read_text()} for path in logs]))
    out = tmp_path / "out"
    with ScriptedOpenAIServer() as model:
        assert _run(tmp_path, model, judge_server, PASBENCH, out, "--limit", "1", "--trials", "1",
                    "--modality", "text", "--safe-controls", str(safe)) == 0
    safe_trials = [t for t in _lines(out, "trial") if t["kind"] == "safe"]
    assert sorted(t["sample"] for t in safe_trials) == ["safe-0"]  # --limit 1 also limits the safe controls
    assert safe_trials[0]["record"] == content_id({"input": logs[0].read_text()})
    safe.write_text(json.dumps([{"input": logs[0].read_text()}, {"text": "no input field"}]))
    assert replay_main(["pasbench", "--data", str(PASBENCH), "--list", "--safe-controls", str(safe)]) == 1
    assert "safe.json: record 1: field 'input' is missing" in capsys.readouterr().err


# -- 5. the paper preset ------------------------------------------------------------------------------------


def test_the_paper_preset_refuses_options_that_contradict_it() -> None:
    assert resolve(preset="paper", protocol=None, trials=None, image_input=None).image_input == "composite"
    with pytest.raises(ConfigError, match=r"--protocol stream \(the paper: paper\), --trials 4 \(the paper: 16\)"):
        resolve(preset="paper", protocol="stream", trials=4, image_input=None)


def test_the_paper_preset_sends_one_composite_samples_and_uses_the_papers_judge_rule(
        tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    data = image_release(tmp_path / "release", zipped=False)
    with ScriptedOpenAIServer(default=reply(DANGER)) as model:
        assert _run(tmp_path, model, judge_server, data, tmp_path / "out", "--preset", "paper", "--modality",
                    "image", "--no-safe-controls") == 0
        requests = list(model.requests)
    assert len(requests) == 2 * 16
    for body in requests:
        parts = body["messages"][-1]["content"]
        assert sum(1 for part in parts if part["type"] == "image_url") == 1
        assert body["temperature"] == 1.0
    judge_system = judge_server.requests[0]["messages"][0]["content"]
    assert "(1) warns the person to stop or avoid the risky behaviour and (2) gives a sound reason" in judge_system
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert (scores["preset"], scores["image_input"], scores["trials_per_sample"]) == ("paper", "composite", 16)
    assert scores["judge"]["prompt_version"] == "pasbench-judge-paper-v1"
