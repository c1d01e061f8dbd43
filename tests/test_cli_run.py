"""`monitor run` as a user runs it: a subprocess, a tailed log, the scripted backend, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.paths import SHARED


def write_config(tmp_path: Path) -> tuple[Path, Path, Path]:
    log = tmp_path / "activity.jsonl"
    log.write_text("")
    script = tmp_path / "script.json"
    script.write_text(json.dumps({
        "rules": [{"match": "ladder", "reply": {
            "danger": True, "severity": "warning", "hazard": "fall from ladder",
            "reason": "Leaning far out on a ladder.", "advice": "Climb down and move the ladder.",
            "evidence": ["leans out"], "confidence": 0.9}}],
        "default": {"danger": False},
    }))
    alerts = tmp_path / "alerts.jsonl"
    config = tmp_path / "monitor.toml"
    config.write_text(f"""
[model]
backend = "scripted"
model = "scripted"
script = "{script}"

[[sources]]
id = "garage"
path = "{log}"
format = "jsonl"
poll_interval_s = 0.05

[windows]
min_interval_s = 0.0

[sinks.jsonl]
enabled = true
path = "{alerts}"
""")
    return config, log, alerts


def wait_for(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_tails_a_log_warns_and_stops_cleanly_on_signal(tmp_path: Path, signum: int) -> None:
    config, log, alerts = write_config(tmp_path)
    errors = tmp_path / "stderr.log"
    with errors.open("w") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=stderr_file, text=True,
            # Its own state dir: an alert left open by one run is ended by the next run that shares it.
            env={**os.environ, "MONITOR_SERVICE__LOG_FORMAT": "json", "MONITOR_SERVICE__STATE_DIR": str(tmp_path)},
        )
    try:
        wait_for(lambda: "monitor running" in errors.read_text())
        time.sleep(0.3)  # the tail opens the file at its end right after start-up
        with log.open("a") as handle:
            handle.write('{"ts": 1, "text": "Sam waters the plants"}\n')
            handle.write("this line is not json\n")
            handle.flush()
            time.sleep(0.5)
            handle.write('{"ts": 2, "text": "Sam leans far out from the top of the ladder"}\n')
        wait_for(lambda: alerts.exists() and alerts.read_text().strip())
        process.send_signal(signum)
        stdout, _ = process.communicate(timeout=15)
        stderr = errors.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    event = json.loads(alerts.read_text().splitlines()[0])
    assert event["type"] == "new" and event["hazard"] == "fall from ladder"
    assert "fall from ladder" in stdout and "Climb down" in stdout
    assert "shutdown requested" in stderr
    bad = next(json.loads(line) for line in stderr.splitlines() if "bad log line" in line)
    assert bad["source"] == "garage" and bad["line"] == 2  # reported, not fatal
    stopped = next(json.loads(line) for line in stderr.splitlines() if "monitor stopped" in line)
    assert stopped["bad_log_lines"] == 1


def test_inspect_log_cli_parses_the_pasbench_eval_file() -> None:
    data = SHARED / "pasbench" / "text_eval_hugging.json"
    result = subprocess.run([sys.executable, "-m", "monitor", "inspect-log", str(data)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    records = json.loads(data.read_text())
    assert {e["record"] for e in entries} == set(range(len(records)))
    assert all(e["behaviour"] for e in entries)


def test_inspect_log_missing_file_is_named(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "monitor", "inspect-log", str(tmp_path / "none.log")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert str(tmp_path / "none.log") in result.stderr


def test_run_with_a_broken_config_exits_1_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[windows]\nmin_interval = 3\n")
    result = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert f"{config}: windows.min_interval: unknown key (did you mean 'min_interval_s'?)" in result.stderr


def test_a_start_that_fails_leaves_no_state_dir_behind_and_says_where_it_was(tmp_path: Path) -> None:
    """`monitor run` created ./state in the working directory before it failed for another reason."""
    config = tmp_path / "monitor.toml"
    config.write_text(f"""
[model]
backend = "scripted"
script = "{tmp_path / 'no-such-script.json'}"
[[sources]]
id = "kitchen"
kind = "stdin"
zone = "kitchen"
[health]
enabled = false
""")
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([sys.executable, "-m", "monitor", "run", "--config", str(config)], cwd=work,
                            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 1 and "no-such-script.json" in result.stderr
    assert str(work / "state") in result.stderr  # where it would have been
    assert list(work.iterdir()) == []
