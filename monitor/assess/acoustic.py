"""The direct path: a smoke or CO alarm pattern heard is a critical verdict without a model call.

It is the one hazard the monitor can name without a model: the temporal patterns
of smoke (T3) and carbon-monoxide (T4) alarms are standardised, and the
microphone source (sensors/audio.py) emits an `AlarmHeard` only after two full
cycles. The pipeline turns each one into a `Verdict` here and hands it to the
`AlertManager` like any other, so the alert has the normal lifecycle (new,
update while it keeps sounding, end when it is no longer confirmed), escalation
and every sink, whether the model is reachable or the zone's cameras see.
"""

from __future__ import annotations

from collections.abc import Iterable

from monitor.assess.verdict import Assessment, Verdict, same_hazard
from monitor.backends import Usage
from sensors.types import AlarmHeard, AlarmKind

STRATEGY = "alarm_pattern"
MODEL = "none: alarm pattern heard"
HAZARDS: dict[AlarmKind, str] = {"smoke": "smoke alarm sounding", "carbon_monoxide": "carbon monoxide alarm sounding"}
_ADVICE: dict[AlarmKind, str] = {
    "smoke": "A smoke alarm is sounding: check for fire or smoke now, and if there is any, get everyone out and "
             "call the fire service.",
    "carbon_monoxide": "A carbon monoxide alarm is sounding: open windows, turn off fuel-burning appliances, get "
                       "everyone into fresh air and call the emergency number; CO has no smell.",
}


def alarm_verdict(entry: AlarmHeard) -> Verdict:
    """The critical verdict an alarm pattern heard stands for (no model, no tokens)."""
    assessment = Assessment(
        danger=True, severity="critical", hazard=HAZARDS[entry.alarm],
        reason=f"Microphone '{entry.source}' {entry.text}. The pattern is the standard one of this alarm, "
               "recognised without a model.",
        advice=_ADVICE[entry.alarm], evidence=[entry.text], confidence=1.0)
    return Verdict(assessment=assessment, model=MODEL, usage=Usage(calls=0, attempts=0), strategy=STRATEGY)


def alarm_kinds(hazards: Iterable[str]) -> list[AlarmKind]:
    """Which alarms open alerts with these hazards stand for (what the `smoke` and `carbon_monoxide` binary
    sensors show): the same test the alert manager uses to continue an alert."""
    hazards = list(hazards)
    return [kind for kind, name in HAZARDS.items() if any(same_hazard(hazard, name) for hazard in hazards)]
