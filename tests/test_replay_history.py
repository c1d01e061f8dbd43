"""`monitor replay history` end to end on a synthetic household: labels given over MQTT, Home Assistant's
buttons and the command line; candidates whose differences from the recorded model are known; resume, cache,
damaged history files, camera frames, feedback notes, `replay compare` and `replay score`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
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
            await asyncio.to_thread(_cli, "feedback", alert.id, "helpful", "--state-dir", str(state))
        await asyncio.to_thread(_cli, "feedback", "--zone", "bathroom", "--missed", "--from", str(WET_START),
                                "--to", str(WET_START + 600), "--note", "grandma nearly slipped", "--state-dir",
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
    if "messages" not in body:  # a request cut off when the test kills the replay: nobody reads the answer
        return Action(status=400)
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
    purge = subprocess.run([sys.executable, "-m", "monitor", "history", "purge", "--zone", "kitchen", "--yes",
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


# --------------------------------------------------------------------------- issue 24: round two


def test_a_relative_since_resumes_the_window_it_resolved_first_and_fresh_starts_over(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--since 3650d` run again later is the same window (stored once), not one that moved with the clock;
    another window is refused with dates, never epoch seconds; --fresh sets the old run log aside."""
    config, out = candidate_config(tmp_path, CANDIDATE_CALM_HOB), tmp_path / "out"
    assert replay(state, config, out, "--since", "3650d") == 0
    time.sleep(0.05)  # the clock has moved: a re-resolved `3650d` would be another window
    assert replay(state, config, out, "--since", "3650d") == 0
    headers = read_history_log(out / "runs.jsonl").headers
    assert [h.resumed for h in headers] == [False, True]
    assert headers[1].since == headers[0].since and headers[0].since_text == "3650d"
    capsys.readouterr()
    assert replay(state, config, out, "--since", "3000d") == 1
    err = capsys.readouterr().err
    assert "holds a replay with a different since (" in err and " UTC there, " in err and "--fresh" in err
    assert not re.search(r"\d{9,}\.\d", err), err  # dates, not seconds since the epoch
    assert replay(state, config, out, "--since", "3000d", "--fresh") == 0
    assert "--fresh: the earlier run log was kept as" in capsys.readouterr().err
    assert len(list(out.glob("runs.jsonl.*.old"))) == 1
    assert [h.since_text for h in read_history_log(out / "runs.jsonl").headers] == ["3000d"]


def test_a_missing_feedback_store_is_said(state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in state.glob("feedback.sqlite3*"):
        path.unlink()
    config = candidate_config(tmp_path, CANDIDATE_CALM_HOB)
    assert replay(state, config, tmp_path / "out") == 0
    said = f"no feedback store found at {state / 'feedback.sqlite3'}; labels: 0"
    assert said in capsys.readouterr().err
    assert said in (tmp_path / "out" / "report.md").read_text().splitlines()[7]  # beside the label count
    assert replay(state, config, tmp_path / "other", "--feedback", str(tmp_path / "nowhere.sqlite3")) == 1
    assert f"{tmp_path / 'nowhere.sqlite3'}: no feedback store there" in capsys.readouterr().err


def _private(out: Path) -> list[str]:
    """Every file under `out` that is not 0600 and every folder that is not 0700."""
    wrong = [] if out.stat().st_mode & 0o777 == 0o700 else [f"{out} {oct(out.stat().st_mode & 0o777)}"]
    for path in out.rglob("*"):
        mode = path.stat().st_mode & 0o777
        if mode != (0o700 if path.is_dir() else 0o600):
            wrong.append(f"{path} {oct(mode)}")
    return wrong


def test_history_replay_outputs_are_private_and_their_html_shows_the_plots_under_the_headline(
        state: Path, tmp_path: Path) -> None:
    label_all(state)
    old = os.umask(0o022)  # what a shell gives: the replay must not rely on the daemon's umask
    try:
        out = tmp_path / "out"
        assert replay(state, candidate_config(tmp_path, CANDIDATE_CALM_HOB), out) == 0
        assert replay(state, candidate_config(tmp_path, CANDIDATE_WET_FLOOR, name="wet"), tmp_path / "wet") == 0
        compared = tmp_path / "cmp" / "compare.md"
        assert replay_main(["compare", str(out), str(tmp_path / "wet"), "--out", str(compared)]) == 0
    finally:
        os.umask(old)
    assert _private(out) == [] and _private(tmp_path / "cmp") == []
    html = (out / "report.html").read_text()
    assert html.index("<h2>Headline</h2>") < html.index("<h2>Plots</h2>") < html.index("Windows where they disagree")
    # compare.html says what compare.md says: the Runs line, and no PaSBench footnote for history runs.
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "Runs: <code>out</code> = " in page and "History runs (<code>monitor replay history</code>)" in page
    assert "risk-sample trial" not in page and "safe control logs" not in page
    assert "| complete | yes | yes |" in compared.read_text()


def _cells(table_lines: list[str]) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table_lines[2:]]


