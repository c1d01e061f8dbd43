"""`monitor replay history` end to end on a synthetic household: labels given over MQTT, Home Assistant's
buttons and the command line; candidates whose differences from the recorded model are known; resume, cache,
damaged history files, camera frames, feedback notes, `replay compare` and `replay score`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from monitor.history.feedback import Feedback, FeedbackStore, missed
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.mqtt import MqttSink
from replay.cli import main as replay_main
from replay.history_log import read_history_log
from tests.support.household import (
    CANDIDATE_CALM_HOB,
    CANDIDATE_WET_FLOOR,
    DAY,
    KNIFE,
    LADDER,
    RECORDED_SCRIPT,
    SAFE,
    START,
    household_settings,
    record_household,
)
from tests.support.mosquitto import Mosquitto, Recorder, publish, retained
from tests.support.openai_server import Action, ScriptedOpenAIServer, reply
from tests.support.paths import REPO
from tests.support.replay_cli import kill_replay_after, run_log_lines

WINDOWS = 185  # a week of the household, each entry its own window
HOB_WINDOWS = 21  # three windows a day hold "hob on low"
WET_START = START + 9 * 3600  # the bathroom episode of day 0: the wet floor at 09:01, grandma on it at 09:02


def candidate_config(tmp_path: Path, script: dict[str, Any], *, name: str = "candidate", extra: str = "") -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(script))
    config = tmp_path / f"{name}.toml"
    config.write_text(f'[model]\nbackend = "scripted"\nmodel = "{name}"\nscript = "{path}"\n{extra}')
    return config


def replay(state: Path, config: Path, out: Path, *args: str) -> int:
    return replay_main(["history", "--from", str(state), "--config", str(config), "--out", str(out),
                        "--no-progress", *args])


def scores(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "scores.json").read_text()))


def label_all(state: Path, *, hob: str = "false_alarm") -> None:
    """Label every alert of the week through the store: the hob ones `hob`, the others helpful."""
    with FeedbackStore(state / "feedback.sqlite3") as store:
        for alert in store.alerts():
            store.add(Feedback(hob if "hob" in alert.hazard else "helpful", alert_id=alert.id, note="on purpose"))
        store.add(missed("bathroom", WET_START, WET_START + 600, note="grandma nearly slipped", now=time.time()))


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A week recorded by the recorded model, with the garage camera's frames (once per module; copy it)."""
    root = tmp_path_factory.mktemp("week")
    settings = household_settings(root / "state", RECORDED_SCRIPT, history={"record_frames": True})

    async def run() -> None:
        (await record_household(settings, camera=True)).close()

    asyncio.run(run())
    return root / "state"


