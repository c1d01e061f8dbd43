"""Assessment strategies through replay, end to end: vote, verify and temporal against a scripted
OpenAI-compatible model server and a scripted judge server on 127.0.0.1; `replay compare` and
`replay tune` on their runs (shared cache, false-alarm budget, recommended config)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from monitor.assess.settings import AssessmentSettings
from monitor.core.errors import ConfigError
from monitor.settings import load_settings
from replay.cli import main as replay_main
from replay.compare import ScoredRun, load_scores, render_compare_markdown
from replay.pasbench import load_release
from replay.tune import Candidate, apply_param, assessment_toml, parse_param, recommend
from tests.support.openai_server import DANGER, SAFE, Action, ScriptedOpenAIServer, reply
from tests.support.paths import PASBENCH

SEED_STRIDE = 1_000_003  # replay/cache.py trial_seed: trial t, sample seed s -> t * stride + s
COMMON = ("--limit", "2", "--trials", "2", "--modality", "text", "--no-progress")


def _user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else json.dumps(content)


_RISK_SNIPPETS = [json.dumps(s.text.strip(), ensure_ascii=False)[1:120]
                  for s in load_release(PASBENCH, modality="text").scenarios[:2] if s.text is not None]


def _is_risk(body: dict[str, Any]) -> bool:
    text = _user_text(body)
    return any(snippet in text for snippet in _RISK_SNIPPETS)


def _assessment_or_check(body: dict[str, Any]) -> Action:
    """The scripted model: answers single/vote, propose and verify requests by their system prompt.

    Vote sample 0 always sees danger (a false alarm on safe logs unless more samples must agree),
    sample 1 sees danger on risk samples only, sample 2 never. Propose lists two candidates on risk
    samples (one real, one not) and one on safe logs; verify supports only the real one.
    """
    system = body["messages"][0]["content"]
    risk = _is_risk(body)
    if "list every way" in system:  # monitor.strategies.PROPOSE_PROMPT
        if risk:
            return reply({"candidates": [
                {"hazard": "hot oil fire", "behaviour": "wet food into smoking oil", "why": "it ignites"},
                {"hazard": "tripping on a rug", "behaviour": "walking", "why": "falls"}]})
        return reply({"candidates": [{"hazard": "slippery floor", "behaviour": "walking", "why": "falls"}]})
    if "checking ONE candidate risk" in system:  # monitor.strategies.VERIFY_PROMPT
        supported = risk and "hot oil fire" in system
        return reply({"supported": supported, "severity": "critical", "reason": "The log shows it.",
                      "advice": "Stop now.", "evidence": ["entry"], "confidence": 0.9})
    sample = int(body.get("seed") or 0) % SEED_STRIDE
    return reply(DANGER if sample == 0 or (sample == 1 and risk) else SAFE)


@pytest.fixture
def judge_server() -> Iterator[ScriptedOpenAIServer]:
    always = reply({"correct": True, "reason": "scripted judgement"})
    with ScriptedOpenAIServer(model="scripted-judge", default=always) as server:
        yield server


def _config(tmp_path: Path, server: ScriptedOpenAIServer, assessment: str, name: str = "monitor.toml") -> Path:
    settings = {"backend": "openai", "base_url": server.base_url, "model": "scripted-llm", "concurrency": 8,
                "max_retries": 0, "attempt_timeout_s": 10.0, "total_timeout_s": 20.0}
    lines = ["[model]", *(f"{key} = {json.dumps(value)}" for key, value in settings.items()), "", assessment]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _judge_args(judge: ScriptedOpenAIServer) -> tuple[str, ...]:
    return ("--judge-base-url", judge.base_url, "--judge-model", "scripted-judge")


def _replay(config: Path, judge: ScriptedOpenAIServer, out: Path, *args: str) -> int:
    return replay_main(["pasbench", "--data", str(PASBENCH), "--out", str(out), "--config", str(config),
                        *_judge_args(judge), *COMMON, *args])


def _lines(out: Path, kind: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return [line for line in lines if line["type"] == kind]


def _scores(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "scores.json").read_text())
    return result


@dataclass
class Runs:
    vote: Path
    verify: Path
    vote_calls: int
    verify_calls: int


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """One vote and one verify run (paper protocol, 2 risk + 2 safe samples x 2 trials)."""
    saved = structlog.get_config()
    tmp = tmp_path_factory.mktemp("strategies")
    always = reply({"correct": True, "reason": "scripted judgement"})
    with (ScriptedOpenAIServer(responder=_assessment_or_check) as model,
          ScriptedOpenAIServer(model="scripted-judge", default=always) as judge):
        vote_config = _config(tmp, model, '[assessment]\nstrategy = "vote"\n', "vote.toml")
        assert _replay(vote_config, judge, tmp / "vote") == 0
        vote_calls = model.calls
        verify_config = _config(tmp, model, '[assessment]\nstrategy = "verify"\n', "verify.toml")
        assert _replay(verify_config, judge, tmp / "verify") == 0
        verify_calls = model.calls - vote_calls
        # Resuming a run with another strategy is refused, like another model.
        other = _config(tmp, model, '[assessment]\nstrategy = "vote"\n[assessment.vote]\nm = 1\n', "m1.toml")
        assert _replay(other, judge, tmp / "vote") == 1
        assert model.calls == vote_calls + verify_calls
    structlog.configure(**saved)
    yield Runs(tmp / "vote", tmp / "verify", vote_calls, verify_calls)


def test_vote_records_its_strategy_and_costs_k_calls_per_window(runs: Runs) -> None:
    header = _lines(runs.vote, "run")[0]
    assert header["strategy_label"] == "vote(2/3)"
    assert header["strategy"]["strategy"] == "vote" and header["strategy"]["vote"]["k"] == 3
    trials = _lines(runs.vote, "trial")
    assert len(trials) == 8 and runs.vote_calls == 8 * 3
    for trial in trials:
        assert trial["status"] == "ok" and trial["strategy"] == "vote(2/3)"
        assert len(trial["calls"]) == trial["usage"]["calls"] == 3  # one window, k = 3 samples
        assert sorted(c["seed"] % SEED_STRIDE for c in trial["calls"]) == [0, 1, 2]
        assert trial["windows"][0]["strategy"] == "vote(2/3)"
        # 2 of 3 samples agree on risk logs; only 1 of 3 on safe ones.
        assert (trial["first_alert"] is not None) == (trial["kind"] == "risk")
    scores = _scores(runs.vote)
    assert scores["strategy_label"] == "vote(2/3)" and scores["strategy"] == header["strategy"]
    assert scores["calls_per_sample"] == 3.0 and scores["tokens_per_sample"] == 3 * (42 + 17)
    assert scores["robustness"] == 1.0 and scores["false_alarms"]["rate"] == 0.0
    assert "Strategy: `vote(2/3)`" in (runs.vote / "report.md").read_text()


def test_verify_costs_one_propose_plus_one_call_per_candidate(runs: Runs) -> None:
    assert _lines(runs.verify, "run")[0]["strategy_label"] == "verify"
    trials = _lines(runs.verify, "trial")
    assert len(trials) == 8
    for trial in trials:
        assert trial["strategy"] == "verify"
        candidates = 2 if trial["kind"] == "risk" else 1
        assert trial["usage"]["calls"] == 1 + candidates
        assert sorted(c["tag"] for c in trial["calls"]) == ["propose"] + ["verify"] * candidates
        if trial["kind"] == "risk":  # only the supported candidate warns
            assert trial["first_alert"]["hazard"] == "hot oil fire"
        else:
            assert trial["first_alert"] is None
    assert runs.verify_calls == 4 * 3 + 4 * 2
    scores = _scores(runs.verify)
    assert scores["strategy_label"] == "verify" and scores["calls_per_sample"] == 3.0
    assert scores["false_alarms"]["rate"] == 0.0


def test_compare_puts_runs_side_by_side(runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "cmp" / "compare.md"
    assert replay_main(["compare", str(runs.vote), str(runs.verify), "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    table = target.read_text()
    assert table in printed or table.strip() in printed
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ")}
    assert rows[""] == ["vote", "verify"]
    assert rows["strategy"] == ["vote(2/3)", "verify"]
    assert rows["complete"] == ["yes", "yes"]
    assert rows["protocol"] == ["paper", "paper"]
    assert rows["model"] == ["scripted-llm (openai)"] * 2 and rows["judge"] == ["scripted-judge"] * 2
    assert rows["calls per sample"] == ["3", "3"] and rows["tokens per sample"] == ["177", "177"]
    assert rows["Robustness [95% CI]"][0].startswith("100.0% [")
    assert rows["false alarms, safe controls [95% CI]"][0].startswith("0.0% [")
    assert rows["stream: warned before last entry"] == ["n/a", "n/a"]
    assert "<table>" in target.with_suffix(".html").read_text()


def test_compare_names_a_folder_without_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main(["compare", str(tmp_path)]) == 1
    assert "scores.json: no scores" in capsys.readouterr().err


def _danger_from_third_entry(body: dict[str, Any]) -> Action:
    return reply(DANGER if _user_text(body).count('"time"') >= 3 else SAFE)


def test_temporal_accumulates_over_stream_windows(tmp_path: Path, judge_server: ScriptedOpenAIServer) -> None:
    out = tmp_path / "temporal"
    with ScriptedOpenAIServer(responder=_danger_from_third_entry) as model:
        config = _config(tmp_path, model, '[assessment]\nstrategy = "temporal"\n'
                                          '[assessment.temporal]\ninner = "single"\ndecay = 0.6\nthreshold = 1.0\n')
        assert _replay(config, judge_server, out, "--protocol", "stream", "--no-safe-controls") == 0
        calls = model.calls
    trials = _lines(out, "trial")
    assert len(trials) == 4 and calls == sum(t["entries"] for t in trials)
    for trial in trials:
        assert trial["strategy"] == "temporal(single)" and trial["usage"]["calls"] == trial["entries"]
        # Danger from entry 2 on (0.9 evidence); it reaches the threshold 1.0 one window later.
        assert trial["first_alert"]["entry_index"] == 3
        assert trial["windows"][2]["verdict"]["danger"] is False
    scores = _scores(out)
    assert scores["strategy_label"] == "temporal(single)" and scores["protocol"] == "stream"
    assert scores["stream"]["first_warning"]["entry_index"]["mean"] == 3.0
    assert scores["calls_per_sample"] == pytest.approx((6 + 5) / 2)
    rows = render_compare_markdown([load_scores(out)])
    assert "| stream: mean first-warning entry | 3 |" in rows


def test_tune_reuses_the_cache_and_respects_the_false_alarm_budget(
        tmp_path: Path, judge_server: ScriptedOpenAIServer, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tune"
    with ScriptedOpenAIServer(responder=_assessment_or_check) as model:
        config = _config(tmp_path, model, '[assessment]\nstrategy = "vote"\n')
        code = replay_main(["tune", "--data", str(PASBENCH), "--out", str(out), "--config", str(config),
                            "--param", "vote.m=1,2,3", "--max-false-alarm", "0.05", *_judge_args(judge_server),
                            *COMMON])
        assert code == 0
        # The first setting asks the model (8 trials x 3 samples); the others are served from the cache.
        assert model.calls == 8 * 3
    assert judge_server.calls == 2  # the same two warnings, judged once across settings
    printed = capsys.readouterr().out
    by_m = {m: _scores(out / f"vote.m={m}") for m in (1, 2, 3)}
    assert [by_m[m]["usage"]["cached_calls"] for m in (1, 2, 3)] == [0, 24, 24]
    assert all(by_m[m]["calls_per_sample"] == 3.0 for m in (1, 2, 3))
    assert [by_m[m]["strategy_label"] for m in (1, 2, 3)] == ["vote(1/3)", "vote(2/3)", "vote(3/3)"]
    assert by_m[1]["false_alarms"]["rate"] == 1.0 and by_m[1]["robustness"] == 1.0  # robust but alarming
    assert by_m[2]["false_alarms"]["rate"] == 0.0 and by_m[2]["robustness"] == 1.0
    assert by_m[3]["robustness"] == 0.0  # sample 2 never agrees
    table = (out / "compare.md").read_text()
    assert "| strategy | vote(1/3) | vote(2/3) | vote(3/3) |" in table
    recommended = (out / "recommended.toml").read_text()
    assert "recommended: 2 (vote(2/3))" in printed and recommended in printed
    settings = load_settings(out / "recommended.toml")
    assert settings.assessment.strategy == "vote" and settings.assessment.vote.m == 2
    assert settings.assessment.vote.k == 3


def _scored(name: str, robustness: float | None, rate: float | None, calls: float) -> Candidate:
    alarms = None if rate is None else {"rate": rate}
    run = ScoredRun(name, Path(name), {"robustness": robustness, "false_alarms": alarms, "calls_per_sample": calls})
    return Candidate(name, AssessmentSettings(), run)


def test_recommend_picks_robustness_within_budget_then_fewer_calls() -> None:
    picked = recommend([_scored("a", 0.9, 0.2, 3), _scored("b", 0.7, 0.0, 5), _scored("c", 0.7, 0.04, 3),
                        _scored("d", 0.95, None, 1)], max_false_alarm=0.05)
    assert picked.chosen is not None and picked.chosen.value == "c"
    nothing = recommend([_scored("a", 0.9, 0.2, 3), _scored("b", 1.0, None, 3)], max_false_alarm=0.05)
    assert nothing.chosen is None and "nothing recommended" in nothing.lines[-1]


def test_param_parsing_and_applying() -> None:
    param = parse_param("temporal.threshold=0.8, 1.2,2")
    assert param.values == (0.8, 1.2, 2) and param.folder(1) == "temporal.threshold=1.2"
    applied = apply_param(AssessmentSettings(), "temporal.threshold", 1.2)
    assert applied.assessment.strategy == "temporal" and applied.assessment.temporal.threshold == 1.2
    assert "strategy set to 'temporal'" in applied.notes[0]
    inner = AssessmentSettings.model_validate({"strategy": "temporal", "temporal": {"inner": "vote"}})
    assert apply_param(inner, "vote.m", 1).notes == ()
    assert apply_param(AssessmentSettings(), "strategy", "verify").assessment.strategy == "verify"
    with pytest.raises(ConfigError, match="no key 'n' under vote"):
        apply_param(AssessmentSettings(), "vote.n", 1)
    with pytest.raises(ConfigError, match="must not exceed"):
        apply_param(AssessmentSettings(), "vote.m", 5)
    with pytest.raises(ConfigError, match="expected NAME=V1"):
        parse_param("vote.m")
    text = assessment_toml(apply_param(AssessmentSettings(), "verify.max_candidates", 2).assessment)
    assert text.startswith("[assessment]\nstrategy = \"verify\"\n") and "max_candidates = 2" in text
