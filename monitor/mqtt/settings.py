"""Configuration of the MQTT alert sink and activity source.

The password is a secret like the model's API key: set it with
``MONITOR_MQTT__PASSWORD`` or a secret file named ``mqtt__password`` (systemd
``LoadCredential=``), never in the TOML file you commit. It is a `SecretStr`,
so it shows as ``**********`` in reprs, logs and `check-config` output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from monitor.core.config import DisplayName, PositiveFloat, Section

_TOPIC_PREFIX = r"^[^#+/\s](?:[^#+\s]*[^#+/\s])?$"
_OUTBOX_FILE = "mqtt-outbox.sqlite3"


class MqttTlsSettings(Section):
    """TLS to the broker. Without `ca_file` the system's trusted CAs verify the broker."""

    ca_file: Path | None = Field(default=None, description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(default=None, description="client certificate, for brokers that require one")
    key_file: Path | None = Field(default=None, description="the client certificate's private key")
    insecure: bool = Field(
        default=False, description="skip the broker host name check: for tests only, never in production"
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> MqttTlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttDiscoverySettings(Section):
    """Home Assistant MQTT discovery: entities per zone, announced with retained configs."""

    enabled: bool = True
    prefix: str = Field(default="homeassistant", pattern=_TOPIC_PREFIX)
    node_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="default: the topic prefix, made safe"
    )
    device_name: DisplayName = Field(default="Proactive monitor")
    configuration_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s]{1,2000}$",
        description="the hub device's \"Visit\" link in Home Assistant (a URL other machines can open); "
                    "none: no link")


class MqttOutboxSettings(Section):
    """The durable outbox every alert message passes through before it is published.

    When `max_messages` are waiting (a long broker outage), the oldest waiting
    message is dropped to make room for the new one; each drop is logged as a
    warning with its message id and counted (`dropped` in the sink's stats).
    """

    path: Path | None = Field(default=None, description=f"SQLite file; default: <service.state_dir>/{_OUTBOX_FILE}")
    max_messages: int = Field(default=100_000, ge=1, le=10_000_000)
    when_full: Literal["drop_oldest"] = "drop_oldest"

    def resolve(self, state_dir: Path) -> Path:
        return self.path if self.path is not None else state_dir / _OUTBOX_FILE


class MqttSettings(Section):
    """The MQTT broker the monitor publishes alerts to (and MQTT activity sources read from)."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="default: a random id; when set, MQTT sources use '<client_id>-<source id>'",
    )
    topic_prefix: str = Field(default="proactive_monitor", pattern=_TOPIC_PREFIX)
    username: str | None = None
    password: SecretStr | None = None
    tls: MqttTlsSettings | None = Field(default=None, description="TLS to the broker; plain TCP when absent")
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 30.0
    publish_timeout_s: PositiveFloat = Field(
        default=10.0, description="wait this long for the broker's acknowledgement before reconnecting"
    )
    close_timeout_s: PositiveFloat = Field(default=5.0, description="at shutdown, flush the outbox for at most this")
    stats_interval_s: PositiveFloat = 60.0
    discovery: MqttDiscoverySettings = Field(default_factory=MqttDiscoverySettings)
    outbox: MqttOutboxSettings = Field(default_factory=MqttOutboxSettings)

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        return self

    @property
    def broker(self) -> str:
        """`host:port`, for messages."""
        return f"{self.host}:{self.port}"

    @property
    def node_id(self) -> str:
        """The Home Assistant node id: configured, or the topic prefix with unsafe characters replaced."""
        return self.discovery.node_id or re.sub(r"[^A-Za-z0-9_-]", "_", self.topic_prefix)
