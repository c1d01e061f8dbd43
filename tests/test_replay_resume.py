"""An interrupted replay (a subprocess killed mid-way) resumes without asking the model again for
finished trials; calls are counted at a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from replay.cli import main as replay_main
from replay.runlog import read_run_log
from tests.support.openai_server import DANGER, ScriptedOpenAIServer, reply
from tests.support.paths import PASBENCH
from tests.support.replay_cli import kill_replay_after, run_log_lines


def _request_id(messages: list[dict[str, Any]], seed: int | None) -> str:
    return json.dumps([messages, seed], sort_keys=True)


def test_killed_run_resumes_without_recalling_finished_trials(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ScriptedOpenAIServer(default=reply(DANGER, delay_s=0.4)) as model, \
            ScriptedOpenAIServer(model="scripted-judge", default=reply({"correct": True, "reason": "ok"})) as judge:
        config = tmp_path / "monitor.toml"
        config.write_text(f'[model]\nbackend = "openai"\nbase_url = "{model.base_url}"\nmodel = "scripted-vlm"\n'
                          "max_retries = 0\n")
        args = ["pasbench", "--data", str(PASBENCH), "--out", str(out), "--config", str(config),
                "--judge-base-url", judge.base_url, "--judge-model", "scripted-judge", "--limit", "2",
                "--trials", "4", "--modality", "text", "--no-safe-controls", "--concurrency", "2", "--no-progress"]
        kill_replay_after(args, out / "runs.jsonl", kind="trial", count=2, timeout_s=60)
        first_run_calls = model.calls
        trials = run_log_lines(out / "runs.jsonl", "trial")
        finished = {(t["sample"], t["trial"]): t for t in trials if t["status"] == "ok"}
        assert 2 <= len(finished) < 8, "the run must have been interrupted mid-way"
        finished_requests = {_request_id(c["request"], c["seed"]) for t in finished.values() for c in t["calls"]}

        assert replay_main(args) == 0
        resumed_requests = [_request_id(r["messages"], r.get("seed")) for r in model.requests[first_run_calls:]]

    # The model was asked again only for unfinished trials, never for a finished one.
    assert not finished_requests & set(resumed_requests)
    assert len(resumed_requests) <= 8 - len(finished)
    data = read_run_log(out / "runs.jsonl")
    assert len(data.trials) == 8 and all(t.status == "ok" for t in data.trials)
    assert max(Counter(t.pair for t in data.lines).values()) == 1  # no trial recorded twice
    assert [h.resumed for h in data.headers] == [False, True]
    scores = json.loads((out / "scores.json").read_text())
    assert (scores["n_trials"], scores["accuracy"]) == (8, 1.0)
