"""A scripted backend selected by config, for demos, simulations and tests.

The script is a JSON file: ``{"default": REPLY, "rules": [{"match": "text", "reply": REPLY}],
"latency_s": 0.0}`` where REPLY is an Assessment object or a raw string (to script
malformed answers). The first rule whose `match` occurs in the request wins.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from monitor.backends import ModelReply, ModelRequest, Usage, register_backend
from monitor.backends.settings import ModelSettings
from monitor.core.errors import ConfigError
from monitor.core.jsonio import MAX_FILE_BYTES, loads_bounded


class ScriptedBackend:
    """Answers from a script; never opens a socket."""

    name = "scripted"

    def __init__(self, settings: ModelSettings) -> None:
        self.model = settings.model
        self.label = settings.display_name
        self.accepts_images = settings.accepts_images is not False
        self.enforces_schema = False
        self.base_url: str | None = None  # in-process: no endpoint to probe
        self.script_path = settings.script
        self.rules: list[tuple[str, str]] = []
        self.default = json.dumps({"danger": False, "severity": "info", "confidence": 0.5})
        self.latency_s = 0.0
        self.calls = 0

    async def start(self) -> None:
        if self.script_path is None:
            return
        script = _load_script(self.script_path)
        self.rules = [(str(rule["match"]).lower(), _as_text(rule["reply"])) for rule in script.get("rules", [])]
        if "default" in script:
            self.default = _as_text(script["default"])
        self.latency_s = float(script.get("latency_s", 0.0))

    async def close(self) -> None:
        return None

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        prompt = json.dumps(request.messages).lower()
        text = next((reply for match, reply in self.rules if match in prompt), self.default)
        usage = Usage(prompt_tokens=len(prompt) // 4, completion_tokens=len(text) // 4, latency_s=self.latency_s)
        return ModelReply(text=text, model=self.model, usage=usage, backend=self.label)


def script_problems(settings: ModelSettings) -> list[str]:
    """What `start` would refuse about the script, in its words (`check-config`); reads it, changes nothing."""
    if settings.script is None:
        return []
    try:
        _load_script(settings.script)
    except ConfigError as exc:
        return exc.problems
    return []


def _load_script(path: Path) -> dict[str, Any]:
    try:
        data = loads_bounded(path.read_bytes(), what="scripted backend script", max_bytes=MAX_FILE_BYTES)
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{path}: scripted backend script unreadable: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: scripted backend script must be a JSON object"])
    for index, rule in enumerate(data.get("rules", [])):
        if not isinstance(rule, dict) or "match" not in rule or "reply" not in rule:
            raise ConfigError([f"{path}: rules[{index}]: needs 'match' and 'reply'"])
    return data


def _as_text(reply: Any) -> str:
    return reply if isinstance(reply, str) else json.dumps(reply)


@register_backend("scripted")
def _create(settings: ModelSettings) -> ScriptedBackend:
    return ScriptedBackend(settings)