def _table(markdown: str, header_start: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return _cells(lines[start:end])


def _html_rows(html: str) -> list[list[str]]:
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", html) if "<td>" in row]


def _close(shown: str, value: float, digits: int) -> bool:
    return abs(float(shown) - value) <= 0.5 * 10 ** -digits + 1e-9


def test_every_figure_of_both_history_reports_matches_a_recomputation_from_the_run_log(
        state: Path, tmp_path: Path) -> None:
    """Cost per window, windows warned on, alerts and the zone table, recomputed from runs.jsonl alone, in
    report.md and report.html; numbers are read back and compared, so a formatter dropping a digit fails."""
    label_all(state)
    out = tmp_path / "out"
    assert replay(state, candidate_config(tmp_path, CANDIDATE_CALM_HOB), out) == 0
    windows = [w for s in read_history_log(out / "runs.jsonl").segments if s.status == "ok" for w in s.windows]
    markdown, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    html_rows = _html_rows(html)
    expected_cost = []
    for side in ("recorded", "candidate"):
        usages = [w[side]["usage"] for w in windows if side in w]
        calls = [float(u["calls"]) for u in usages]
        tokens = [float(u["prompt_tokens"] + u["completion_tokens"]) for u in usages]
        latency = [float(u["latency_s"]) for u in usages]
        expected_cost.append((side, len(usages), [(calls, 2), (tokens, 0), (latency, 3)]))
    rows = _table(markdown, "| side | windows |")
    for (side, count, columns), row in zip(expected_cost, rows, strict=True):
        assert row[:2] == [side, str(count)]
        assert row in html_rows
        for (values, digits), cell in zip(columns, row[2:], strict=True):
            ordered = sorted(values)
            recomputed = (statistics.fmean(values), statistics.median(values),
                          ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))])
            shown = [part.strip() for part in cell.split("/")]
            assert all(_close(s, v, digits) for s, v in zip(shown, recomputed, strict=True)), (side, cell, recomputed)
    headline = {row[0]: row[1:] for row in _table(markdown, "| measure | recorded | candidate |")}
    for side_index, side in enumerate(("recorded", "candidate")):
        warned = sum(1 for w in windows if side in w and w[side]["warned"])
        new = sum(1 for w in windows if side in w and w[side]["event"] == "new")
        assert headline["windows warned on"][side_index] == str(warned)
        assert headline["new alerts"][side_index] == str(new)
        assert _close(headline["model calls per window"][side_index],
                      statistics.fmean(float(w[side]["usage"]["calls"]) for w in windows if side in w), 2)
        assert _close(headline["tokens per window"][side_index], statistics.fmean(
            float(w[side]["usage"]["prompt_tokens"] + w[side]["usage"]["completion_tokens"])
            for w in windows if side in w), 1)
    for name, cells in headline.items():
        assert [name, *cells] in html_rows
    both_sides = [w for w in windows if "candidate" in w and not w["recorded"]["error"] and not w["candidate"]["error"]]
    cells = {(r, c): sum(1 for w in both_sides if (w["recorded"]["warned"], w["candidate"]["warned"]) == (r, c))
             for r in (True, False) for c in (True, False)}
    agreement = _table(markdown, "|  | candidate warned | candidate silent |")
    assert agreement == [["recorded warned", str(cells[True, True]), str(cells[True, False])],
                         ["recorded silent", str(cells[False, True]), str(cells[False, False])]]
    assert all(row in html_rows for row in agreement)
    same_verdict = sum(1 for w in both_sides if bool(w["recorded"]["danger"]) == bool(w["candidate"]["danger"]))
    assert (f"On {len(both_sides)} windows both assessed without error: same verdict in {same_verdict}/"
            f"{len(both_sides)} (") in markdown
    assert (f"same decision to warn in {cells[True, True] + cells[False, False]}/{len(both_sides)} (") in markdown
    zones = _table(markdown, "| zone | windows |")
    for row in zones:
        mine = [w for s in read_history_log(out / "runs.jsonl").segments for w in s.windows if s.zone == row[0]]
        both = [w for w in mine if "candidate" in w and not w["recorded"]["error"] and not w["candidate"]["error"]]
        same = sum(1 for w in both if w["recorded"]["warned"] == w["candidate"]["warned"])
        assert row[1:4] == [str(len(mine)), str(sum(1 for w in mine if w["recorded"]["warned"])),
                            str(sum(1 for w in mine if "candidate" in w and w["candidate"]["warned"]))]
        assert _close(row[4].rstrip("%"), 100 * same / len(both), 1)
        assert row in html_rows


