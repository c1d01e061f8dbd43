"""What `monitor run` would refuse at start on this machine, checked without creating anything.

`monitor run` asks this first and stops with its lines; `monitor check-config` prints the same
lines and exits 1. One function for both, so the pre-start check of the systemd unit
(`ExecStartPre=monitor check-config`) can never pass a configuration the start then refuses
(a crash loop). Each check is the one the part itself makes when it starts, in its words; the
parts keep their own checks for what changes between the two (a folder removed meanwhile).

Checked as the user running the command: the unit runs both as the service's user.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

from monitor.daemon.statedir import StateDirError, check_state_dir
from monitor.history.recorder import audit_log_problem
from monitor.settings import Settings, notify_problems
from monitor.sinks.local import jsonl_problem


@dataclass
class StartCheck:
    """The lines a start would stop with (`errors`), and what it would only warn about."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_start(settings: Settings) -> StartCheck:
    """Everything the start refuses: the state dir, the output paths, the speech engine and audio device,
    the model backend's local parts. Lines as `monitor run` prints them (`error: ...`)."""
    found = StartCheck()
    try:
        check_state_dir(settings)
    except StateDirError as exc:
        found.errors.append(f"error: {exc}")
    outputs = [audit_log_problem(settings.service.audit_log)]
    if settings.sinks.jsonl.enabled:
        outputs.append(jsonl_problem(settings.sinks.jsonl.path))
    found.errors += [f"error: {problem}" for problem in outputs if problem is not None]
    _check_speaker(settings, found)
    found.errors += _backend_problems(settings)
    found.errors += [f"error: {problem}" for problem in notify_problems(settings, os.environ)]
    return found


def _check_speaker(settings: Settings, found: StartCheck) -> None:
    speaker = settings.sinks.speaker
    if not speaker.enabled:
        return
    from monitor.sinks.speaker import speaker_problem, speaker_refusal

    problem = speaker_problem(speaker)
    if problem is None:
        return
    if speaker.optional:
        found.warnings.append(f"{problem} (sinks.speaker.optional: the monitor runs without speech)")
    else:
        found.errors.append(f"error: {speaker_refusal(problem)}")


def _backend_problems(settings: Settings) -> list[str]:
    """The backends with local parts: the embedded model's packages, the scripted backend's script."""
    model = settings.model
    if model.backend == "embedded":
        from monitor.backends.embedded import embedded_problem

        problem = embedded_problem(model)
        return [f"error: {problem}"] if problem is not None else []
    if model.backend == "scripted":
        from monitor.backends.scripted import script_problems

        return script_problems(model)
    return []


# --------------------------------------------------------------------------- --online


_PROBE_TIMEOUT_S = 5.0


async def probe_online(settings: Settings) -> StartCheck:
    """`check-config --online`: ask the model endpoint for its models and connect to the broker, once each.

    The start does neither (an endpoint or broker that is down is retried while running); this is for a
    person who wants to know now. `warnings` holds what answered, `errors` what did not.
    """
    found = StartCheck()
    await asyncio.gather(_probe_model(settings, found), _probe_broker(settings, found))
    return found


async def _probe_model(settings: Settings, found: StartCheck) -> None:
    model = settings.model
    if model.backend != "openai" or model.base_url is None:
        found.warnings.append(f"online: model: backend '{model.backend}' runs here: nothing to probe")
        return
    url = model.base_url.rstrip("/") + "/models"
    key = model.api_key_value
    try:
        status, body = await asyncio.to_thread(_get, url, key, min(_PROBE_TIMEOUT_S, model.attempt_timeout_s))
    except OSError as exc:
        found.errors.append(f"error: online: model: {url}: {_reason(exc)}")
        return
    if status in (401, 403):
        found.errors.append(f"error: online: model: {url}: HTTP {status}: the endpoint refuses the key "
                            "(check the model's API key: its secret, api_key_env or api_key_file)")
        return
    found.warnings.append(f"online: model: {url} answered (HTTP {status}{_listed(body, model.model)})")


def _get(url: str, key: str | None, timeout_s: float) -> tuple[int, bytes]:
    if not url.startswith(("http://", "https://")):
        raise OSError("not an http(s) URL")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only, checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) only
            return int(response.status), response.read(1 << 20)
    except urllib.error.HTTPError as exc:  # an answer all the same
        return int(exc.code), b""


def _listed(body: bytes, wanted: str) -> str:
    """Whether the endpoint's model list names the configured model, when it gave one."""
    try:
        names = [str(entry.get("id")) for entry in json.loads(body)["data"] if isinstance(entry, dict)]
    except (ValueError, KeyError, TypeError):
        return ""
    if wanted in names:
        return f"; model '{wanted}' listed"
    return f"; model '{wanted}' NOT among the {len(names)} it lists: check model.model"


async def _probe_broker(settings: Settings, found: StartCheck) -> None:
    mqtt = settings.mqtt
    if mqtt is None:
        return
    import aiomqtt

    from monitor.mqtt.client import make_client

    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            async with make_client(mqtt, identifier=f"{mqtt.node_id}-check-{uuid.uuid4().hex[:6]}"):
                pass
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        found.errors.append(f"error: online: mqtt: {mqtt.broker}: {_reason(exc) or 'no answer'}")
        return
    found.warnings.append(f"online: mqtt: {mqtt.broker} accepted the connection")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
        return f"no answer within {_PROBE_TIMEOUT_S:g} s"
    reason = getattr(exc, "reason", None)  # urllib wraps the socket's error
    return str(reason if isinstance(reason, BaseException) else exc) or type(exc).__name__
