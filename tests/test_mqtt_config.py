"""MQTT settings, topic helpers and backoff: the parts that need no broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from monitor.core.aio import Backoff
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.ha_discovery import Topics


def test_defaults() -> None:
    settings = MqttSettings()
    assert (settings.host, settings.port, settings.topic_prefix) == ("127.0.0.1", 1883, "proactive_monitor")
    assert settings.discovery.enabled and settings.discovery.prefix == "homeassistant"
    assert settings.outbox.resolve(Path("/var/lib/monitor")) == Path("/var/lib/monitor/mqtt-outbox.sqlite3")
    assert settings.outbox.when_full == "drop_oldest"
    assert settings.tls is None and settings.password is None
    assert MqttSettings(topic_prefix="home/safety.monitor").node_id == "home_safety_monitor"


@pytest.mark.parametrize("values, problem", [
    ({"topic_prefix": "alerts/#"}, "topic_prefix"),
    ({"topic_prefix": "/leading"}, "topic_prefix"),
    ({"topic_prefix": "trailing/"}, "topic_prefix"),
    ({"port": 0}, "port"),
    ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "reconnect_min_s must not exceed"),
    ({"password": "x"}, "password needs username"),
    ({"tls": {"cert_file": "client.crt"}}, "cert_file and key_file go together"),
    ({"outbox": {"max_messages": 0}}, "max_messages"),
    ({"outbox": {"when_full": "block"}}, "when_full"),
    ({"brokr": "typo"}, "brokr"),
])
def test_invalid_settings_are_rejected(values: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        MqttSettings.model_validate(values)


def test_control_topics_name_their_zone() -> None:
    topics = Topics("home/monitor")
    assert topics.control_zone("home/monitor/kitchen/monitoring/set", "monitoring") == "kitchen"
    assert topics.control_zone("home/monitor/kitchen/sensitivity/set", "monitoring") is None
    assert topics.control_zone("home/monitor/a/b/monitoring/set", "monitoring") is None
    assert topics.control_zone("other/kitchen/monitoring/set", "monitoring") is None


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 4.0)  # the MQTT sink's and source's defaults: jitter 0.25
    delays = [backoff.next() for _ in range(8)]
    assert 0.375 <= delays[0] <= 0.625
    assert 0.75 <= delays[1] <= 1.25
    assert all(3.0 <= d <= 5.0 for d in delays[4:])
    assert len({round(d, 9) for d in delays[4:]}) > 1  # capped, yet not in lock step
    backoff.reset()
    assert 0.375 <= backoff.next() <= 0.625
