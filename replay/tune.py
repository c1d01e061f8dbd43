"""`monitor replay tune`: sweep one [assessment] setting and recommend a value.

For each value of ``--param NAME=V1,V2,...`` (NAME a dotted key under ``[assessment]``,
e.g. ``vote.m`` or ``temporal.threshold``) the replay runs into ``OUT/<NAME>=<V>/`` with
the configuration's assessment updated. All settings share one response cache
(``OUT/cache.jsonl``; the strategy is not part of a cache key, so an identical model
request is asked once across settings) and one judge cache. The runs are then compared
side by side (``OUT/compare.md``) and the setting with the highest Robustness among those
whose false-alarm rate on the safe controls is within the budget is recommended (ties: fewer
calls per sample, then the earlier value), written as an ``[assessment]`` section to
``OUT/recommended.toml``.

This module holds the pure parts (parsing, applying, choosing, writing the TOML); the
command line runs the replays (replay/cli.py).
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from monitor.assess.settings import AssessmentSettings
from monitor.core.errors import ConfigError
from replay.compare import ScoredRun
from replay.runlog import strategy_label

STRATEGY_SECTIONS = ("vote", "verify", "temporal")
RECOMMENDED_FILE = "recommended.toml"
COMPARE_FILE = "compare.md"


@dataclass(frozen=True, slots=True)
class SweepParam:
    """One dotted key under [assessment] and the values to try (raw text and parsed)."""

    name: str
    raw: tuple[str, ...]
    values: tuple[Any, ...]

    def folder(self, index: int) -> str:
        return f"{self.name}={self.raw[index]}"


def parse_value(text: str) -> Any:
    """A value as TOML reads it (1 -> int, 0.5 -> float, true -> bool), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_param(text: str) -> SweepParam:
    """``NAME=V1,V2,...`` as a SweepParam; ConfigError naming the problem otherwise."""
    name, sep, values = text.partition("=")
    name = name.strip()
    raw = tuple(v.strip() for v in values.split(",") if v.strip())
    if not sep or not name or not raw:
        raise ConfigError([f"--param {text!r}: expected NAME=V1,V2,... (e.g. vote.m=1,2,3)"])
    if len(set(raw)) != len(raw):
        raise ConfigError([f"--param {text!r}: a value is repeated"])
    if any(c in name for c in "/\\") or any(c in v for v in raw for c in "/\\"):
        raise ConfigError([f"--param {text!r}: names and values become folder names; no slashes"])
    return SweepParam(name, raw, tuple(parse_value(v) for v in raw))


@dataclass(frozen=True, slots=True)
class Applied:
    """The assessment with one key set, and what had to change besides it."""

    assessment: AssessmentSettings
    notes: tuple[str, ...] = ()


def apply_param(base: AssessmentSettings, name: str, value: Any) -> Applied:
    """`base` with the dotted key `name` set to `value`, validated as the config would be.

    Setting a key of a strategy section (``vote.m``) that the configured strategy does not
    use switches the strategy to that section (noted), so the sweep measures something.
    """
    data = base.model_dump(mode="json")
    parts = name.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "[assessment]"
            choices = ", ".join(sorted(node)) if isinstance(node, dict) else "none (not a section)"
            raise ConfigError([f"--param {name}: no key '{part}' under {where} (choose from: {choices})"])
        if depth == len(parts) - 1:
            if isinstance(node[part], dict):
                raise ConfigError([f"--param {name}: is a section; name one of its keys"])
            node[part] = value
        else:
            node = node[part]
    notes: list[str] = []
    section = parts[0] if len(parts) > 1 else None
    if section in STRATEGY_SECTIONS:
        strategy = data["strategy"]
        used = strategy == section or (strategy == "temporal" and data["temporal"]["inner"] == section)
        if not used:
            notes.append(f"strategy set to '{section}' (the configured '{strategy}' does not use {name})")
            data["strategy"] = section
    try:
        assessment = AssessmentSettings.model_validate(data)
    except ValidationError as exc:
        problems = [f"--param {name}={value!r}: assessment.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                    for e in exc.errors()]
        raise ConfigError(problems) from None
    return Applied(assessment, tuple(notes))


@dataclass
class Candidate:
    """One setting of the sweep, with its scored run."""

    value: str
    assessment: AssessmentSettings
    run: ScoredRun

    @property
    def label(self) -> str:
        return strategy_label(self.assessment)


@dataclass
class Recommendation:
    """The chosen setting (or None), and why."""

    chosen: Candidate | None
    budget: float
    lines: list[str] = field(default_factory=list)


def recommend(candidates: Sequence[Candidate], *, max_false_alarm: float) -> Recommendation:
    """Highest Robustness among settings whose false-alarm rate is within the budget.

    Ties go to fewer calls per sample, then to the earlier value. A run without safe
    controls has no false-alarm rate and cannot be shown to fit the budget; an incomplete
    run's numbers are not the setting's, and a setting whose alerts are shown not to depend
    on danger (content-blind, or inverted) is no recommendation: none of them is eligible.
    """
    fitting: list[tuple[int, Candidate]] = []
    lines: list[str] = []
    for index, candidate in enumerate(candidates):
        rate = candidate.run.false_alarm_rate
        verdict = (candidate.run.scores.get("discrimination_verdict") or {}).get("verdict")
        if candidate.run.scores.get("complete") is False:
            lines.append(f"{candidate.value}: INCOMPLETE run (run the same command again to finish it); not eligible")
        elif verdict in ("content-blind", "inverted"):
            lines.append(f"{candidate.value}: its alerts do not depend on danger on these controls ({verdict}); "
                         "not eligible")
        elif rate is None:
            lines.append(f"{candidate.value}: no false-alarm rate (no safe controls scored); not eligible")
        elif rate > max_false_alarm + 1e-12:
            lines.append(f"{candidate.value}: false alarms {100 * rate:.1f}% exceed the budget "
                         f"{100 * max_false_alarm:.1f}%")
        else:
            fitting.append((index, candidate))
    if not fitting:
        lines.append(f"no setting keeps false alarms within {100 * max_false_alarm:.1f}%: nothing recommended")
        return Recommendation(None, max_false_alarm, lines)

    def key(item: tuple[int, Candidate]) -> tuple[float, float, int]:
        index, candidate = item
        robustness = candidate.run.robustness
        calls = candidate.run.calls_per_sample
        return (-1.0 if robustness is None else robustness, -(math.inf if calls is None else calls), -index)

    _, chosen = max(fitting, key=key)
    run = chosen.run
    robustness = "n/a" if run.robustness is None else f"{100 * run.robustness:.1f}%"
    rate = run.false_alarm_rate or 0.0
    calls = "n/a" if run.calls_per_sample is None else f"{run.calls_per_sample:g}"
    lines.append(f"recommended: {chosen.value} ({chosen.label}): robustness {robustness}, false alarms "
                 f"{100 * rate:.1f}% (budget {100 * max_false_alarm:.1f}%), {calls} calls per sample")
    return Recommendation(chosen, max_false_alarm, lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as a TOML value")


def assessment_toml(assessment: AssessmentSettings, *, comment: Sequence[str] = ()) -> str:
    """The [assessment] section in config form (merge it into a monitor config)."""
    data = assessment.recorded()
    lines = [f"# {line}" for line in comment]
    lines += ["[assessment]"]
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines += ["", f"[assessment.{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"
