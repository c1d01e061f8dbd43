"""Scoring a replay of the home's history: pure functions of the run log and the labels snapshot.

Per window, "warned" means the window raised or confirmed an alert (a `new` or
`update` event) under the alert settings of its side; "danger" is the verdict itself.

- **Agreement**: on windows both sides assessed without error, the share where the
  candidate's verdict (danger or not) is the recorded one's, and the share where both
  warned or both stayed silent, with the four cells.
- **Labels** (the latest label of each alert; only alerts whose windows are in this
  replay): a `helpful` alert is **kept** when the candidate warned on at least one of
  the windows that raised or confirmed it; a `false_alarm` alert is **avoided** when it
  warned on none of them; a `missed` report (zone, from, to) is **caught** when it warned
  on a window of that zone within the range, and how early is the time from the
  report's start to that first warning. The recorded model is scored the same way.
- **Cost** per window: model calls, tokens and model latency (cached answers count with
  the cost they had when they were made: what the candidate costs live).

Intervals are Wilson intervals over the labelled alerts (or reports), which are few:
read them as "how sure", not as a benchmark.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.history.feedback import FeedbackEntry
from monitor.history.times import utc_label
from replay.history_log import HistoryRun, SegmentRecord
from replay.score import proportion

SIDES = ("recorded", "candidate")
DISAGREEMENTS_IN_SCORES = 2000
# Upper edges of the model-latency bins per window, in seconds (the last bin is open).
LATENCY_EDGES = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class WindowResult:
    """One replayed window: its segment and zone, the two outcomes, and the observations when they disagree."""

    segment: str
    zone: str
    data: dict[str, Any]

    @property
    def at(self) -> float:
        return float(self.data["at"])

    def side(self, name: str) -> dict[str, Any]:
        return dict(self.data.get(name) or {})

    def warned(self, name: str) -> bool:
        return bool(self.side(name).get("warned"))

    @property
    def both_assessed(self) -> bool:
        return "candidate" in self.data and not self.side("recorded").get("error") \
            and not self.side("candidate").get("error")


@dataclass
class AlertWindows:
    """The windows of one recorded alert in this replay."""

    alert_id: str
    zone: str
    hazard: str
    windows: list[WindowResult] = field(default_factory=list)


def window_results(segments: Iterable[SegmentRecord]) -> list[WindowResult]:
    """Every window of the finished segments that the candidate assessed or had to skip, in time order."""
    results = [WindowResult(s.id, s.zone, w) for s in segments if s.status == "ok" for w in s.windows]
    return sorted(results, key=lambda r: (r.at, r.zone))


def latest_labels(labels: Iterable[FeedbackEntry]) -> tuple[dict[str, FeedbackEntry], list[FeedbackEntry]]:
    """The latest label of each alert, and every `missed` report."""
    by_alert: dict[str, FeedbackEntry] = {}
    reports: list[FeedbackEntry] = []
    for entry in sorted(labels, key=lambda e: (e.given_at, e.id)):
        if entry.label == "missed":
            reports.append(entry)
        elif entry.alert_id is not None:
            by_alert[entry.alert_id] = entry
    return by_alert, reports


# --------------------------------------------------------------------------- measures


def agreement(results: Sequence[WindowResult]) -> dict[str, Any]:
    """How often the candidate's verdict and warning match the recorded ones."""
    both = [r for r in results if r.both_assessed]
    same_verdict = sum(1 for r in both if bool(r.side("recorded").get("danger")) == bool(
        r.side("candidate").get("danger")))
    cells = Counter(_cell(r.warned("recorded"), r.warned("candidate")) for r in both)
    same_warning = cells["both warned"] + cells["neither warned"]
    return {
        "windows": len(both),
        "verdict": _share(same_verdict, len(both)),
        "warning": _share(same_warning, len(both)),
        "cells": {name: cells.get(name, 0) for name in
                  ("both warned", "only recorded warned", "only candidate warned", "neither warned")},
    }


def _cell(recorded: bool, candidate: bool) -> str:
    if recorded and candidate:
        return "both warned"
    if recorded:
        return "only recorded warned"
    return "only candidate warned" if candidate else "neither warned"


def _share(count: int, total: int) -> dict[str, Any]:
    interval = proportion(count, total)
    return {"count": count, "of": total, "share": None if interval.value is None else round(interval.value, 6),
            "ci": interval.ci()}


def alert_windows(results: Sequence[WindowResult]) -> dict[str, AlertWindows]:
    """Recorded alert id -> the replayed windows that raised or confirmed it."""
    alerts: dict[str, AlertWindows] = {}
    for result in results:
        recorded = result.side("recorded")
        alert_id = recorded.get("alert_id")
        if alert_id and recorded.get("warned"):
            entry = alerts.setdefault(alert_id, AlertWindows(alert_id, result.zone, str(recorded.get("hazard", ""))))
            entry.windows.append(result)
    return alerts


