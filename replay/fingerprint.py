"""What a run measures, recorded in every run header; a resumed run must measure the same.

A run log can be resumed only into the very run it holds: the same records (by
content, not by position: ``text-1`` of one release folder is another record in
another), modality, ``--limit``, protocol, trials, pacing, prompts, model settings,
judge, and every setting that reaches the pipeline. Anything else would mix two
measurements under one score, so a mismatch is refused naming each key that differs, in
full, with its value there and now.

The settings are taken from the settings models themselves (`PIPELINE_SECTIONS`), not from a
list of keys kept by hand: a setting added to `[alerts]` next month is in the fingerprint by
itself. Only the keys in `NOT_MEASURED` are left out, each with the reason it cannot change a
verdict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from monitor.assess.prompt import ASSESSMENT_SCHEMA, SCHEMA_SYSTEM_PROMPT, SYSTEM_PROMPT
from monitor.assess.strategies import PROPOSE_PROMPT, VERIFY_PROMPT
from replay.pasbench import content_id

# 2: every pipeline setting (`settings`) instead of the strategy alone.
FINGERPRINT_VERSION = 2
# The sections of the monitor's settings that reach the replay's pipeline (model, windows, keyframe
# selection, alert lifecycle, assessment strategy): all their keys are fingerprinted.
PIPELINE_SECTIONS = ("model", "windows", "keyframes", "alerts", "assessment")
# A history replay also assesses each zone with its [[zones]] overrides.
HISTORY_SECTIONS = (*PIPELINE_SECTIONS, "zones")
# Keys that cannot change a verdict, and why; everything else in PIPELINE_SECTIONS is fingerprinted.
NOT_MEASURED: dict[str, str] = {
    "model.api_key": "a secret, never recorded",
    "model.api_key_env": "where the secret key is read from, not what is answered",
    "model.api_key_file": "where the secret key is read from, not what is answered",
    "model.concurrency": "how many calls at once (--concurrency): not what is answered",
    "model.attempt_timeout_s": "a call that times out is an error, not a verdict; the trial is retried",
    "model.total_timeout_s": "a call that times out is an error, not a verdict; the trial is retried",
    "model.max_retries": "retries decide whether a call fails, not what it answers",
    "model.backoff_base_s": "retries decide whether a call fails, not what it answers",
    "model.embedded.startup_timeout_s": "how long the embedded server may take to start",
    "windows.queue_size": "ignored by the monitor, kept so older config files stay valid",
    # A replay assesses with one backend (the first, or `--backend NAME`): that backend's own settings are the
    # [model] fingerprinted above; the failover around it never runs in a replay.
    "model.name": "a label shown with the verdicts, not what is answered",
    "model.fallbacks": "a replay assesses with one backend, whose settings are the [model] measured",
    "model.breaker": "when to fail over: a replay assesses with one backend",
    "model.allow_embedded_fallback": "only permits a fallback: a replay assesses with one backend",
}
# How each component is called in a refusal, in the order they are reported.
COMPONENTS = {
    "data": "benchmark records",
    "safe_controls": "safe controls",
    "modality": "modality",
    "limit": "--limit",
    "protocol": "protocol",
    "trials": "trials per sample",
    "pacing": "pacing (--interval, --speed)",
    "preset": "--preset",
    "image_input": "--image-input",
    "prompts": "monitor prompts",
    "model": "model",
    "judge": "judge",
    "settings": "setting",
}


def digest(value: Any) -> str:
    """A short sha256 of a JSON-able value (canonical form)."""
    return content_id(json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")), length=16)


def prompts_digest() -> str:
    """The monitor's prompts and answer schema: a change makes earlier trials another measurement."""
    return digest([SYSTEM_PROMPT, SCHEMA_SYSTEM_PROMPT, ASSESSMENT_SCHEMA, PROPOSE_PROMPT, VERIFY_PROMPT])


