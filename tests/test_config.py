"""`monitor check-config`: every example passes; broken configs name the file, key and reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.core.errors import ConfigError
from monitor.settings import load_settings
from tests.support.paths import REPO

CONFIGS = sorted((REPO / "configs").glob("*.toml"))


def check_config(path: Path, env: dict[str, str] | None = None, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "check-config", *options, str(path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, check=False,
    )


def test_there_are_example_configs() -> None:
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_example_config_is_valid(path: Path) -> None:
    """The files only: the machine they are written for (a sound device, /var/lib) is not this one."""
    result = check_config(path, None, "--config-only")
    assert result.returncode == 0, result.stderr
    assert f"{path}: ok" in result.stdout


BROKEN = [
    ("[model]\nbackend = 'openai'\nbase_url = 'http://x/v1'\ntemprature = 0.3\n",
     "model.temprature: unknown key (did you mean 'temperature'?)"),
    ("[[sources]]\nid = 'a'\nkind = 'stdin'\nfromstart = true\n", "sources[0].fromstart: unknown key (did you mean "
     "'from_start'?)"),
    ("[mqtt]\nhost = 'x'\n[mqtt.tls]\nca_fiel = 'ca.pem'\n", "mqtt.tls.ca_fiel: unknown key (did you mean 'ca_file'?)"),
    ("[windows]\nmax_entries = 'many'\n", "windows.max_entries: Input should be a valid integer"),
    ("[model]\nbackend = 'openai'\n", "model: backend 'openai' needs base_url"),
    ("[[sources]]\nid = 'a'\npath = 'x.log'\n[[sources]]\nid = 'a'\npath = 'y.log'\n", "duplicate source id 'a'"),
    ("[[sources]]\nid = 'a'\nkind = 'file'\n", "sources[0]: source kind 'file' needs path"),
    ("[[sources]]\nid = 'bad id!'\npath = 'x'\n", "sources[0].id: String should match pattern"),
    ("[alerts]\nmin_severity = 'panic'\n", "alerts.min_severity: Input should be 'info', 'warning' or 'critical'"),
    ("[model\nbackend = 1\n", "<toml>: "),
    ("surprise = true\n", "surprise: unknown key"),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN, ids=[e for _, e in BROKEN])
def test_broken_config_names_file_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    result = check_config(path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith(f"{path}: ") and expected in line for line in lines), result.stderr


def test_several_problems_give_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text("[windows]\nmax_entries = 0\nbogus = 1\n")
    result = check_config(path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert any("windows.max_entries" in line for line in lines)
    assert any("windows.bogus: unknown key" in line for line in lines)


def test_missing_file_is_named(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nope.toml")
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.toml'}: file not found" in result.stderr


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[model]\nbackend = 'openai'\nbase_url = 'http://file/v1'\nmodel = 'from-file'\n")
    monkeypatch.setenv("MONITOR_MODEL__MODEL", "from-env")
    settings = load_settings(path)
    assert settings.model.model == "from-env"
    assert settings.model.base_url == "http://file/v1"


def test_api_key_from_credentials_directory_is_never_printed(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "creds"
    secrets.mkdir()
    (secrets / "model__api_key").write_text("sk-very-secret-value")
    path = tmp_path / "c.toml"
    path.write_text("[model]\nbackend = 'openai'\nbase_url = 'http://x/v1'\ntemperature = 9\n")
    result = check_config(path, env={"CREDENTIALS_DIRECTORY": str(secrets)})
    assert result.returncode == 1
    assert "sk-very-secret-value" not in result.stdout + result.stderr
    path.write_text("[model]\nbackend = 'openai'\nbase_url = 'http://x/v1'\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(secrets))
    settings = load_settings(path)
    assert settings.model.api_key is not None
    assert settings.model.api_key.get_secret_value() == "sk-very-secret-value"
    assert "sk-very-secret-value" not in repr(settings) + settings.model_dump_json()


def test_bad_env_value_is_reported_as_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_WINDOWS__MAX_ENTRIES", "lots")
    with pytest.raises(ConfigError, match=r"windows\.max_entries"):
        load_settings(None)


def test_relative_input_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.toml"
    path.write_text("[[sources]]\nid = 'a'\nkind = 'replay'\npath = 'logs/a.log'\n")
    assert load_settings(path).sources[0].path == tmp_path / "sub" / "logs" / "a.log"


def test_a_config_without_sources_is_warned_about_loudly(tmp_path: Path) -> None:
    """`monitor run` with a backend and no sources logged "monitor ready" and watched nothing."""
    path = tmp_path / "nothing.toml"
    path.write_text("[model]\nbackend = 'openai'\nbase_url = 'http://127.0.0.1:9/v1'\n")
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert f"{path}: warning: sources: none configured" in result.stdout and "watches nothing" in result.stdout


def test_an_mqtt_activity_source_without_a_persistent_session_is_warned_about(tmp_path: Path) -> None:
    from monitor.settings import config_warnings

    path = tmp_path / "c.toml"
    path.write_text("[[sources]]\nid = 'events'\nkind = 'mqtt'\ntopic = 'home/activity'\n\n[mqtt]\nhost = 'x'\n")
    said = [w for w in config_warnings(load_settings(path), {}) if "published while the monitor is down" in w]
    assert said == [said[0]] and said[0].startswith("sources[0]: MQTT activity source 'events'")
    path.write_text(path.read_text() + "client_id = 'monitor-1'\n")
    assert not [w for w in config_warnings(load_settings(path), {}) if "published while the monitor is down" in w]