def labelled(results: Sequence[WindowResult], labels: Iterable[FeedbackEntry]) -> dict[str, Any]:
    """Helpful alerts kept, false alarms avoided, unclear ones warned on, missed hazards caught: both sides."""
    by_alert, reports = latest_labels(labels)
    windows = alert_windows(results)
    out: dict[str, Any] = {}
    for label, measure in (("helpful", "kept"), ("false_alarm", "avoided"), ("unclear", "warned")):
        ids = [alert_id for alert_id, entry in by_alert.items() if entry.label == label]
        present = [windows[a] for a in ids if a in windows]
        out[label] = _alert_measure(present, by_alert, measure, not_replayed=len(ids) - len(present))
    out["missed"] = _missed(results, reports)
    return out


def _alert_measure(alerts: Sequence[AlertWindows], labels: dict[str, FeedbackEntry], measure: str, *,
                   not_replayed: int) -> dict[str, Any]:
    details = []
    counts = dict.fromkeys(SIDES, 0)
    for alert in alerts:
        row: dict[str, Any] = {"alert_id": alert.alert_id, "zone": alert.zone, "hazard": alert.hazard,
                               "windows": len(alert.windows), "note": labels[alert.alert_id].note,
                               "at": alert.windows[0].at}
        for side in SIDES:
            warned = any(w.warned(side) for w in alert.windows)
            success = not warned if measure == "avoided" else warned
            counts[side] += int(success)
            row[side] = success
        details.append(row)
    block: dict[str, Any] = {"measure": measure, "n": len(alerts), "not_in_replay": not_replayed,
                             "details": details}
    for side in SIDES:
        block[side] = _share(counts[side], len(alerts))
    return block


def _missed(results: Sequence[WindowResult], reports: Sequence[FeedbackEntry]) -> dict[str, Any]:
    by_zone: dict[str, list[WindowResult]] = defaultdict(list)
    for result in results:
        by_zone[result.zone].append(result)
    details = []
    counts = dict.fromkeys(SIDES, 0)
    delays: dict[str, list[float]] = {side: [] for side in SIDES}
    skipped = 0
    for report in reports:
        inside = [r for r in by_zone.get(report.zone, []) if report.start <= r.at <= report.end]
        if not inside:
            skipped += 1
            continue
        row: dict[str, Any] = {"zone": report.zone, "from": report.start, "to": report.end, "note": report.note,
                               "windows": len(inside)}
        for side in SIDES:
            first = next((r for r in inside if r.warned(side)), None)
            row[side] = first is not None
            row[f"{side}_delay_s"] = None if first is None else round(first.at - report.start, 3)
            if first is not None:
                counts[side] += 1
                delays[side].append(first.at - report.start)
        details.append(row)
    block: dict[str, Any] = {"measure": "caught", "n": len(details), "not_in_replay": skipped, "details": details}
    for side in SIDES:
        block[side] = _share(counts[side], len(details))
        block[f"{side}_delay_s"] = _summary(delays[side])
    return block


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"mean": round(statistics.fmean(values), 4), "median": round(statistics.median(values), 4),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4),
            "min": round(ordered[0], 4), "max": round(ordered[-1], 4)}


def cost(results: Sequence[WindowResult]) -> dict[str, Any]:
    """Calls, tokens and model latency per window, for each side (windows it assessed)."""
    out: dict[str, Any] = {}
    for side in SIDES:
        usages = [r.side(side).get("usage") or {} for r in results if side in r.data]
        tokens = [float(u.get("prompt_tokens", 0) + u.get("completion_tokens", 0)) for u in usages]
        out[side] = {
            "windows": len(usages),
            "calls": _summary([float(u.get("calls", 0)) for u in usages]),
            "tokens": _summary(tokens),
            "latency_s": _summary([float(u.get("latency_s", 0.0)) for u in usages]),
            "latency_bins": latency_bins([float(u.get("latency_s", 0.0)) for u in usages]),
            "total_calls": sum(int(u.get("calls", 0)) for u in usages),
            "total_tokens": int(sum(tokens)),
        }
    return out


def latency_bins(values: Sequence[float]) -> list[int]:
    """How many windows fall in each latency bin (LATENCY_EDGES, then one open bin)."""
    counts = [0] * (len(LATENCY_EDGES) + 1)
    for value in values:
        counts[next((i for i, edge in enumerate(LATENCY_EDGES) if value <= edge), len(LATENCY_EDGES))] += 1
    return counts


