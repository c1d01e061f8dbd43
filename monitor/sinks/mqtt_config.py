"""Configuration of the MQTT alert sink and activity source."""

from __future__ import annotations

from pydantic import Field, SecretStr

from monitor.config_base import Section


class MqttSettings(Section):
    """The MQTT broker the monitor publishes alerts to."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = Field(default="proactive_monitor", pattern=r"^[^#+]+$")
    username: str | None = None
    password: SecretStr | None = None
