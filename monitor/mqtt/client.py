"""MQTT clients for the configured broker, shared by the alert sink and the activity source."""

from __future__ import annotations

import ssl

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from monitor.mqtt.settings import MqttSettings

log = structlog.get_logger("monitor.mqtt")

# CONNACK codes for bad credentials: MQTT 3.1.1 (4, 5) and their MQTT 5 reason codes (134, 135).
_AUTH_CODES = frozenset({4, 5, 134, 135})


def make_client(settings: MqttSettings, *, identifier: str | None = None, will: aiomqtt.Will | None = None,
                clean_session: bool | None = None) -> aiomqtt.Client:
    """An aiomqtt client for the configured broker, credentials and TLS (one per connection attempt)."""
    tls_params = None
    tls_insecure = None
    if settings.tls is not None:
        tls = settings.tls
        tls_params = aiomqtt.TLSParameters(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        tls_insecure = True if tls.insecure else None
    return aiomqtt.Client(
        settings.host,
        settings.port,
        identifier=identifier,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password is not None else None,
        will=will,
        clean_session=clean_session,
        keepalive=settings.keepalive_s,
        timeout=settings.publish_timeout_s,
        tls_params=tls_params,
        tls_insecure=tls_insecure,
    )


def log_connect_failure(settings: MqttSettings, exc: Exception, retry_in_s: float, *, role: str) -> None:
    """One clear line per failed attempt; wrong credentials are an error, an absent broker a warning."""
    fields = {"broker": settings.broker, "role": role, "error": str(exc), "retry_in_s": round(retry_in_s, 2)}
    if isinstance(exc, MqttConnectError) and _code(exc.rc) in _AUTH_CODES:
        log.error(f"mqtt broker {settings.broker} refused the connection: not authorised "
                  f"(check mqtt.username and the mqtt password secret)", username=settings.username, **fields)
    elif isinstance(exc, MqttConnectError):
        log.error(f"mqtt broker {settings.broker} refused the connection", **fields)
    else:
        log.warning(f"mqtt broker {settings.broker} unreachable or connection lost", **fields)


def _code(rc: int | ReasonCode | None) -> int | None:
    return rc.value if isinstance(rc, ReasonCode) else rc
