"""Reports of a history replay: scores.json, report.md, report.html, and the plots as SVG files.

The plots use the PaSBench report's hand-written SVG helpers (replay/report.py): the
labelled outcomes of both sides with their intervals, the share of windows each side
warned on per zone, and the candidate's model latency per window. They are also
written to ``OUT/plots/`` so a page can show them.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from replay.appendfile import write_private
from replay.history_score import LATENCY_EDGES, SIDES
from replay.report import (
    PLOTS_DIR,
    bar_chart,
    histogram,
    html_page,
    markdown_to_html,
    md_table,
    number,
    pct,
    write_report_files,
)

DISAGREEMENTS_IN_REPORT = 50
_MEASURES = (("helpful", "helpful alerts kept"), ("false_alarm", "false alarms avoided"),
             ("missed", "missed hazards caught"))


def write_history_reports(scores: dict[str, Any], out: Path) -> list[Path]:
    """Write scores.json, report.md, report.html and plots/*.svg into `out`; return the paths."""
    plots = plot_files(scores)  # drawn once: on the page and as files
    paths = write_report_files(scores, out, markdown=render_markdown(scores), html=render_html(scores, plots))
    folder = out / PLOTS_DIR
    for name, svg in plots.items():
        path = folder / f"{name}.svg"
        write_private(path, svg + "\n")
        paths.append(path)
    return paths


def completeness_line(scores: dict[str, Any]) -> str:
    """The first line of every summary: whether the replay covers every planned segment and history line."""
    whole = scores.get("completeness")
    if whole is None:
        return "completeness not recorded (scores from an older version)"
    if whole["complete"]:
        return f"COMPLETE: all {scores['coverage']['segments']} planned segments replayed"
    return ("INCOMPLETE: " + "; ".join(whole["reasons"]) + ". The measures cover only what was replayed: run the "
            "same command again to finish")


def headline(scores: dict[str, Any]) -> str:
    """One line for the terminal."""
    labels = scores["labels"]
    parts = [f"history: {scores['n_windows']} windows, warning agreement "
             f"{pct(scores['agreement']['warning']['share'])}"]
    for key, text in _MEASURES:
        block = labels[key]
        if block["n"]:
            parts.append(f"{text} {_count(block, 'candidate')} (recorded {_count(block, 'recorded')})")
    parts.append(f"{scores['n_disagreements']} windows disagree")
    return "; ".join(parts)


def _count(block: dict[str, Any], side: str) -> str:
    share = block[side]
    return f"{share['count']}/{share['of']}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


# -- markdown -------------------------------------------------------------------------------------


def render_markdown(scores: dict[str, Any]) -> str:
    model = scores.get("model") or {}
    lines = ["# Replay of the home's history", "", f"**{completeness_line(scores)}**", "",
             f"- History: `{scores.get('source')}`" + _range(scores),
             f"- Candidate: `{model.get('model', '?')}` via {model.get('backend', '?')}, strategy "
             f"`{scores.get('strategy_label') or '?'}`",
             "- Recorded: " + (", ".join(f"`{k}` ({v} windows)" for k, v in scores["recorded_models"].items())
                               or "nothing replayed"),
             f"- Windows replayed: {scores['n_windows']}; feedback labels: {scores['n_labels']}"
             + "".join(f" ({note})" for note in scores.get("notes", []) if note.startswith("no feedback store")),
             ""]
    lines += ["## Headline", "", *md_table(["measure", "recorded", "candidate"], _headline_rows(scores)), ""]
    lines += _labels_md(scores) + _agreement_md(scores) + _cost_md(scores) + _zones_md(scores)
    lines += _disagreements_md(scores) + _coverage_md(scores)
    lines += ["## How to read this", "", _HOW_TO_READ, ""]
    return "\n".join(lines)


def _range(scores: dict[str, Any]) -> str:
    from monitor.history.times import utc_label

    since, until = scores.get("since"), scores.get("until")
    if since is None and until is None:
        return ""
    return f", from {utc_label(since) if since else 'the start'} to {utc_label(until) if until else 'the end'}"


def _headline_rows(scores: dict[str, Any]) -> list[list[str]]:
    rows = [["windows warned on", *(str(scores["warned"][s]) for s in SIDES)],
            ["new alerts", *(str(scores["new_alerts"][s]) for s in SIDES)]]
    for key, text in _MEASURES:
        block = scores["labels"][key]
        rows.append([text, *(_share_text(block[s]) if block["n"] else "no labels" for s in SIDES)])
    cost = scores["cost"]
    rows.append(["model calls per window", *(number((cost[s]["calls"] or {}).get("mean")) for s in SIDES)])
    rows.append(["tokens per window", *(number((cost[s]["tokens"] or {}).get("mean"), 1) for s in SIDES)])
    rows.append(["model latency per window, s (mean)",
                 *(number((cost[s]["latency_s"] or {}).get("mean"), 3) for s in SIDES)])
    return rows


def _share_text(share: dict[str, Any]) -> str:
    ci = share.get("ci")
    interval = f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else ""
    return f"{share['count']}/{share['of']} ({pct(share['share'])}{interval})"


def _labels_md(scores: dict[str, Any]) -> list[str]:
    labels = scores["labels"]
    lines = ["## What the home's labels say", ""]
    if not scores["n_labels"]:
        return [*lines, "No feedback labels: only agreement and cost can be measured.", ""]
    for key, text in (*_MEASURES, ("unclear", "unclear alerts still warned on")):
        block = labels[key]
        lines.append(f"### {text[0].upper()}{text[1:]}: {block['n']} labelled" +
                     (f" ({block['not_in_replay']} more not in this replay)" if block["not_in_replay"] else ""))
        lines.append("")
        if block["details"]:
            lines += md_table(["when / zone", "about", "recorded", "candidate", "note"],
                              [_label_row(key, row) for row in block["details"]])
        lines.append("")
    delay = labels["missed"].get("candidate_delay_s")
    if delay:
        lines += [f"Missed hazards the candidate caught: first warning {number(delay['mean'], 1)} s after the "
                  f"reported start on average (median {number(delay['median'], 1)} s).", ""]
    return lines


def _label_row(key: str, row: dict[str, Any]) -> list[str]:
    from monitor.history.times import utc_label

    if key == "missed":
        about = f"{utc_label(row['from'])} to {utc_label(row['to'])} ({row['windows']} windows)"
        sides = [("caught after " + number(row[f"{s}_delay_s"], 1) + " s") if row[s] else "not caught"
                 for s in SIDES]
        return [_cell(row["zone"]), _cell(about), *sides, _cell(row["note"])]
    word = {"helpful": ("kept", "lost"), "false_alarm": ("avoided", "raised"), "unclear": ("warned", "silent")}[key]
    sides = [word[0] if row[s] else word[1] for s in SIDES]
    return [_cell(f"{utc_label(row['at'])} / {row['zone']}"), _cell(f"{row['hazard']} ({row['alert_id']})"),
            *sides, _cell(row["note"])]


def _agreement_md(scores: dict[str, Any]) -> list[str]:
    agreement = scores["agreement"]
    cells = agreement["cells"]
    return ["## Agreement with the recorded model", "",
            f"On {agreement['windows']} windows both assessed without error: same verdict in "
            f"{_share_text(agreement['verdict'])}, same decision to warn in {_share_text(agreement['warning'])}.",
            "", *md_table(["", "candidate warned", "candidate silent"],
                          [["recorded warned", str(cells["both warned"]), str(cells["only recorded warned"])],
                           ["recorded silent", str(cells["only candidate warned"]), str(cells["neither warned"])]]),
            ""]


def _cost_md(scores: dict[str, Any]) -> list[str]:
    cost, usage = scores["cost"], scores.get("usage") or {}

    def cell(block: dict[str, Any] | None, digits: int = 2) -> str:
        return "n/a" if not block else (f"{number(block['mean'], digits)} / {number(block['median'], digits)} / "
                                        f"{number(block['p95'], digits)}")

    rows = [[s, str(cost[s]["windows"]), cell(cost[s]["calls"]), cell(cost[s]["tokens"], 0),
             cell(cost[s]["latency_s"], 3)] for s in SIDES]
    return ["## Cost per window", "",
            *md_table(["side", "windows", "calls (mean / median / p95)", "tokens", "model latency, s"], rows), "",
            f"This run made {usage.get('calls', 0)} candidate calls, {usage.get('cached_calls', 0)} answered from "
            f"the cache; {usage.get('spent_tokens', 0)} tokens were spent now. Cached answers count with the cost "
            "they had when they were made: what the candidate costs live.", ""]


def _zones_md(scores: dict[str, Any]) -> list[str]:
    rows = [[_cell(zone), str(b["windows"]), str(b["recorded_warned"]), str(b["candidate_warned"]),
             pct(b["agreement"])] for zone, b in scores["by_zone"].items()]
    return ["## By zone", "", *md_table(["zone", "windows", "recorded warned", "candidate warned",
                                          "warning agreement"], rows), ""]


def _disagreements_md(scores: dict[str, Any]) -> list[str]:
    found = scores["disagreements"]
    lines = [f"## Windows where they disagree ({scores['n_disagreements']})", ""]
    if not found:
        return [*lines, "None.", ""]
    for item in found[:DISAGREEMENTS_IN_REPORT]:
        label = f", labelled **{item['label']}**" if item["label"] else ""
        lines.append(f"### {item['when']}, {item['zone']} (window {item['window']}){label}")
        lines.append("")
        for side in SIDES:
            verdict = item[side]
            said = (f"danger: {verdict['hazard'] or 'unnamed'} ({verdict['severity']})" if verdict["danger"]
                    else "no danger")
            lines.append(f"- {side}: {said}, {'warned' if verdict['warned'] else 'did not warn'}. "
                         f"{verdict['reason'] or ''}".rstrip())
        lines += ["- observations:", *(f"  - {line}" for line in item["observations"]), ""]
    if scores["n_disagreements"] > DISAGREEMENTS_IN_REPORT:
        lines += [f"{scores['n_disagreements'] - DISAGREEMENTS_IN_REPORT} more in scores.json "
                  "(`disagreements`).", ""]
    return lines


def _coverage_md(scores: dict[str, Any]) -> list[str]:
    coverage = scores["coverage"]
    lines = ["## Coverage", "",
             f"- Segments (a zone on a day): {coverage['segments']}; finished {coverage['segments_ok']}; "
             f"failed {len(coverage['segments_failed'])} (run the same command again to retry them); "
             f"not run {len(coverage['segments_not_run'])}",
             f"- Windows replayed: {coverage['windows_replayed']} of {coverage['windows']}"]
    for reason, count in coverage["windows_skipped"].items():
        lines.append(f"  - {count} skipped: {reason}")
    if coverage["windows_missing_frames"]:
        lines.append(f"- Windows replayed without some camera frames (not recorded or purged): "
                     f"{coverage['windows_missing_frames']}")
    if coverage["windows_rebuilt_differently"]:
        lines.append(f"- Windows whose observations could not be rebuilt exactly: "
                     f"{coverage['windows_rebuilt_differently']}")
    lines.append(f"- Lines of the history that could not be read: {len(coverage['problems'])}")
    lines += [f"  - {problem}" for problem in coverage["problems"][:50]]
    for note in scores.get("notes", []):
        lines.append(f"- Note: {note}")
    return [*lines, ""]


_HOW_TO_READ = (
    "Each recorded window was assessed again by the candidate through the monitor's own pipeline, in the order "
    "it happened, zone by zone and day by day. 'Warned' means the window raised or confirmed an alert. A helpful "
    "alert is kept when the candidate warned on at least one of its windows; a false alarm is avoided when it "
    "warned on none of them; a missed hazard is caught when it warned on a window of that zone within the "
    "reported time, and the delay is from the reported start. The labels are few: the intervals say how little "
    "they prove. Agreement with the recorded model is not correctness: read the windows where they disagree. "
    "With assessment.feedback_context on, each window only saw notes about events that ended before it, never "
    "about its own alert, as if every label had been given as soon as it could have been."
)


# -- plots ------------------------------------------------------------------------------------------


def plot_files(scores: dict[str, Any]) -> dict[str, str]:
    """The report's plots as SVG, by file name."""
    plots = {"labels": labels_plot(scores), "zones": zones_plot(scores)}
    latency = latency_plot(scores)
    if latency is not None:
        plots["latency"] = latency
    return plots


def labels_plot(scores: dict[str, Any]) -> str:
    labels = scores["labels"]
    groups = [f"{text} (n={labels[key]['n']})" for key, text in _MEASURES]
    series = [(side, [labels[key][side]["share"] for key, _ in _MEASURES],
               [labels[key][side]["ci"] for key, _ in _MEASURES]) for side in SIDES]
    return bar_chart("Labelled alerts: recorded model and candidate (95% CI)", groups, series)


def zones_plot(scores: dict[str, Any]) -> str:
    zones = scores["by_zone"]
    groups = list(zones)
    series = [(side, [zones[z][f"{side}_warned"] / zones[z]["windows"] if zones[z]["windows"] else None
                      for z in groups], [None] * len(groups)) for side in SIDES]
    return bar_chart("Share of windows warned on, by zone", groups, series)


def latency_plot(scores: dict[str, Any]) -> str | None:
    bins = scores["cost"]["candidate"].get("latency_bins")
    if not bins or not any(bins):
        return None
    labels = [f"<={edge:g}" for edge in LATENCY_EDGES] + [f">{LATENCY_EDGES[-1]:g}"]
    return histogram("Candidate model latency per window", labels, bins, "seconds (cached answers: as made)")


# -- HTML ---------------------------------------------------------------------------------------------


def render_html(scores: dict[str, Any], plots: dict[str, str]) -> str:
    """The report page, showing `plots` (from `plot_files`) under the headline, before the details
    (a long list of disagreeing windows would otherwise push them out of sight)."""
    figures = "\n".join(f"<figure>{svg}</figure>" for svg in plots.values())
    lines = render_markdown(scores).split("\n")
    start = lines.index("## Headline")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    head, rest = markdown_to_html(lines[:end]), markdown_to_html(lines[end:])
    banner = "" if scores.get("complete", True) else f"<p class='banner'>{escape(completeness_line(scores))}</p>\n"
    return html_page("Replay of the home's history", f"{banner}{head}\n<h2>Plots</h2>\n{figures}\n{rest}")