def by_zone(results: Sequence[WindowResult]) -> dict[str, Any]:
    """Per zone: windows, how many each side warned on, and the warning agreement."""
    zones: dict[str, list[WindowResult]] = defaultdict(list)
    for result in results:
        zones[result.zone].append(result)
    return {zone: {"windows": len(items),
                   "recorded_warned": sum(1 for r in items if r.warned("recorded")),
                   "candidate_warned": sum(1 for r in items if "candidate" in r.data and r.warned("candidate")),
                   "agreement": agreement(items)["warning"]["share"]}
            for zone, items in sorted(zones.items())}


def disagreements(results: Sequence[WindowResult], labels: Iterable[FeedbackEntry]) -> list[dict[str, Any]]:
    """The windows where the two sides differ in verdict or warning, with their observations and any label."""
    by_alert, _ = latest_labels(labels)
    out = []
    for result in results:
        if "observations" not in result.data:
            continue
        recorded, candidate = result.side("recorded"), result.side("candidate")
        label = by_alert.get(recorded.get("alert_id") or "")
        out.append({
            "segment": result.segment, "zone": result.zone, "window": result.data.get("window"),
            "at": result.at, "when": utc_label(result.at), "label": label.label if label else None,
            "recorded": {k: recorded.get(k) for k in ("danger", "warned", "hazard", "severity", "reason")},
            "candidate": {k: candidate.get(k) for k in ("danger", "warned", "hazard", "severity", "reason")},
            "observations": list(result.data["observations"]),
        })
    return out


def coverage(run: HistoryRun, results: Sequence[WindowResult]) -> dict[str, Any]:
    segments = run.segments
    planned = list(dict.fromkeys(s for h in run.headers for s in h.planned))
    skipped = Counter(str(r.data["skipped"]) for r in results if "skipped" in r.data)
    return {
        "segments": len(planned) or len(segments),
        "segments_ok": sum(1 for s in segments if s.status == "ok"),
        "segments_failed": [s.id for s in segments if s.status != "ok"],
        "segments_not_run": [s for s in planned if s not in {x.id for x in segments}],
        "windows": len(results),
        "windows_replayed": sum(1 for r in results if "candidate" in r.data),
        "windows_skipped": dict(skipped),
        "windows_missing_frames": sum(1 for r in results if r.data.get("frames_missing")),
        "windows_rebuilt_differently": sum(1 for r in results if r.data.get("reconstructed") is False),
        "problems": list(dict.fromkeys(p for h in run.headers for p in h.problems)),
        "torn_lines": run.torn_lines,
    }


def completeness(covered: dict[str, Any]) -> dict[str, Any]:
    """Whether every planned segment was replayed and every history line read; what is missing if not."""
    reasons = []
    for key, text in (("segments_not_run", "segments not run"), ("segments_failed", "segments failed")):
        if covered[key]:
            reasons.append(f"{len(covered[key])} {text} ({', '.join(covered[key][:5])}"
                           + (f" and {len(covered[key]) - 5} more" if len(covered[key]) > 5 else "") + ")")
    if covered["problems"]:
        reasons.append(f"{len(covered['problems'])} lines of the history could not be read (see Coverage)")
    return {"complete": not reasons, "reasons": reasons}


def score_history(run: HistoryRun, labels: Sequence[FeedbackEntry]) -> dict[str, Any]:
    """scores.json of a history replay: completeness first."""
    header = run.headers[-1] if run.headers else None
    results = window_results(run.segments)
    covered = coverage(run, results)
    whole = completeness(covered)
    replayed = [r for r in results if "candidate" in r.data]
    found = disagreements(replayed, labels)
    recorded_models = Counter(f"{r.side('recorded').get('model')} ({r.side('recorded').get('strategy')})"
                              for r in replayed)
    usage = Counter[str]()
    for segment in run.segments:
        for key in ("calls", "cached_calls", "prompt_tokens", "completion_tokens", "spent_tokens"):
            usage[key] += int(segment.usage.get(key, 0))
    return {
        "complete": whole["complete"],
        "completeness": whole,
        "benchmark": "history",
        "source": header.source if header else "",
        "since": header.since if header else None,
        "until": header.until if header else None,
        "model": header.model if header else {},
        "strategy": header.strategy if header else {},
        "strategy_label": header.strategy_label if header else "",
        "recorded_models": dict(recorded_models),
        "n_windows": len(replayed),
        "n_labels": len(labels),
        "warned": {side: sum(1 for r in replayed if r.warned(side)) for side in SIDES},
        "new_alerts": {side: sum(1 for r in replayed if r.side(side).get("event") == "new") for side in SIDES},
        "agreement": agreement(replayed),
        "labels": labelled(replayed, labels),
        "cost": cost(replayed),
        "usage": dict(sorted(usage.items())),
        "by_zone": by_zone(replayed),
        "coverage": covered,
        "n_disagreements": len(found),
        "disagreements": found[:DISAGREEMENTS_IN_SCORES],
        "notes": list(dict.fromkeys(note for h in run.headers for note in h.notes)),
    }