@pytest.fixture
def state(week: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(week, copy)
    return copy


# --------------------------------------------------------------------------- labels by every path, then replay


def _cli(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, timeout=60,
                            check=False, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr


async def test_labels_by_mqtt_home_assistant_and_cli_then_a_candidate_that_fixes_the_false_alarm(
        broker: Mosquitto, tmp_path: Path) -> None:
    """The home labels its week by all three paths while the monitor holds the store; a candidate that no longer
    warns about the hob on low avoids exactly the labelled false alarms, keeps every helpful alert, and differs
    from the recorded model on exactly the hob windows; one that knows wet floors catches the reported miss."""
    state = tmp_path / "state"
    settings = household_settings(state, RECORDED_SCRIPT)
    recorder = await record_household(settings)
    assert recorder.desk is not None
    with FeedbackStore(state / "feedback.sqlite3") as store:
        alerts = store.alerts()
    hob = [a for a in alerts if a.hazard == "unattended hob"]
    ladder = [a for a in alerts if a.hazard == "fall from ladder"]
    assert (len(hob), len(ladder), len(alerts)) == (7, 2, 10)

    mqtt = MqttSettings(host=broker.host, port=broker.port, topic_prefix=f"pm_test/{uuid.uuid4().hex[:8]}",
                        reconnect_min_s=0.05, reconnect_max_s=0.5, close_timeout_s=3.0)
    sink = MqttSink(mqtt, zones=["kitchen", "garage", "bathroom", "hall"], state_dir=state)
    sink.feedback = recorder.desk
    try:
        await sink.start()
        async with Recorder(broker, f"{mqtt.topic_prefix}/available") as rec:
            await rec.wait_topic(f"{mqtt.topic_prefix}/available", b"online")
        # MQTT: the first three hob alerts are false alarms.
        for alert in hob[:3]:
            await publish(broker, f"{mqtt.topic_prefix}/feedback",
                          json.dumps({"alert_id": alert.id, "label": "false_alarm", "note": "we simmer on low"}))
        # Home Assistant: the kitchen's "false alarm" button judges its latest alert (Sunday's hob).
        button = (await retained(broker, f"homeassistant/button/{mqtt.node_id}/kitchen_feedback_false_alarm/config"))
        config = next(iter(button.values())).json()
        await publish(broker, config["command_topic"], config["payload_press"])
        # The command line, while the monitor runs: the ladder was right; the wet floor was missed.
        for alert in ladder:
            await asyncio.to_thread(_cli, "feedback", alert.id, "helpful", "--state", str(state))
        await asyncio.to_thread(_cli, "feedback", "--zone", "bathroom", "--missed", "--from", str(WET_START),
                                "--to", str(WET_START + 600), "--note", "grandma nearly slipped", "--state",
                                str(state))
        await _until(lambda: len(_entries(state)) == 7)
    finally:
        await sink.close()
        recorder.close()
    entries = _entries(state)
    assert sorted(e.via for e in entries) == ["cli", "cli", "cli", "home_assistant", "mqtt", "mqtt", "mqtt"]
    assert next(e for e in entries if e.via == "home_assistant").alert_id == hob[-1].id

    calm = tmp_path / "calm"
    assert await asyncio.to_thread(replay, state, candidate_config(tmp_path, CANDIDATE_CALM_HOB), calm) == 0
    result = scores(calm)
    labels = result["labels"]
    assert result["n_windows"] == WINDOWS and result["n_labels"] == 7
    assert result["coverage"]["windows_rebuilt_differently"] == 0  # each window held what the recorded one held
    assert (labels["false_alarm"]["n"], labels["false_alarm"]["candidate"]["count"],
            labels["false_alarm"]["recorded"]["count"]) == (4, 4, 0)
    assert {d["alert_id"] for d in labels["false_alarm"]["details"]} == {a.id for a in [*hob[:3], hob[-1]]}
    assert (labels["helpful"]["n"], labels["helpful"]["candidate"]["count"], labels["helpful"]["recorded"]["count"]) \
        == (2, 2, 2)
    assert (labels["missed"]["n"], labels["missed"]["candidate"]["count"], labels["missed"]["recorded"]["count"]) \
        == (1, 0, 0)
    disagreements = result["disagreements"]
    assert result["n_disagreements"] == HOB_WINDOWS == len(disagreements)
    assert {d["zone"] for d in disagreements} == {"kitchen"}
    assert all(d["recorded"]["hazard"] == "unattended hob" and not d["candidate"]["warned"] for d in disagreements)
    assert all(any("hob on low" in line for line in d["observations"]) for d in disagreements)
    report = (calm / "report.md").read_text()
    assert "| false alarms avoided | 0/4 (0.0% [0, 49]) | 4/4 (100.0% [51, 100]) |" in report
    assert "Sam sets the hob on low and goes to read" in report and "<svg" in (calm / "report.html").read_text()
    assert {p.name for p in (calm / "plots").iterdir()} == {"labels.svg", "zones.svg", "latency.svg"}

    wet = tmp_path / "wet"
    assert await asyncio.to_thread(replay, state, candidate_config(tmp_path, CANDIDATE_WET_FLOOR, name="wet"), wet) == 0
    caught = scores(wet)["labels"]["missed"]
    assert (caught["candidate"]["count"], caught["recorded"]["count"]) == (1, 0)
    assert caught["details"][0]["candidate_delay_s"] == 120.0  # grandma on the wet floor, two minutes in
    assert scores(wet)["labels"]["false_alarm"]["candidate"]["count"] == 0  # it still warns about the hob

    compared = tmp_path / "compare.md"
    assert await asyncio.to_thread(replay_main, ["compare", str(calm), str(wet), "--out", str(compared)]) == 0
    table = compared.read_text()
    assert "| false alarms avoided | 4/4 (100.0%) | 0/4 (0.0%) |" in table
    assert "| missed hazards caught | 0/1 (0.0%) | 1/1 (100.0%) |" in table


def _entries(state: Path) -> list[Any]:
    with FeedbackStore(state / "feedback.sqlite3") as store:
        return store.entries()


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- resume and cache


def _responder(body: dict[str, Any]) -> Action:
    """The calm-hob candidate behind a real HTTP endpoint, a little slow so a run can be interrupted."""
    text = json.dumps(body["messages"]).lower()
    for word, answer in (("ladder", LADDER), ("big knife", KNIFE)):
        if word in text:
            return reply(answer, delay_s=0.01)
    return reply(SAFE, delay_s=0.01)


def test_a_killed_replay_resumes_and_an_identical_one_is_answered_from_the_cache(state: Path, tmp_path: Path) -> None:
    """As with PaSBench: a killed run resumes without asking again for finished segments, and an identical
    re-run makes no model call at all and scores the same."""
    label_all(state)
    out = tmp_path / "out"
    with ScriptedOpenAIServer(model="calm-vlm", responder=_responder) as server:
        config = tmp_path / "openai.toml"
        config.write_text(f'[model]\nbackend = "openai"\nbase_url = "{server.base_url}"\nmodel = "calm-vlm"\n'
                          "max_retries = 0\nconcurrency = 1\n")
        args = ["history", "--from", str(state), "--config", str(config), "--out", str(out), "--no-progress"]
        kill_replay_after(args, out / "runs.jsonl", kind="segment", count=4, timeout_s=120)
        first_calls = server.calls
        finished = {s["id"]: s for s in run_log_lines(out / "runs.jsonl", "segment") if s["status"] == "ok"}
        assert 4 <= len(finished) < 24, "the run must have been interrupted mid-way"
        finished_prompts = {json.dumps(_user(body)) for body in server.requests[:first_calls]
                            if _segment_of(body) in finished}

        assert replay_main(args) == 0
        resumed = server.requests[first_calls:]
        assert not finished_prompts & {json.dumps(_user(body)) for body in resumed}
        assert len(resumed) <= WINDOWS - sum(len(s["windows"]) for s in finished.values())
        first = scores(out)

        calls = server.calls
        assert replay_main(args) == 0  # identical: everything is done
        again = tmp_path / "again"
        assert replay_main(["history", "--from", str(state), "--config", str(config), "--out", str(again),
                            "--cache", str(out / "cache.jsonl"), "--no-progress"]) == 0
        assert server.calls == calls  # a fresh run folder, every answer from the cache
    run = read_history_log(out / "runs.jsonl")
    assert [h.resumed for h in run.headers] == [False, True, True]
    assert len(run.segments) == 24 and all(s.status == "ok" for s in run.segments)
    assert max(sum(1 for line in run.lines if line.id == s.id) for s in run.segments) == 1  # none recorded twice
    assert first["labels"]["false_alarm"]["candidate"]["count"] == 7
    second = scores(again)
    assert second["labels"] == first["labels"] and second["agreement"] == first["agreement"]
    assert second["usage"]["cached_calls"] == second["usage"]["calls"] == WINDOWS


def _user(body: dict[str, Any]) -> Any:
    return body["messages"][-1]["content"]


def _segment_of(body: dict[str, Any]) -> str:
    """The segment (zone/day) of a request: its zone tag and the day of its newest observation."""
    text = json.dumps(_user(body))
    zone = text.split("zone=\\\"", 1)[1].split("\\\"", 1)[0]
    day = text.rsplit("\\\"time\\\": \\\"", 1)[1][:10]
    return f"{zone}/{day}"


# --------------------------------------------------------------------------- damaged history files


def test_a_corrupt_line_and_a_truncated_file_are_named_and_the_rest_is_replayed(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line that is not a record and a last line cut short are reported with file and line (exit 3); every
    other window is replayed and scored."""
    history = state / "history"
    tuesday, saturday = history / "2026-01-06.jsonl", history / "2026-01-10.jsonl"
    lines = tuesday.read_text().splitlines(keepends=True)
    lines[2] = "{this is not json\n"
    tuesday.write_text("".join(lines))
    data = saturday.read_bytes()
    saturday.write_bytes(data[:-40])  # the last record loses its end (and its newline)
    last = len(data.decode().splitlines())
    out = tmp_path / "out"
    code = replay(state, candidate_config(tmp_path, CANDIDATE_CALM_HOB), out)
    stderr = capsys.readouterr().err
    assert code == 3
    assert f"error: {tuesday}:3: not valid JSON" in stderr
    assert f"error: {saturday}:{last}: truncated last line" in stderr
    result = scores(out)
    assert result["n_windows"] == WINDOWS - 2
    assert [p.split(": ")[0] for p in result["coverage"]["problems"]] == [f"{tuesday}:3", f"{saturday}:{last}"]
    assert f"{tuesday}:3" in (out / "report.md").read_text()


def test_a_nested_line_is_a_named_rejection_for_replay_and_purge(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A history line of 3,000 nested levels is reported with file, line and reason by `monitor replay history`
    (the rest is replayed), and `monitor history purge` keeps it unread and purges the rest. Before the fix
    both died of `RecursionError`."""
    tuesday = state / "history" / "2026-01-06.jsonl"
    lines = tuesday.read_text().splitlines(keepends=True)
    nested = '{"type": "window", "zone": ' + "[" * 3000 + "]" * 3000 + "}\n"
    lines[2] = nested
    tuesday.write_text("".join(lines))
    code = replay(state, candidate_config(tmp_path, CANDIDATE_CALM_HOB), tmp_path / "out")
    assert code == 3
    assert f"error: {tuesday}:3: nested more than 64 levels deep" in capsys.readouterr().err
    assert scores(tmp_path / "out")["n_windows"] == WINDOWS - 1
    purge = subprocess.run([sys.executable, "-m", "monitor", "history", "purge", "--zone", "kitchen",
                            "--state-dir", str(state)], capture_output=True, text=True, timeout=60, check=False,
                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert purge.returncode == 0, purge.stderr
    assert "Traceback" not in purge.stderr
    assert nested in tuesday.read_text()  # kept as it was, unread
    assert '"zone": "kitchen"' not in tuesday.read_text()


def test_a_missing_history_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pointing at a folder without history files says so and what to check."""
    (tmp_path / "empty").mkdir()
    assert replay_main(["history", "--from", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 1
    assert "no history files (YYYY-MM-DD.jsonl)" in capsys.readouterr().err


# --------------------------------------------------------------------------- frames, notes, scoring again


def _camera_requests(server: ScriptedOpenAIServer) -> list[dict[str, Any]]:
    return [b for b in server.requests if "garage-cam" in json.dumps(_user(b))]


@pytest.mark.parametrize("record_frames", [True, False])
async def test_recorded_frames_are_replayed_as_images(tmp_path: Path, record_frames: bool) -> None:
    """With record_frames on, the candidate sees the garage keyframes again as images; without, the windows
    are replayed from their log entries and the report counts what was missing."""
    settings = household_settings(tmp_path / "state", RECORDED_SCRIPT, history={"record_frames": record_frames})
    (await record_household(settings, days=2, camera=True)).close()
    with ScriptedOpenAIServer(model="vision", responder=_responder) as server:
        config = tmp_path / "vision.toml"
        config.write_text(f'[model]\nbackend = "openai"\nbase_url = "{server.base_url}"\nmodel = "vision"\n'
                          "accepts_images = true\nmax_retries = 0\n")
        out = tmp_path / "out"
        assert await asyncio.to_thread(replay, tmp_path / "state", config, out) == 0
        garage = _camera_requests(server)
        images = [p for b in server.requests for p in _user(b) if isinstance(_user(b), list)
                  and p.get("type") == "image_url"]
    coverage = scores(out)["coverage"]
    if record_frames:
        assert garage and len(images) >= len(garage) and coverage["windows_missing_frames"] == 0
    else:
        assert not images and coverage["windows_missing_frames"] == 4  # the garage's windows of Tuesday
        assert "Windows replayed without some camera frames" in (out / "report.md").read_text()


def test_feedback_notes_in_a_replay_reach_the_candidate_and_are_measured(state: Path, tmp_path: Path) -> None:
    """With feedback_context on, each window gets the notes about earlier events of its zone (never its own
    alert). A scripted model that heeds them is measured like any candidate: Monday's hob still warns (no
    earlier note), the other days' do not, and the knife alert is lost too (it heeded the hob notes):
    the report shows the gain and the harm. This proves the measurement, not that notes help a real model."""
    label_all(state)
    heeds = {"rules": [{"match": "an earlier warning here was a false alarm", "reply": SAFE},
                       *RECORDED_SCRIPT["rules"]], "default": SAFE}
    config = candidate_config(tmp_path, heeds, name="heeds",
                              extra="[assessment.feedback_context]\nenabled = true\n")
    out = tmp_path / "out"
    assert replay(state, config, out) == 0
    result = scores(out)
    labels = result["labels"]
    assert result["strategy_label"] == "single+feedback"
    assert (labels["false_alarm"]["candidate"]["count"], labels["false_alarm"]["n"]) == (6, 7)
    monday = next(d for d in labels["false_alarm"]["details"] if d["at"] < START + DAY)
    assert monday["candidate"] is False  # no note before Monday's first hob alert
    assert (labels["helpful"]["candidate"]["count"], labels["helpful"]["n"]) == (2, 3)  # the knife was lost


def test_score_again_from_the_run_log_alone(state: Path, tmp_path: Path) -> None:
    """`replay score` on a history run log re-scores it (labels from the snapshot) without calling a model."""
    label_all(state)
    out = tmp_path / "out"
    assert replay(state, candidate_config(tmp_path, CANDIDATE_CALM_HOB), out) == 0
    rescored = tmp_path / "rescored"
    assert replay_main(["score", "--runs", str(out / "runs.jsonl"), "--out", str(rescored)]) == 0
    assert scores(rescored) == scores(out)
    since = replay(state, candidate_config(tmp_path, CANDIDATE_CALM_HOB), tmp_path / "since", "--since",
                   str(START + 5 * DAY), "--zone", "kitchen")
    assert since == 0 and {z for z in scores(tmp_path / "since")["by_zone"]} == {"kitchen"}
    assert scores(tmp_path / "since")["labels"]["false_alarm"]["n"] == 2  # Saturday's and Sunday's hob