def test_resuming_a_history_replay_under_another_setting_is_refused_naming_the_key(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert replay(state, candidate_config(tmp_path, CANDIDATE_CALM_HOB), out) == 0
    capsys.readouterr()
    other = candidate_config(tmp_path, CANDIDATE_CALM_HOB, extra="[keyframes]\nlongest_side = 512\n")
    assert replay(state, other, out) == 1
    err = capsys.readouterr().err
    assert "holds a replay under other settings; setting keyframes.longest_side: 768 there, 512 now" in err
    assert (out / "scores.json").is_file()  # refused before anything changed: the earlier scores still stand
    critical = candidate_config(tmp_path, CANDIDATE_CALM_HOB, extra='[alerts]\nmin_severity = "critical"\n')
    assert replay(state, critical, out) == 1
    assert "a different alerts; alerts min_severity: info there, critical now" in capsys.readouterr().err


def test_the_cost_table_shows_whole_token_counts_whole(state: Path, tmp_path: Path) -> None:
    """The issue's instance: a mean of 750.35 and a median of 739.5 tokens showed as `75` and `74`."""
    from replay.history_report import plot_files, render_html, render_markdown

    out = tmp_path / "out"
    assert replay(state, candidate_config(tmp_path, CANDIDATE_CALM_HOB), out) == 0
    result = scores(out)
    result["cost"]["candidate"]["tokens"].update({"mean": 750.35, "median": 739.5, "p95": 783.0})
    result["cost"]["recorded"]["tokens"].update({"mean": 740.0, "median": 762.0, "p95": 780.0})
    markdown = render_markdown(result)
    assert "| 750 / 740 / 783 |" in markdown and "| 740 / 762 / 780 |" in markdown
    assert "<td>750 / 740 / 783</td>" in render_html(result, plot_files(result))


def test_a_killed_history_replay_scores_incomplete_first_with_exit_3(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    with ScriptedOpenAIServer(model="calm-vlm", responder=_responder) as server:
        config = tmp_path / "openai.toml"
        config.write_text(f'[model]\nbackend = "openai"\nbase_url = "{server.base_url}"\nmodel = "calm-vlm"\n'
                          "max_retries = 0\nconcurrency = 1\n")
        args = ["history", "--from", str(state), "--config", str(config), "--out", str(out), "--no-progress"]
        kill_replay_after(args, out / "runs.jsonl", kind="segment", count=2, timeout_s=120)
    done = len(run_log_lines(out / "runs.jsonl", "segment"))
    assert 2 <= done < 24, "the run must have been interrupted mid-way"
    assert not (out / "scores.json").exists()
    assert replay_main(["score", "--runs", str(out / "runs.jsonl"), "--out", str(out)]) == 3
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"INCOMPLETE: {24 - done} segments not run (")
    assert scores(out)["complete"] is False
    assert (out / "report.md").read_text().splitlines()[2].startswith("**INCOMPLETE: ")
    assert "<p class='banner'>INCOMPLETE: " in (out / "report.html").read_text()


def test_a_candidate_without_alerts_settings_is_told_what_it_does_not_inherit(
        state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The history keeps the window bounds the home had, not its [alerts]: a candidate config without one ran
    silently with a 300 s alert timeout against the home's 20 s. It is said, with the values used."""
    plain = candidate_config(tmp_path, CANDIDATE_CALM_HOB)
    assert replay(state, plain, tmp_path / "plain", "--zone", "garage") == 0
    said = capsys.readouterr().err
    assert "[alerts]: not in the candidate's config: the defaults apply (dedup_ttl_s = 300" in said, said
    assert "the window bounds (max_age_s, max_entries, max_frames) come from the history" in said
    own = candidate_config(tmp_path, CANDIDATE_CALM_HOB, name="own", extra="[alerts]\ndedup_ttl_s = 20\n")
    assert replay(state, own, tmp_path / "own", "--zone", "garage") == 0
    assert "[alerts]: not in the candidate's config" not in capsys.readouterr().err
