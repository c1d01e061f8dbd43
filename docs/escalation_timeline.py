"""Draw docs/escalation-timeline.svg from a run of the real escalation engine on a fake clock.

The picture cannot drift from the code: tests/test_escalation_docs.py regenerates it and compares.
Run: .venv/bin/python docs/escalation_timeline.py
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path

from monitor.alerts import AlertEvent, AlertManager, AlertSettings
from monitor.assess.verdict import Assessment, Verdict
from monitor.backends import Usage
from monitor.escalation.engine import AckRequest, Escalator
from monitor.escalation.settings import EscalationSettings, Ladder
from monitor.windows import Window

OUT = Path(__file__).with_name("escalation-timeline.svg")
SETTINGS = EscalationSettings(enabled=True, confirmed_within_s=30, max_per_alert=3,
                              warning=Ladder(escalate_after_s=60, repeat_after_s=60, caregivers_from_level=2))
UPDATES_EVERY_S, LAST_UPDATE_S, ACK_AT_S, TTL_S = 15, 210, 150, 60
WIDTH, LEFT, RIGHT, SCALE = 960, 190, 20, 2.6  # pixels per second
LANES = ("model: hazard seen", "alert events", "spoken aloud", "<prefix>/escalations")
COLORS = {"new": "#1f77b4", "update": "#9e9e9e", "escalate": "#d62728", "ack": "#2ca02c", "end": "#555555"}


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def simulate() -> list[AlertEvent]:
    """One `warning` hazard seen every 15 s for 210 s, acknowledged at 150 s; every event the engine publishes."""
    clock = Clock()
    alerts = AlertManager(AlertSettings(dedup_ttl_s=TTL_S), clock=clock)
    engine = Escalator(SETTINGS, alerts=alerts, clock=clock)
    assessment = Assessment.model_validate({"danger": True, "severity": "warning", "hazard": "fall from ladder",
                                            "reason": "Leaning out.", "advice": "Climb down.", "confidence": 0.9})
    verdict = Verdict(assessment=assessment, model="m", usage=Usage())
    published: list[AlertEvent] = []
    for second in range(0, LAST_UPDATE_S + TTL_S + 2):
        clock.now = float(second)
        if second <= LAST_UPDATE_S and second % UPDATES_EVERY_S == 0:
            window = Window(id=f"w{second}", zone="garage", observations=(), new_count=1, created_at=clock.now)
            decided = alerts.decide(window, verdict)
            assert decided is not None
            published.append(engine.annotate(decided))
        if second == ACK_AT_S:
            published += engine.acknowledge(AckRequest(None, "garage", "carer", "mqtt")).events
        published += [engine.annotate(e) for e in alerts.expire()]
        published += engine.tick()
    return published


def x(seconds: float) -> float:
    return LEFT + seconds * SCALE


def lane_y(index: int) -> float:
    return 70 + index * 52


def marks(events: list[AlertEvent]) -> list[str]:
    parts = []
    for event in events:
        alert = event.alert
        at = x(event.at)
        lanes = [0] if event.type in ("new", "update") else []
        lanes += [1]
        if event.type in ("new", "escalate") and alert.acknowledged_at is None:
            lanes.append(2)
        if event.type == "escalate" and alert.caregivers_notified:
            lanes.append(3)
        color = COLORS[event.type]
        for lane in lanes:
            y = lane_y(lane)
            if lane == 0:
                parts.append(f'<circle cx="{at:.1f}" cy="{y}" r="3.5" fill="{color}"/>')
            elif lane == 1 and event.type == "update":
                parts.append(f'<line x1="{at:.1f}" y1="{y - 6}" x2="{at:.1f}" y2="{y + 6}" stroke="{color}"/>')
            else:
                parts.append(f'<rect x="{at - 5:.1f}" y="{y - 9}" width="10" height="18" rx="2" fill="{color}"/>')
        if event.type != "update":
            y = lane_y(1) + (24 if event.type == "ack" else -14)
            parts.append(f'<text x="{at:.1f}" y="{y}" text-anchor="middle" font-size="11" '
                         f'fill="{color}">{escape(label(event))}</text>')
    return parts


def label(event: AlertEvent) -> str:
    alert = event.alert
    if event.type == "escalate":
        return f"level {alert.escalation_level} ({alert.severity})"
    if event.type == "ack":
        return f"ack by {alert.acknowledged_by}"
    return f"{event.type} ({alert.severity})" if event.type == "new" else event.type


def brace(start: float, end: float, y: float, text: str) -> list[str]:
    return [f'<line x1="{x(start):.1f}" y1="{y}" x2="{x(end):.1f}" y2="{y}" stroke="#444" '
            'marker-start="url(#arrow)" marker-end="url(#arrow)"/>',
            f'<text x="{(x(start) + x(end)) / 2:.1f}" y="{y - 5}" text-anchor="middle" font-size="11" '
            f'fill="#444">{escape(text)}</text>']


def render(events: list[AlertEvent]) -> str:
    end = max(e.at for e in events) + 10
    height = lane_y(len(LANES)) + 70
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="6" markerHeight="6" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#444"/></marker></defs>',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
             '<text x="10" y="22" font-size="14" font-weight="bold">One warning that persists: escalation until '
             'someone acknowledges it</text>']
    for index, name in enumerate(LANES):
        y = lane_y(index)
        parts.append(f'<line x1="{LEFT}" y1="{y}" x2="{x(end):.1f}" y2="{y}" stroke="#ddd"/>')
        parts.append(f'<text x="10" y="{y + 4}" font-size="12">{escape(name)}</text>')
    for second in range(0, int(end), 30):
        parts.append(f'<text x="{x(second):.1f}" y="{height - 40}" text-anchor="middle" font-size="10" '
                     f'fill="#666">{second} s</text>')
    parts += marks(events)
    escalations = [e.at for e in events if e.type == "escalate"]
    ack = next(e.at for e in events if e.type == "ack")
    parts += brace(0, escalations[0], height - 24, "escalate_after_s")
    parts += brace(escalations[0], escalations[1], height - 24, "repeat_after_s")
    parts += brace(LAST_UPDATE_S, LAST_UPDATE_S + TTL_S, height - 24, "alerts.dedup_ttl_s")
    parts.append(f'<text x="{x(ack) + 8:.1f}" y="{lane_y(2) + 4}" font-size="11" fill="{COLORS["ack"]}">'
                 'no more escalations; updates go on; the end is normal</text>')
    parts.append(f'<text x="{LEFT}" y="{lane_y(3) + 30}" font-size="11" fill="#444">each escalation needs an '
                 'update after the previous warning, at most confirmed_within_s old (still confirmed)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    OUT.write_text(render(simulate()), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
