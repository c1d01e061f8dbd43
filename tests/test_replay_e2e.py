"""Replay end to end on ../shared/pasbench with a scripted OpenAI-compatible model server and a
scripted judge server on 127.0.0.1 (real sockets, the real `openai` client on our side)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replay.cli import main as replay_main
from replay.pasbench import load_release
from replay.runlog import read_run_log
from tests.support.openai_server import DANGER, SAFE, Action, ScriptedOpenAIServer, reply
from tests.support.paths import PASBENCH


def _user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else json.dumps(content)


def _judge_says(body: dict[str, Any]) -> Action:
    # Deterministic but mixed verdicts: correct when the reference text has an even length.
    text = _user_text(body)
    reference = text.split("<reference>")[1].split("</reference>")[0]
    return reply({"correct": len(reference) % 2 == 0, "reason": "scripted judgement"})


@pytest.fixture
def judge_server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(model="scripted-judge", responder=_judge_says) as server:
        yield server


def _config(tmp_path: Path, server: ScriptedOpenAIServer, **model: Any) -> Path:
    settings = {"backend": "openai", "base_url": server.base_url, "model": "scripted-vlm", "accepts_images": True,
                "concurrency": 4, "max_retries": 0, "attempt_timeout_s": 10.0, "total_timeout_s": 20.0, **model}
    lines = ["[model]", *(f"{key} = {json.dumps(value)}" for key, value in settings.items())]
    path = tmp_path / "monitor.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(tmp_path: Path, model: ScriptedOpenAIServer, judge: ScriptedOpenAIServer, out: Path, *args: str) -> int:
    return replay_main(["pasbench", "--data", str(PASBENCH), "--out", str(out), "--config",
                        str(_config(tmp_path, model)), "--judge-base-url", judge.base_url,
                        "--judge-model", "scripted-judge", "--no-progress", *args])


def _trial_lines(out: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return [line for line in lines if line["type"] == "trial"]


def test_paper_protocol_end_to_end_with_scripted_model_and_judge_servers(
        tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    kitchen_danger = lambda body: reply(DANGER if "Kitchen" in _user_text(body) else SAFE)  # noqa: E731
    out = tmp_path / "out"
    with ScriptedOpenAIServer(responder=kitchen_danger) as model:
        assert _run(tmp_path, model, judge_server, out, "--limit", "3", "--trials", "2") == 0
        model_calls, judge_calls = model.calls, judge_server.calls
        requests = list(model.requests)
        # An identical re-run resumes: nothing left to do, no model or judge call.
        assert _run(tmp_path, model, judge_server, out, "--limit", "3", "--trials", "2") == 0
        assert (model.calls, judge_server.calls) == (model_calls, judge_calls)

    trials = _trial_lines(out)
    assert len(trials) == 12  # 3 text samples + 3 safe controls, 2 trials each; the 3 images are skipped
    assert model_calls == 12
    for trial in trials:
        assert trial["status"] == "ok" and trial["protocol"] == "paper"
        assert trial["entries"] == 1 and len(trial["windows"]) == 1 and trial["windows"][0]["entries"] == [0]
        assert len(trial["calls"]) == 1 and trial["calls"][0]["seed"] == trial["trial"]
        assert trial["timings"]["monitor_s"] > 0 and trial["usage"]["prompt_tokens"] == 42
    assert sorted({r["seed"] for r in requests}) == [0, 1]

    # The whole log is in the one prompt; the benchmark's answers never are.
    release = load_release(PASBENCH, modality="text")
    prompts = [_user_text(r) + r["messages"][0]["content"] for r in requests]
    for scenario in release.scenarios[:3]:
        assert scenario.reference is not None and scenario.text is not None
        assert any(json.dumps(scenario.text.strip(), ensure_ascii=False)[1:200] in p for p in prompts)
        for prompt in prompts:
            for answer in (scenario.reference.reason, scenario.reference.knowledge):
                assert answer not in prompt and json.dumps(answer, ensure_ascii=False)[1:-1] not in prompt

    risk = [t for t in trials if t["kind"] == "risk"]
    warned_samples = {t["sample"] for t in risk if t["first_alert"] is not None}
    # Both trials of a sample give the same warning: one judge call per warned sample, the rest cached.
    assert judge_calls == len(warned_samples)
    for trial in risk:
        judgement = trial["judgement"]
        if trial["first_alert"] is None:
            assert (judgement["kind"], judgement["correct"], trial["response"]) == ("rule", False, "no warning")
        else:
            assert judgement["judge"] == "scripted-judge" and judgement["kind"] == "llm"
            assert "hot oil fire" in trial["response"]
    judge_prompt = _user_text(judge_server.requests[0])
    assert "<reference>" in judge_prompt and "Hazard: hot oil fire" in judge_prompt

    scores = json.loads((out / "scores.json").read_text())
    correct = sum(t["judgement"]["correct"] for t in risk)
    assert scores["accuracy"] == pytest.approx(correct / 6, abs=1e-6)
    assert (scores["n_samples"], scores["n_trials"], scores["protocol"]) == (3, 6, "paper")
    assert scores["judge"]["model"] == "scripted-judge" and scores["judge"]["approximate"] is False
    assert scores["coverage"]["skipped"]["count"] == 3
    assert scores["false_alarms"]["n_trials"] == 6
    assert scores["usage"]["calls"] == 12 and scores["usage"]["cached_calls"] == 0
    assert (out / "report.md").is_file() and "<svg" in (out / "report.html").read_text()

    # Re-scoring the run log reproduces scores.json without any model.
    assert replay_main(["score", "--runs", str(out / "runs.jsonl"), "--out", str(tmp_path / "rescored")]) == 0
    assert json.loads((tmp_path / "rescored" / "scores.json").read_text()) == scores


def _entries_in(body: dict[str, Any]) -> int:
    return _user_text(body).count('"time"')


def test_stream_protocol_warns_at_the_entry_where_the_model_first_sees_danger(
        tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    third_entry_danger = lambda body: reply(DANGER if _entries_in(body) >= 3 else SAFE)  # noqa: E731
    out = tmp_path / "out"
    with ScriptedOpenAIServer(responder=third_entry_danger) as model:
        code = _run(tmp_path, model, judge_server, out, "--protocol", "stream", "--limit", "2", "--trials", "2",
                    "--modality", "text", "--no-safe-controls")
        assert code == 0
        calls = model.calls
    trials = _trial_lines(out)
    assert len(trials) == 4
    for trial in trials:
        entries = trial["entries"]
        # Lockstep: one window per entry, each ending at that entry, none dropped.
        assert [w["last_entry"] for w in trial["windows"]] == list(range(entries))
        assert trial["usage"]["windows_dropped"] == 0
        first = trial["first_alert"]
        assert first["entry_index"] == 2 and first["entries"] == entries
        assert first["offset_s"] == 4.0 and first["clock"]
        # Later danger verdicts update the open alert instead of raising new ones.
        assert [a["type"] for a in trial["alerts"]] == ["new"] + ["update"] * (entries - 3)
    assert calls == sum(t["entries"] for t in trials)
    scores = json.loads((out / "scores.json").read_text())
    assert scores["protocol"] == "stream"
    assert scores["stream"]["first_warning"]["entry_index"]["median"] == 2.0
    assert scores["stream"]["warned_before_last"] == 1.0
    assert scores["false_alarms"] is None


def test_a_failed_call_marks_the_trial_and_a_rerun_retries_only_it(
        tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    out = tmp_path / "out"
    args = ("--limit", "1", "--trials", "3", "--modality", "text", "--no-safe-controls", "--concurrency", "1")
    with ScriptedOpenAIServer(default=reply(DANGER)) as model:
        model.push(reply(DANGER), Action(status=503))
        assert _run(tmp_path, model, judge_server, out, *args) == 3
        statuses = sorted(t["status"] for t in _trial_lines(out))
        assert statuses == ["error", "ok", "ok"]
        assert model.calls == 3
        assert _run(tmp_path, model, judge_server, out, *args) == 0
        assert model.calls == 4  # only the failed trial was asked again
    data = read_run_log(out / "runs.jsonl")
    assert len(data.trials) == 3 and all(t.status == "ok" for t in data.trials)
    assert json.loads((out / "scores.json").read_text())["coverage"]["errored_trials"] == 0


def test_a_fatal_model_error_stops_the_run_with_a_clear_message(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    with ScriptedOpenAIServer(default=Action(status=401)) as model:
        code = _run(tmp_path, model, judge_server, tmp_path / "out", "--limit", "2", "--trials", "4",
                    "--modality", "text", "--no-safe-controls")
    assert code == 1
    err = capsys.readouterr().err
    assert "model 'scripted-vlm'" in err and "HTTP 401" in err
    assert judge_server.calls == 0


def test_resuming_with_other_options_is_refused(tmp_path: Path, judge_server: ScriptedOpenAIServer,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    with ScriptedOpenAIServer() as model:
        common = ("--limit", "1", "--modality", "text", "--no-safe-controls")
        assert _run(tmp_path, model, judge_server, out, "--trials", "1", *common) == 0
        assert _run(tmp_path, model, judge_server, out, "--trials", "2", *common) == 1
    assert "trials per sample: 1 there, 2 now" in capsys.readouterr().err
