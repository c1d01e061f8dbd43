"""Fixtures every test may use: real servers on 127.0.0.1, settings, and a clean logging setup."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from monitor.settings import Settings, load_settings
from tests.support.homeassistant import HomeAssistant, ha_python_or_skip, home_assistant
from tests.support.mosquitto import Mosquitto
from tests.support.openai_server import ScriptedOpenAIServer
from tests.support.paths import PASBENCH, REPO, SHARED

__all__ = ["PASBENCH", "REPO", "SHARED"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures structlog for the whole process; give every test back what it had."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def openai_server() -> Iterator[ScriptedOpenAIServer]:
    """A scripted OpenAI-compatible server on 127.0.0.1 (real socket, real `openai` client)."""
    with ScriptedOpenAIServer() as server:
        yield server


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto broker on a free loopback port, anonymous, stopped after the test."""
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Settings from the built-in defaults plus keyword sections, validated like a config file."""

    def make(**sections: Any) -> Settings:
        return load_settings(None, **sections)

    return make


@pytest.fixture
def pasbench() -> Path:
    """The development subset of PaSBench beside the project (read-only: copy before changing it)."""
    if not (PASBENCH / "text_eval_hugging.json").is_file():
        pytest.fail(f"the PaSBench development subset is missing at {PASBENCH} (../shared beside the project)")
    return PASBENCH


@pytest.fixture(scope="module")
def ha_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A broker for a module's real Home Assistant (skips at once when there is no HA environment)."""
    ha_python_or_skip()
    with Mosquitto(tmp_path_factory.mktemp("ha-broker")) as running:
        yield running


@pytest.fixture(scope="module")
def ha(ha_broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HomeAssistant]:
    """One real Home Assistant core per module, connected to `ha_broker`: tests use their own topics and ids."""
    with home_assistant(tmp_path_factory.mktemp("ha-config"), mqtt_host=ha_broker.host,
                        mqtt_port=ha_broker.port) as hass:
        yield hass
