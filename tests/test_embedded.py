"""The real embedded model: llama.cpp's OpenAI-compatible server with SmolLM2-135M, end to end.

SmolLM2-135M's verdicts are not meaningful, so these tests assert on plumbing and shape
(valid assessments or counted errors, usage, clean exit), never on the verdict.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.assess.prompt import ASSESSMENT_SCHEMA, build_messages
from monitor.assess.verdict import Assessment
from monitor.backends import ModelRequest, create_backend
from monitor.backends.settings import ModelSettings
from monitor.windows import Window
from tests.support.paths import REPO
from tests.support.sources import entry

pytestmark = pytest.mark.slow


async def test_embedded_server_answers_over_http_with_a_valid_assessment() -> None:
    backend = create_backend(ModelSettings(json_schema_hint=True, attempt_timeout_s=120, total_timeout_s=240))
    await backend.start()
    try:
        window = Window(id="w", zone="kitchen", observations=(entry("Holds wet food over smoking oil"),),
                        new_count=1, created_at=0.0)
        # Greedy and seeded: sampled at the default temperature, SmolLM2-135M now and then rambles past the
        # token limit inside a string, and a reply cut off there is malformed (counted, named as cut off).
        reply = await backend.complete(ModelRequest(messages=build_messages(window), json_schema=ASSESSMENT_SCHEMA,
                                                    temperature=0.0, seed=0))
    finally:
        await backend.close()
    assert not reply.cut_off, reply.text
    Assessment.parse_reply(reply.text)  # the grammar-constrained answer is a valid Assessment
    assert reply.model == "smollm2-135m-instruct"
    assert reply.usage.prompt_tokens > 100
    assert reply.usage.completion_tokens > 0


def test_demo_config_runs_end_to_end_and_exits(tmp_path: Path) -> None:
    config = tmp_path / "demo.toml"
    text = (REPO / "configs" / "demo.toml").read_text()
    text = text.replace('path = "../examples/demo-kitchen.log"', f'path = "{REPO / "examples" / "demo-kitchen.log"}"')
    text = re.sub(r"^interval_s = .*$", "interval_s = 0.5", text, flags=re.M)
    assert "interval_s = 0.5" in text
    text = text.replace('path = "out/demo-alerts.jsonl"', f'path = "{tmp_path / "alerts.jsonl"}"')
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
        env={**os.environ, "MONITOR_SERVICE__LOG_FORMAT": "json"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The first screen: the notice first, then readable warnings, never the prompt's template prose.
    assert result.stdout.startswith("Note: these verdicts come from SmolLM2-135M"), result.stdout[:500]
    for placeholder in ("short name of the risk", "why this is dangerous, citing", "what the person should do or"):
        assert placeholder not in result.stdout.lower()
    assert "window assessed" not in result.stdout  # logs stay on stderr
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = [record["event"] for record in logs]
    assert "embedded model server ready" in events
    outcomes = [r for r in logs if r["event"] in ("window assessed", "assessment failed")]
    assert outcomes, events
    assessed = [r for r in outcomes if r["event"] == "window assessed"]
    for record in assessed:
        assert record["prompt_tokens"] > 0 and record["verdict"] in ("safe", "danger")
    stopped = next(r for r in logs if r["event"] == "monitor stopped")
    assert stopped["windows_assessed"] == len(assessed)
    alerts = tmp_path / "alerts.jsonl"
    if alerts.exists():
        for line in alerts.read_text().splitlines():
            assert json.loads(line)["model"] == "smollm2-135m-instruct"
    # the child server was stopped with the monitor
    server_pid = next(r for r in logs if r["event"] == "embedded model server ready")["pid"]
    assert not Path(f"/proc/{server_pid}").exists()


async def test_a_killed_embedded_server_is_started_again_for_the_next_call() -> None:
    """Fail-safe: the child server dying (a crash, the OOM killer) must not blind the monitor for good."""
    import asyncio
    import signal

    from monitor.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(ModelSettings(max_tokens=32, max_retries=0, attempt_timeout_s=120, total_timeout_s=240))
    await backend.start()
    try:
        process = backend._process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 10)
        request = ModelRequest(messages=({"role": "user", "content": "Say OK as JSON."},))
        reply = await backend.complete(request)
        assert reply.text and backend.restarts == 1
        assert backend._process is not None and backend._process.pid != process.pid
    finally:
        await backend.close()
    assert backend._process is None


def test_the_embedded_server_dies_with_a_killed_monitor(tmp_path: Path) -> None:
    """A monitor killed with SIGKILL leaves no model server behind (300 MB and a port)."""
    import signal
    import time

    script = tmp_path / "start.py"
    script.write_text(
        "import asyncio, sys\n"
        "from monitor.backends import create_backend\n"
        "from monitor.backends.settings import ModelSettings\n"
        "async def main():\n"
        "    backend = create_backend(ModelSettings())\n"
        "    await backend.start()\n"
        "    print('PID', backend._process.pid, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    monitor = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert monitor.stdout is not None
        line = next(line for line in monitor.stdout if line.startswith("PID "))
        server_pid = int(line.split()[1])
        assert Path(f"/proc/{server_pid}").exists()
    finally:
        monitor.send_signal(signal.SIGKILL)
        monitor.wait(10)
        if monitor.stdout is not None:
            monitor.stdout.close()
    deadline = time.monotonic() + 15
    while Path(f"/proc/{server_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    # A zombie is gone from the process table once init reaps it; a live server would still have a cmdline.
    status = Path(f"/proc/{server_pid}/status")
    assert not status.exists() or "zombie" in status.read_text().lower()


def test_a_crash_by_signal_names_the_likely_build_problem() -> None:
    """A llama.cpp compiled for instructions the CPU cannot run dies by SIGSEGV or SIGILL on the first call."""
    import signal

    from monitor.backends.embedded import _crash_hint

    assert "GGML_NATIVE=OFF" in _crash_hint(-signal.SIGSEGV)
    assert "SIGILL" in _crash_hint(-signal.SIGILL)
    assert _crash_hint(-signal.SIGKILL) == ""  # the OOM killer or a person: not a build problem
    assert _crash_hint(1) == ""
