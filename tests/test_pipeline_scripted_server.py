"""The whole pipeline against a scripted OpenAI-compatible server on 127.0.0.1.

Sources emit one entry per window (each waits until the previous window was assessed),
so each scripted reply maps to one window.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from monitor.alerts import AlertManager, AlertSettings
from monitor.assess.single import SingleCall
from monitor.backends.openai_compat import OpenAICompatBackend
from monitor.backends.settings import ModelSettings
from monitor.pipeline import Pipeline
from monitor.sinks import running as sinks_running
from monitor.sinks.local import JsonlSink, StdoutSink
from monitor.stats import Stats
from monitor.windows import WindowSettings
from replay.streams import TrialRecorder
from tests.support.openai_server import DANGER, SAFE, Action, ScriptedOpenAIServer, reply
from tests.support.sources import ListSource, entry


def make_pipeline(server: ScriptedOpenAIServer, texts: list[str], tmp_path: Path,
                  **model: object) -> tuple[Pipeline, OpenAICompatBackend, io.StringIO, Path]:
    settings = ModelSettings.model_validate({
        "backend": "openai", "base_url": server.base_url, "attempt_timeout_s": 0.5, "total_timeout_s": 3.0,
        "max_retries": 1, "backoff_base_s": 0.01, **model,
    })
    backend = OpenAICompatBackend(settings)
    out = io.StringIO()
    jsonl = tmp_path / "alerts.jsonl"
    recorder = TrialRecorder()
    emitted = {"n": 0}

    async def one_window_at_a_time() -> None:
        await recorder.wait_settled(emitted["n"])
        emitted["n"] += 1

    source = ListSource("kitchen", [entry(t) for t in texts], gate=one_window_at_a_time)
    pipeline = Pipeline(
        sources=[(source, "kitchen")], assessor=SingleCall(backend),
        sinks=[StdoutSink(stream=out, color=False), JsonlSink(jsonl)],
        windows=WindowSettings(min_interval_s=0.0), alerts=AlertManager(AlertSettings(dedup_ttl_s=60)),
        observers=[Stats(), recorder], exit_when_sources_end=True,
    )
    return pipeline, backend, out, jsonl


async def run(pipeline: Pipeline, backend: OpenAICompatBackend) -> None:
    await backend.start()
    try:
        async with asyncio.timeout(30), sinks_running(pipeline.sinks):
            await pipeline.run()
    finally:
        await backend.close()


async def test_danger_reply_becomes_alert_on_stdout_and_jsonl(openai_server: ScriptedOpenAIServer,
                                                               tmp_path: Path) -> None:
    openai_server.push(reply(DANGER))
    pipeline, backend, out, jsonl = make_pipeline(openai_server, ["pours oil, walks away"], tmp_path)
    await run(pipeline, backend)
    text = out.getvalue()
    assert "CRITICAL" in text and "hot oil fire" in text and "Turn off the burner now." in text
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["type"] == "new"
    assert lines[0]["hazard"] == "hot oil fire"
    assert lines[0]["zone"] == "kitchen"
    assert lines[0]["model"] == "scripted-vlm"
    assert lines[0]["tokens"] == {"prompt": 42, "completion": 17}
    # the prompt quoted the observation as data
    user = openai_server.requests[0]["messages"][1]["content"]
    assert "<observations" in user and "pours oil, walks away" in user


async def test_failures_are_counted_and_the_next_window_is_still_assessed(
        openai_server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    openai_server.push(
        reply("this is not json"),                        # window 1: malformed, counted, not retried
        Action(status=500), Action(status=500),           # window 2: 500 twice = retries exhausted
        reply(DANGER, delay_s=1.0), reply(DANGER, delay_s=1.0),  # window 3: attempt timeouts
        reply(DANGER),                                    # window 4: a real warning
    )
    pipeline, backend, _, jsonl = make_pipeline(openai_server, ["a", "b", "c", "d"], tmp_path)
    await run(pipeline, backend)
    stats, recorder = pipeline.observers.observers
    assert isinstance(stats, Stats) and isinstance(recorder, TrialRecorder)
    assert stats.model_errors == {"malformed": 1, "transient": 2}
    assert stats.windows_assessed == 1
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [e["type"] for e in events] == ["new"]
    assert openai_server.calls == 6
    failures = [s.error for s in recorder.settled if s.error is not None]
    assert "not JSON" in str(failures[0])
    assert getattr(failures[0], "raw", None) == "this is not json"


async def test_a_reply_cut_off_at_the_token_limit_is_malformed_and_says_to_raise_max_tokens(
        openai_server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    cut = json.dumps(DANGER)[:70]
    openai_server.push(reply(cut, finish_reason="length"), reply("this is not json"))
    pipeline, backend, _, _ = make_pipeline(openai_server, ["a", "b"], tmp_path)
    await run(pipeline, backend)
    _, recorder = pipeline.observers.observers
    assert isinstance(recorder, TrialRecorder)
    failures = [str(s.error) for s in recorder.settled if s.error is not None]
    assert len(failures) == 2
    assert "cut off at the token limit" in failures[0] and "model.max_tokens" in failures[0]
    assert "not JSON" in failures[1] and "token limit" not in failures[1]  # a stop is not blamed on the limit


async def test_second_identical_warning_updates_instead_of_duplicating(
        openai_server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    reworded = {**DANGER, "hazard": "Hot-oil fire", "evidence": ["wet potatoes over the pan"]}
    openai_server.push(reply(DANGER), reply(SAFE), reply(reworded))
    pipeline, backend, _, jsonl = make_pipeline(openai_server, ["a", "b", "c"], tmp_path)
    await run(pipeline, backend)
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [e["type"] for e in events] == ["new", "update"]
    assert events[0]["id"] == events[1]["id"]
    assert events[1]["message_id"] != events[0]["message_id"]
    assert events[1]["evidence"] == ["dense smoke above the pan", "wet potatoes over the pan"]


async def test_different_hazard_opens_a_second_alert(openai_server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    other = {**DANGER, "hazard": "slippery wet floor", "severity": "warning"}
    openai_server.push(reply(DANGER), reply(other))
    pipeline, backend, _, jsonl = make_pipeline(openai_server, ["a", "b"], tmp_path)
    await run(pipeline, backend)
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [e["type"] for e in events] == ["new", "new"]
    assert events[0]["id"] != events[1]["id"]
