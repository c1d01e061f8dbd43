"""`check-config` refuses what `monitor run` would refuse at start, with the same line (issue 25 §1).

Before, a missing speech engine, no sound device, an unwritable JSONL or audit path and an unsafe
state dir passed `check-config` and then stopped `monitor run`: under the systemd unit the pre-start
check passed and the service crash-looped. Each refusal here is produced for real: `run` exits 1
with a line, and `check-config` on the same file exits 1 with that very line, creating nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.sinks.speaker import audio_device_problem
from tests.support.faults import Rig, table, tail
from tests.support.mosquitto import Mosquitto
from tests.support.openai_server import ScriptedOpenAIServer
from tests.support.paths import REPO

NOBODY = 65534
# No sound server to find: only a playback device in /dev/snd would do (this box has none).
_NO_SOUND_SERVER = {"PULSE_SERVER": "", "XDG_RUNTIME_DIR": ""}


def _monitor(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MONITOR_HEALTH__PORT": "0", "MONITOR_SERVICE__LOG_FORMAT": "json", **(env or {})}
    return subprocess.run([sys.executable, "-m", "monitor", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=60, check=False)


def _said(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines for a person (not the JSON log lines)."""
    return [line for line in result.stderr.splitlines() if line and not line.startswith("{")]


def _plain_file(tmp: Path) -> Path:
    path = tmp / "plain-file"
    path.write_text("a file where a folder belongs\n")
    return path


def _speaker_missing(tmp: Path, rig: Rig) -> None:
    rig.extra += '\n[sinks.speaker]\nenabled = true\ncommand = ["no-such-tts-engine", "{text}"]\n'


def _speaker_without_sound(tmp: Path, rig: Rig) -> None:
    rig.extra += '\n[sinks.speaker]\nenabled = true\n'


def _jsonl_unwritable(tmp: Path, rig: Rig) -> None:
    rig.jsonl = _plain_file(tmp) / "alerts.jsonl"


def _jsonl_a_link(tmp: Path, rig: Rig) -> None:
    (tmp / "elsewhere.txt").write_text("not the monitor's\n")
    rig.jsonl = tmp / "alerts.jsonl"
    rig.jsonl.symlink_to(tmp / "elsewhere.txt")


def _audit_unwritable(tmp: Path, rig: Rig) -> None:
    rig.audit = _plain_file(tmp) / "audit.jsonl"


def _state_open_to_all(tmp: Path, rig: Rig) -> None:
    rig.state_dir = tmp / "shared-state"
    rig.state_dir.mkdir()
    os.chmod(rig.state_dir, 0o777)  # noqa: S103 - the unsafe folder under test


def _state_of_another_user(tmp: Path, rig: Rig) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    rig.state_dir = tmp / "their-state"
    rig.state_dir.mkdir(mode=0o700)
    os.chown(rig.state_dir, NOBODY, NOBODY)


def _state_cannot_be_created(tmp: Path, rig: Rig) -> None:
    rig.state_dir = _plain_file(tmp) / "state"


def _gguf_missing(tmp: Path, rig: Rig) -> str:
    return f'backend = "embedded"\n[model.embedded]\ngguf = "{tmp / "no-model.gguf"}"\n'


def _script_missing(tmp: Path, rig: Rig) -> str:
    return f'backend = "scripted"\nscript = "{tmp / "no-script.json"}"\n'


REFUSALS = {
    "speech engine missing": (_speaker_missing, "error: sinks.speaker.command: 'no-such-tts-engine' not found"),
    "no sound device": (_speaker_without_sound, "error: sinks.speaker: no audio output"),
    "jsonl path unwritable": (_jsonl_unwritable, "error: sinks.jsonl.path: cannot open"),
    "jsonl path a symlink": (_jsonl_a_link, "error: sinks.jsonl.path: cannot open"),
    "audit log unwritable": (_audit_unwritable, "error: service.audit_log = "),
    "state dir others can write": (_state_open_to_all, "error: service.state_dir: "),
    "state dir of another user": (_state_of_another_user, "error: service.state_dir: "),
    "state dir cannot be created": (_state_cannot_be_created, "error: service.state_dir: "),
    "embedded model file missing": (_gguf_missing, "error: model.embedded.gguf: "),
    "scripted backend script missing": (_script_missing, ""),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_check_config_refuses_what_run_refuses_with_the_same_line(tmp_path: Path, case: str) -> None:
    make, start = REFUSALS[case]
    if case == "no sound device" and audio_device_problem(runtime_dir="") is None:
        pytest.skip("this machine has a sound device")
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, "http://127.0.0.1:9/v1", sources=[tail("kitchen", log)])
    model = make(tmp_path, rig)
    config = rig.write()
    if model is not None:  # another backend: its [model] in place of the rig's
        text = config.read_text()
        cut_from, cut_to = text.index("[model]\n"), text.index("concurrency = 2\n") + len("concurrency = 2\n")
        config.write_text(text[:cut_from] + "[model]\n" + model + text[cut_to:])
    ran = _monitor("run", "--config", str(config), cwd=tmp_path, env=_NO_SOUND_SERVER)
    assert ran.returncode == 1, ran.stderr[-2000:]
    refused = [line for line in _said(ran) if line.startswith(start or str(tmp_path))]
    assert len(refused) == 1, ran.stderr[-2000:]
    checked = _monitor("check-config", str(config), cwd=tmp_path, env=_NO_SOUND_SERVER)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert refused[0] in _said(checked), (refused, checked.stderr)
    assert "Traceback" not in ran.stderr + checked.stderr