def settings_fingerprint(settings: BaseModel, sections: tuple[str, ...] = PIPELINE_SECTIONS) -> dict[str, Any]:
    """Every key of the pipeline's settings sections (JSON values), less the keys that cannot change a verdict."""
    marks = {name: _dump(getattr(settings, name)) for name in sections}
    for key in NOT_MEASURED:
        *path, last = key.split(".")
        block = marks
        for part in path:
            block = block.get(part) or {}
        block.pop(last, None)
    return marks


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):  # [[zones]]
        return [_dump(item) for item in value]
    return value


def settings_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """One line per settings key that differs between two `settings_fingerprint`s, named in full."""
    return differences({"version": FINGERPRINT_VERSION, "settings": dict(old)},
                       {"version": FINGERPRINT_VERSION, "settings": dict(new)}, old_records={}, new_records={})


def fingerprint(*, data: Mapping[str, str], safe: Mapping[str, str], modality: str, limit: int | None,
                protocol: str, trials: int, pacing: Mapping[str, float], preset: str, image_input: str,
                model: Mapping[str, Any], judge: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint of a run; `data` and `safe` map position ids to content ids; `settings` is
    `settings_fingerprint` of the monitor's settings."""
    return {
        "version": FINGERPRINT_VERSION,
        "data": {"n": len(data), "sha256": digest(sorted(data.items()))},
        "safe_controls": {"n": len(safe), "sha256": digest(sorted(safe.items()))},
        "modality": modality, "limit": limit, "protocol": protocol, "trials": trials, "pacing": dict(pacing),
        "preset": preset, "image_input": image_input, "prompts": prompts_digest(), "model": dict(model),
        # Usage counters are not part of what the judge is.
        "judge": {k: v for k, v in judge.items() if k != "measured"}, "settings": dict(settings),
    }


def differences(old: Mapping[str, Any], new: Mapping[str, Any], *, old_records: Mapping[str, str],
                new_records: Mapping[str, str]) -> list[str]:
    """One line per key that differs, naming it in full and saying what it was there and is now."""
    if old.get("version") != new.get("version"):
        return [f"fingerprint version {old.get('version')} there, {new.get('version')} now (the log was written "
                "by a version of the monitor that recorded less of what a run measures, so it cannot be resumed "
                "safely)"]
    lines: list[str] = []
    for key, name in COMPONENTS.items():
        if old.get(key) == new.get(key):
            continue
        if key in ("data", "safe_controls"):
            lines.append(f"{name}: {_records_change(old_records, new_records, safe=key == 'safe_controls')}")
            continue
        lines += key_differences(name, old.get(key), new.get(key))
    return lines


def key_differences(name: str, old: Any, new: Any) -> list[str]:
    """One line per key of two (nested) values that differs: `name key.path: old there, new now`."""
    before, after = _flatten(old), _flatten(new)
    lines = []
    for path in sorted(before.keys() | after.keys()):
        if before.get(path, _ABSENT) != after.get(path, _ABSENT):
            label = f"{name} {path}" if path else name
            lines.append(f"{label}: {_value(before.get(path, _ABSENT))} there, {_value(after.get(path, _ABSENT))} now")
    return lines


_ABSENT = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys (`alerts.min_severity`); anything else under the prefix itself."""
    if not isinstance(value, Mapping) or not value:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, inner in value.items():
        flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _records_change(old: Mapping[str, str], new: Mapping[str, str], *, safe: bool) -> str:
    def pick(records: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in records.items() if k.startswith("safe-") == safe}

    before, after = pick(old), pick(new)
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    parts = [f"{len(before)} records there, {len(after)} now"]
    if changed:
        first = changed[0]
        parts.append(f"{len(changed)} ids name other records (e.g. {first} is #{before[first]} there, "
                     f"#{after[first]} now)")
    if added:
        parts.append(f"{len(added)} not in the run log (e.g. {added[0]})")
    if removed:
        parts.append(f"{len(removed)} no longer planned (e.g. {removed[0]})")
    return "; ".join(parts)


def _value(value: Any) -> str:
    """A value as a refusal shows it: whole, except a very long one (the key before it is never cut)."""
    if value is _ABSENT:
        return "(not recorded)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."
