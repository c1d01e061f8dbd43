"""What a run measures, recorded in every run header; a resumed run must measure the same.

A run log can be resumed only into the very run it holds: the same records (by
content, not by position: ``text-1`` of one release folder is another record in
another), modality, ``--limit``, protocol, trials, pacing, prompts, model settings,
judge and strategy. Anything else would mix two measurements under one score, so a
mismatch is refused with the components that differ, named.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from monitor.assess.prompt import ASSESSMENT_SCHEMA, SCHEMA_SYSTEM_PROMPT, SYSTEM_PROMPT
from monitor.assess.strategies import PROPOSE_PROMPT, VERIFY_PROMPT
from replay.pasbench import content_id

FINGERPRINT_VERSION = 1
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
    "model": "model settings",
    "judge": "judge",
    "strategy": "[assessment] strategy",
}


def digest(value: Any) -> str:
    """A short sha256 of a JSON-able value (canonical form)."""
    return content_id(json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")), length=16)


def prompts_digest() -> str:
    """The monitor's prompts and answer schema: a change makes earlier trials another measurement."""
    return digest([SYSTEM_PROMPT, SCHEMA_SYSTEM_PROMPT, ASSESSMENT_SCHEMA, PROPOSE_PROMPT, VERIFY_PROMPT])


def fingerprint(*, data: Mapping[str, str], safe: Mapping[str, str], modality: str, limit: int | None,
                protocol: str, trials: int, pacing: Mapping[str, float], preset: str, image_input: str,
                model: Mapping[str, Any], judge: Mapping[str, Any], strategy: Mapping[str, Any]) -> dict[str, Any]:
    """The fingerprint of a run; `data` and `safe` map position ids to content ids."""
    return {
        "version": FINGERPRINT_VERSION,
        "data": {"n": len(data), "sha256": digest(sorted(data.items()))},
        "safe_controls": {"n": len(safe), "sha256": digest(sorted(safe.items()))},
        "modality": modality, "limit": limit, "protocol": protocol, "trials": trials, "pacing": dict(pacing),
        "preset": preset, "image_input": image_input, "prompts": prompts_digest(), "model": dict(model),
        # Usage counters are not part of what the judge is.
        "judge": {k: v for k, v in judge.items() if k != "measured"}, "strategy": dict(strategy),
    }


def differences(old: Mapping[str, Any], new: Mapping[str, Any], *, old_records: Mapping[str, str],
                new_records: Mapping[str, str]) -> list[str]:
    """One line per component that differs, naming it and saying how."""
    lines: list[str] = []
    for key, name in COMPONENTS.items():
        if old.get(key) == new.get(key):
            continue
        if key in ("data", "safe_controls"):
            lines.append(f"{name}: {_records_change(old_records, new_records, safe=key == 'safe_controls')}")
        else:
            lines.append(f"{name}: {_short(old.get(key))} there, {_short(new.get(key))} now")
    return lines


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


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 100 else text[:97] + "..."