def test_check_config_creates_nothing(tmp_path: Path) -> None:
    """The state dir, the JSONL file, the audit log and their folders are checked, never made."""
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    out = tmp_path / "out"
    rig = Rig(tmp_path, "http://127.0.0.1:9/v1", sources=[tail("kitchen", log)], state_dir=out / "state",
              jsonl=out / "alerts" / "alerts.jsonl", audit=out / "audit" / "audit.jsonl")
    checked = _monitor("check-config", str(rig.write()), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert not out.exists()


def test_the_shipped_speaking_config_is_refused_here_as_run_refuses_it(tmp_path: Path) -> None:
    """configs/reach.toml on a box with no sound device: `check-config` exits 1 (the unit's ExecStartPre then
    stops a crash loop); with `--config-only` (a CI box, another user) only the file is checked."""
    if audio_device_problem(runtime_dir="") is None:
        pytest.skip("this machine has a sound device")
    env = {**_NO_SOUND_SERVER, "MONITOR_SERVICE__STATE_DIR": str(tmp_path / "state")}
    checked = _monitor("check-config", str(REPO / "configs" / "reach.toml"), cwd=tmp_path, env=env)
    assert checked.returncode == 1
    assert any(line.startswith("error: sinks.speaker: no audio output") for line in _said(checked)), checked.stderr
    assert not (tmp_path / "state").exists()
    only = _monitor("check-config", "--config-only", str(REPO / "configs" / "reach.toml"), cwd=tmp_path, env=env)
    assert only.returncode == 0, only.stderr


def test_an_optional_speaker_that_cannot_speak_is_a_warning(tmp_path: Path) -> None:
    """`run` starts without speech (optional = true), so check-config warns instead of refusing."""
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, "http://127.0.0.1:9/v1", sources=[tail("kitchen", log)])
    rig.extra += '\n[sinks.speaker]\nenabled = true\noptional = true\ncommand = ["no-such-tts-engine", "{text}"]\n'
    checked = _monitor("check-config", str(rig.write()), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert any(": warning: sinks.speaker.command: 'no-such-tts-engine' not found" in line
               for line in checked.stdout.splitlines()), checked.stdout


def test_a_camera_device_that_does_not_exist_is_warned_about(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "http://127.0.0.1:9/v1",
              sources=[table("[[cameras]]", id="hall", kind="device", device=97)])
    config = rig.write()  # a camera needs a model that accepts images
    config.write_text(config.read_text().replace('model = "scripted-vlm"', 'model = "scripted-vlm"\n'
                                                                            "accepts_images = true"))
    checked = _monitor("check-config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert any("warning: cameras[0].device: /dev/video97: does not exist" in line
               for line in checked.stdout.splitlines()), checked.stdout


def test_online_probes_the_model_endpoint_and_the_broker_and_reports_each(
        tmp_path: Path, openai_server: ScriptedOpenAIServer, broker: Mosquitto) -> None:
    """`check-config --online`: one line per probe; a model or broker that does not answer is exit 1, named."""
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, openai_server.base_url, sources=[tail("kitchen", log)], broker=broker)
    checked = _monitor("check-config", "--online", str(rig.write()), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert any(f"online: model: {openai_server.base_url}/models answered (HTTP 200" in line for line in lines), lines
    assert any(f"online: mqtt: 127.0.0.1:{broker.port} accepted the connection" in line for line in lines), lines

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    rig.base_url = f"http://127.0.0.1:{port}/v1"
    config = rig.write()
    config.write_text(config.read_text().replace(f"port = {broker.port}", f"port = {port}"))
    checked = _monitor("check-config", "--online", str(config), cwd=tmp_path)
    assert checked.returncode == 1
    said = _said(checked)
    assert any(line.startswith(f"error: online: model: http://127.0.0.1:{port}/v1/models: ") for line in said), said
    assert any(line.startswith(f"error: online: mqtt: 127.0.0.1:{port}: ") for line in said), said


def test_tls_files_that_do_not_exist_are_warned_about(tmp_path: Path) -> None:
    """The broker connection would fail and retry forever on a missing CA file: said before the start."""
    rig = Rig(tmp_path, "http://127.0.0.1:9/v1", sources=[tail("kitchen", tmp_path / "kitchen.jsonl")])
    rig.extra = f'\n[mqtt]\nhost = "127.0.0.1"\n[mqtt.tls]\nca_file = "{tmp_path / "no-ca.pem"}"\n'
    checked = _monitor("check-config", str(rig.write()), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert f"warning: mqtt.tls.ca_file: {tmp_path / 'no-ca.pem'}: does not exist" in checked.stdout


def test_push_notification_urls_a_start_would_refuse_are_refused_by_check_config(tmp_path: Path) -> None:
    """The notify sink refuses to start on a target whose URLs are missing: check-config says so, exit 1."""
    config = tmp_path / "monitor.toml"
    config.write_text(f"""
[service]
state_dir = "{tmp_path / 'state'}"
[model]
backend = "openai"
base_url = "http://127.0.0.1:9/v1"
[[sources]]
id = "kitchen"
kind = "stdin"
zone = "kitchen"
[sinks.notify]
enabled = true
[[sinks.notify.targets]]
name = "household"
urls_env = "MONITOR_TEST_NOTIFY_URLS"
""")
    env = {k: v for k, v in os.environ.items() if k != "MONITOR_TEST_NOTIFY_URLS"}
    refused = _monitor("check-config", str(config), cwd=tmp_path, env=env)
    assert refused.returncode == 1
    assert "error: sinks.notify.targets[0]: notify target 'household': environment variable " \
           "MONITOR_TEST_NOTIFY_URLS is not set or empty" in refused.stdout + refused.stderr
    fine = _monitor("check-config", str(config), cwd=tmp_path,
                    env={**env, "MONITOR_TEST_NOTIFY_URLS": "json://127.0.0.1:9/secret-path"})
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert "secret-path" not in fine.stdout + fine.stderr
