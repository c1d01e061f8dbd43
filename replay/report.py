"""Reports of a scored run: scores.json, report.md and report.html (hand-written inline SVG plots).

The plots are small and few, so they are drawn as SVG by hand rather than adding a
plotting library to the dependencies: metrics by severity with their intervals, the
distribution of correct trials per sample, and where in the stream the first warning came.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from replay.appendfile import private_folder, write_private

REPORT_FILES = ("scores.json", "report.md", "report.html")
PLOTS_DIR = "plots"
COLORS = ("#3b6fb6", "#e08a2c", "#4c9a5b", "#b64a3b")
METRICS = (("accuracy", "Accuracy"), ("potential", "Potential"), ("robustness", "Robustness"))


def write_reports(scores: dict[str, Any], out: Path) -> list[Path]:
    """Write scores.json, report.md and report.html into `out`; return their paths."""
    return write_report_files(scores, out, markdown=render_markdown(scores), html=render_html(scores))


def write_report_files(scores: dict[str, Any], out: Path, *, markdown: str, html: str) -> list[Path]:
    """Write `scores` as scores.json and the rendered reports as report.md and report.html into `out` (0600)."""
    private_folder(out)
    paths = [out / name for name in REPORT_FILES]
    write_private(paths[0], json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
    write_private(paths[1], markdown)
    write_private(paths[2], html)
    return paths


def remove_reports(out: Path) -> list[Path]:
    """Remove the scores, reports and plots in `out`: a run is about to change the run log they were made from.

    They are only ever written from the run log beside them, at the end of a run; until then no
    earlier COMPLETE may sit beside a run log that no longer holds what it counted.
    """
    stale = [out / name for name in REPORT_FILES] + sorted((out / PLOTS_DIR).glob("*.svg"))
    removed = []
    for path in stale:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


# -- formatting --------------------------------------------------------------------------------


def pct(value: Any) -> str:
    return "n/a" if value is None else f"{100.0 * float(value):.1f}%"


def number(value: Any, digits: int = 2) -> str:
    """`value` to `digits` decimals, without trailing zeros after the point (750.0 -> "750", 0.50 -> "0.5")."""
    if value is None:
        return "n/a"
    text = f"{float(value):.{digits}f}"
    # Only decimals are trimmed: "750" must not lose its zero (it showed 75 for a mean of 750.35).
    return text.rstrip("0").rstrip(".") if "." in text else text


def pct_ci(block: dict[str, Any] | None, name: str) -> str:
    if not block or block.get(name) is None:
        return "n/a"
    ci = block.get(f"{name}_ci")
    interval = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
    return f"{pct(block[name])}{interval}"


def _criteria_banner(judge: dict[str, Any]) -> str:
    if not judge.get("criteria"):
        return ""
    if reason_assessed(judge):
        return "It checks the risk and the reason approximately (a warning without a reason is incorrect). "
    return "It grades the risk only; the reason criterion is not assessed. "


def _judge_line(scores: dict[str, Any]) -> str:
    judge = scores.get("judge") or {}
    text = f"{judge.get('kind', '?')} judge `{judge.get('model', '?')}`"
    if judge.get("prompt_version"):
        text += f", prompt {judge['prompt_version']}"
    if judge.get("approximate"):
        text = "**APPROXIMATE** " + text + " (embedding similarity, not an LLM judge: not comparable with the paper)"
    return text + "; " + judge_error_rate(judge) + criteria_note(judge)


def reason_assessed(judge: dict[str, Any]) -> bool:
    """Whether the judge checked the paper's second criterion (an LLM judge declares no criteria: it is asked both)."""
    criteria = judge.get("criteria") or {}
    return not str(criteria.get("reason", "")).startswith("not assessed")


def criteria_note(judge: dict[str, Any]) -> str:
    """What an approximate judge checks of the paper's two criteria, and how."""
    criteria = judge.get("criteria")
    if not criteria:
        return ""
    if reason_assessed(judge):
        return (f". It checks both criteria approximately: risk {criteria.get('risk', '?')}; reason "
                f"{criteria.get('reason', '?')}")
    return (f". It grades the risk only: risk {criteria.get('risk', '?')}; reason criterion "
            f"{criteria.get('reason', '?')}")


def judge_error_rate(judge: dict[str, Any]) -> str:
    """What is known of the judge's own error rate, in one sentence."""
    measured = judge.get("measured")
    if measured:
        return (f"as a classifier it had precision {_measured(measured, 'precision')} and recall "
                f"{_measured(measured, 'recall')} {measured.get('how', '')}"
                + (f" ({measured['paraphrase']})" if measured.get("paraphrase") else ""))
    if judge.get("kind") == "llm":
        return ("its error rate was not measured by this project (the paper reports 94.5% agreement with "
                "humans for its GPT-4.1 judge)")
    return "its error rate is unknown"


def _measured(measured: dict[str, Any], name: str) -> str:
    ci = measured.get(f"{name}_ci95")
    interval = f" (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%)" if ci else ""
    return pct(measured.get(name)) + interval


def sample_label(scores: dict[str, Any], sample: str) -> str:
    """A sample as reports name it: position id and, where known, the record's content id."""
    record = (scores.get("records") or {}).get(sample)
    return f"{sample} #{record}" if record else sample


def _labels(scores: dict[str, Any], samples: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(sample_label(scores, s) for s in samples[:most])
    return shown + (f" and {len(samples) - most} more" if len(samples) > most else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def completeness_lines(scores: dict[str, Any]) -> list[str]:
    """The first lines of every summary: complete or not, what is missing, and truncated records."""
    whole = scores.get("completeness") or {}
    trials = whole.get("trials_per_sample", scores.get("trials_per_sample"))
    if whole.get("complete", True):
        text = (f"COMPLETE: all {whole.get('planned_samples', scores.get('n_samples', 0))} planned samples x "
                f"{trials} trials were run and judged")
    else:
        text = ("INCOMPLETE: " + "; ".join(whole.get("reasons", [])) + ". The scores cover only what was judged, "
                "and missing or unjudged trials are not missing at random: run the same command again to finish")
        affected = whole.get("samples_affected") or []
        if affected:
            text += f". Samples affected ({len(affected)}): {_labels(scores, affected)}"
    lines = [text]
    skipped = whole.get("skipped_samples", 0)
    if skipped:
        lines.append(f"{_count(skipped, 'sample')} skipped, in no denominator (see Coverage)")
    truncated = whole.get("truncated_samples") or []
    if truncated:
        lines.append(f"{_count(len(truncated), 'record')} TRUNCATED (no [LOG END]; the risky behaviour may never "
                     f"appear), scored as written: {_labels(scores, truncated)}")
    if whole.get("unjudged_trials"):
        lines.append(f"Unjudged trials policy: {whole.get('unjudged_policy', 'exclude')}")
    return lines


BLIND_BANNER = "NO BETTER THAN CONTENT-BLIND on these controls: its alerts do not depend on danger"
UNSHOWN_BANNER = "NOT SHOWN TO DISCRIMINATE on these controls"
BANNERS = (BLIND_BANNER, UNSHOWN_BANNER)


def discrimination_line(scores: dict[str, Any]) -> str | None:
    """The discrimination verdict in one line: risk-stream alert rate against the safe streams' false alarms.

    None for scores written before the verdict existed.
    """
    block = scores.get("discrimination_verdict")
    if not block:
        return None
    risk, safe = pct_ci(block, "risk_stream_alert_rate"), pct_ci(block, "safe_stream_alert_rate")
    rates = f"risk streams with an alert {risk} against safe streams with a false alarm {safe} (95% CI)"
    verdict = block.get("verdict")
    if verdict == "discriminates":
        return f"Discrimination: {rates}: it alerts on risk streams clearly more often than on safe ones"
    if verdict == "inverted":
        return f"{BLIND_BANNER}, it alerts on safe streams MORE often: {rates}"
    if verdict == "content-blind":
        return f"{BLIND_BANNER}: {rates}; each rate lies inside the other's interval"
    if verdict == "not clearly different":
        return (f"{UNSHOWN_BANNER}: {rates}; the intervals overlap, so this run does not show that its alerts "
                "depend on danger (more samples would tell)")
    missing = "no safe controls in this run" if block.get("safe_stream_alert_rate") is None else "no risk stream scored"
    return f"Discrimination: not measured ({missing}): whether its alerts depend on danger is unknown"


def blind(scores: dict[str, Any]) -> bool:
    """True when the run's alerts were not shown to depend on danger (the verdict's banner is due)."""
    block = scores.get("discrimination_verdict") or {}
    return block.get("verdict") in ("content-blind", "not clearly different", "inverted")


def summary_lines(scores: dict[str, Any]) -> list[str]:
    """The first lines of every summary and report: completeness, then the discrimination verdict."""
    lines = completeness_lines(scores)
    verdict = discrimination_line(scores)
    return [lines[0], verdict, *lines[1:]] if verdict else lines


def _model_line(scores: dict[str, Any]) -> str:
    model = scores.get("model") or {}
    return f"`{model.get('model', '?')}` via {model.get('backend', '?')}" + (
        f" at {model['base_url']}" if model.get("base_url") else "")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _metric_rows(blocks: dict[str, Any]) -> list[list[str]]:
    return [[name, pct_ci(block, "accuracy"), pct_ci(block, "potential"), pct_ci(block, "robustness"),
             str(block.get("n_samples", 0)), str(block.get("n_trials", 0))] for name, block in blocks.items()]


METRIC_HEADER = ("group", "accuracy [95% CI]", "potential [95% CI]", "robustness [95% CI]", "samples", "trials")


def correct_histogram(scores: dict[str, Any]) -> tuple[list[str], list[int]]:
    """Samples by number of correct trials (0..trials per sample)."""
    trials = int(scores.get("trials_per_sample") or 0)
    counts = Counter(int(s["correct"]) for s in scores.get("per_sample", []) if s["kind"] == "risk" and s["judged"])
    top = max([trials, *counts.keys()]) if counts or trials else 0
    return [str(k) for k in range(top + 1)], [counts.get(k, 0) for k in range(top + 1)]


def position_histogram(positions: Sequence[float], bins: int = 10) -> tuple[list[str], list[int]]:
    """First-warning positions (0 = first entry, 1 = last entry) in `bins` equal bins."""
    counts = [0] * bins
    for position in positions:
        counts[min(bins - 1, int(position * bins))] += 1
    labels = [f"{k / bins:.1f}-{(k + 1) / bins:.1f}" for k in range(bins)]
    return labels, counts


# -- markdown ----------------------------------------------------------------------------------


def render_markdown(scores: dict[str, Any]) -> str:
    lines = [f"# PaSBench replay: {scores.get('protocol')} protocol", ""]
    lines += [f"**{line}**" if index == 0 or line.startswith(BANNERS) else f"- {line}"
              for index, line in enumerate(summary_lines(scores))]
    lines += ["", f"- Model: {_model_line(scores)}", f"- Judge: {_judge_line(scores)}",
              f"- Strategy: `{scores.get('strategy_label') or 'not recorded'}`",
              f"- Trials per sample: {scores.get('trials_per_sample')}",
              f"- Preset: {scores.get('preset', 'none')}; images sent as: {scores.get('image_input', 'frames')}"
              + ("; the safe controls ran too (not in the paper; not in its three metrics)"
                 if scores.get("preset") == "paper" and scores.get("false_alarms") else ""),
              *([f"- Scored from: `{scores['run_log']['path']}` ({scores['run_log']['trial_lines']} trial lines)"]
                if scores.get("run_log") else []), ""]
    lines += ["## Headline", ""]
    lines += md_table(METRIC_HEADER, _metric_rows({"all risk samples": scores}))
    lines += ["", f"The monitor warned at all in {pct_ci(scores, 'warned')} of judged risk trials.", ""]
    judge = scores.get("judge") or {}
    if judge.get("criteria") and not reason_assessed(judge):
        lines += ["Reason criterion (the paper's second): **not assessed**. The offline judge graded whether each "
                  "warning names the reference's risk; whether its reason is sound was not checked, so these "
                  "numbers count right acts, with any reason or none.", ""]
    elif judge.get("criteria"):
        lines += ["Reason criterion (the paper's second): **checked approximately**. The offline judge compared "
                  "each warning's own reason with the reference's by embedding similarity: a warning without a "
                  "reason is incorrect, but a plausible-sounding reason about the same harm passes whether or not "
                  "it is sound.", ""]
    lines += _coverage_md(scores)
    lines += ["## By modality", "", *md_table(METRIC_HEADER, _metric_rows(scores.get("by_modality", {}))), ""]
    lines += ["## By severity", "", *md_table(METRIC_HEADER, _metric_rows(scores.get("by_severity", {}))), ""]
    labels, counts = correct_histogram(scores)
    lines += ["## Correct trials per sample", "",
              "How many samples had k correct trials (k = 0 is never caught, k = N always caught).", ""]
    lines += [*md_table(["correct trials", *labels], [["samples", *[str(c) for c in counts]]]), ""]
    lines += _stream_md(scores) + _false_alarm_md(scores) + _discrimination_md(scores) + _usage_md(scores)
    lines += ["## How to read this", "", _HOW_TO_READ, "", f"Intervals: {scores.get('ci_method', '')}", ""]
    return "\n".join(lines)


_HOW_TO_READ = (
    "Accuracy is the share of all judged trials whose first warning was correct (the paper's average-of-N). "
    "Potential is the share of samples caught at least once in N trials (best-of-N), robustness the share "
    "caught in every trial (worst-of-N); 1 - robustness is how often a risk is missed in repeated runs. "
    "A trial without any warning is incorrect without asking the judge. Under the stream protocol the "
    "monitor sees the log entry by entry and decides itself when to warn: 'before last entry' counts "
    "warnings that came before the final (usually risk-triggering) entry. False alarms are alerts on the "
    "safe control logs, which contain no hazard."
)


def _coverage_md(scores: dict[str, Any]) -> list[str]:
    coverage = scores.get("coverage") or {}
    skipped = coverage.get("skipped") or {}
    lines = ["## Coverage", "",
             f"- Planned samples: {coverage.get('planned_samples', 0)}; scored risk samples: "
             f"{scores.get('n_samples', 0)}",
             f"- Skipped (not in any denominator): {skipped.get('count', 0)}"]
    for reason, count in (skipped.get("reasons") or {}).items():
        lines.append(f"  - {count} x {reason}")
    if coverage.get("skipped", {}).get("ids"):
        lines.append(f"  - ids: {_labels(scores, coverage['skipped']['ids'])}")
    lines += [f"- Samples without any trial: {len(coverage.get('samples_without_trials', []))}",
              f"- Samples with fewer judged trials than planned: {len(coverage.get('incomplete_samples', []))}",
              f"- Trials failed (model error, retried on resume): {coverage.get('errored_trials', 0)}; "
              f"not judged (judge error): {coverage.get('unjudged_trials', 0)}", ""]
    for note in scores.get("notes", []):
        lines.append(f"- Note: {note}")
    return lines + ([""] if scores.get("notes") else [])


def _timing_row(name: str, timing: dict[str, Any]) -> list[str]:
    def cell(key: str) -> str:
        block = timing.get(key)
        return "n/a" if not block else f"{block['mean']:.2f} / {block['median']:.2f}"

    return [name, str(timing.get("n_warned_trials", 0)), cell("entry_index"), cell("position"),
            cell("lead_entries"), cell("offset_s")]


TIMING_HEADER = ("trials", "warned", "entry index (mean / median)", "position 0..1", "lead (entries)", "stream s")


def _stream_md(scores: dict[str, Any]) -> list[str]:
    stream = scores.get("stream")
    if not stream:
        return ["## Streaming measures", "", "Not applicable: the paper protocol gives the whole input at once.", ""]
    lines = ["## Streaming measures", "",
             f"- Risk trials warned before their last entry: {pct_ci(stream, 'warned_before_last')}",
             f"- ... and judged correct: {pct_ci(stream, 'correct_before_last')}", ""]
    lines += md_table(TIMING_HEADER, [_timing_row("risk streams", stream["first_warning"])])
    return [*lines, ""]


def _false_alarm_md(scores: dict[str, Any]) -> list[str]:
    alarms = scores.get("false_alarms")
    if not alarms:
        return ["## False alarms on safe controls", "", "No safe controls in this run.", ""]
    lines = ["## False alarms on safe controls", "",
             f"- Trials with a false alarm: {pct_ci(alarms, 'rate')} "
             f"({alarms['n_false_alarms']} of {alarms['n_trials']} trials, {alarms['n_samples']} logs)",
             f"- Safe logs with an alarm in any trial: {pct_ci(alarms, 'samples_with_alarm')}",
             f"- Safe logs alarmed in every trial: {pct_ci(alarms, 'samples_always_alarmed')}",
             f"- Assessed windows with an alert: {pct_ci(alarms, 'window_rate')} "
             f"({alarms.get('n_windows_alerted', 0)} of {alarms.get('n_windows', 0)} windows)", ""]
    if scores.get("stream"):
        lines += [*md_table(TIMING_HEADER, [_timing_row("safe streams", alarms["first_alarm"])]), ""]
    return lines


def _discrimination_md(scores: dict[str, Any]) -> list[str]:
    block = scores.get("discrimination")
    lines = ["## Discrimination and a content-blind baseline", ""]
    if not block:
        return [*lines, "No assessed windows recorded.", ""]
    lines += ["Does the monitor warn because of what it reads? Per assessed window and per stream, on risk and on "
              "safe streams, against a content-blind model that warns on any window with this run's pooled "
              f"per-window rate ({pct(block.get('pooled_window_rate'))}).", ""]
    rows = []
    for kind, name in (("risk", "risk streams"), ("safe", "safe streams")):
        group = block.get(kind)
        if not group:
            rows.append([name, "n/a", "n/a", "n/a", "n/a", "0"])
            continue
        rows.append([name, pct_ci(group, "window_alert_rate"), pct_ci(group, "stream_alert_rate"),
                     pct(group.get("blind_stream_alert_rate")), number(group.get("mean_windows")),
                     str(group.get("n_trials", 0))])
    lines += md_table(("", "windows with an alert [95% CI]", "streams with an alert [95% CI]",
                     "content-blind: streams with an alert", "windows per stream", "trials"), rows)
    lines += ["", f"How the baseline is computed: {block.get('method', '')} A monitor that reads discriminates "
              "when its risk streams are alerted more often, and its safe streams less often, than the blind "
              "model's.", ""]
    verdict = scores.get("discrimination_verdict") or {}
    if verdict:
        lines += [f"Verdict: **{verdict.get('verdict')}**. {verdict.get('rule', '')}", ""]
    return lines


def _usage_md(scores: dict[str, Any]) -> list[str]:
    usage = scores.get("usage") or {}
    return ["## Cost", "",
            f"- Per risk-sample trial (what the strategy costs live, cached calls included): "
            f"{number(scores.get('calls_per_sample'))} calls, {number(scores.get('tokens_per_sample'))} tokens; "
            f"{number(scores.get('calls_per_window'))} calls per window",
            f"- Model calls: {usage.get('calls', 0)} ({usage.get('cached_calls', 0)} from the cache)",
            f"- Tokens: {usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion; "
            f"spent this time (not cached): {usage.get('spent_prompt_tokens', 0)} + "
            f"{usage.get('spent_completion_tokens', 0)}",
            f"- Model latency: {usage.get('model_latency_s', 0)} s in total, "
            f"{usage.get('mean_model_latency_s') or 'n/a'} s per uncached call",
            f"- Judge calls: {usage.get('judge_calls', 0)} ({usage.get('judge_cached', 0)} cached), tokens "
            f"{usage.get('judge_prompt_tokens', 0)} + {usage.get('judge_completion_tokens', 0)}", ""]


# -- SVG plots -----------------------------------------------------------------------------------

W, H, LEFT, BOTTOM, TOP = 640, 300, 50, 50, 30


def _frame(title: str, y_max: float, y_label: str, ticks: Sequence[float], fmt: str) -> list[str]:
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
             f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{escape(title)}</text>']
    for tick in ticks:
        y = _y(tick, y_max)
        parts.append(f'<line x1="{LEFT}" x2="{W - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{format(tick, fmt)}</text>')
    parts.append(f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">'
                 f'{escape(y_label)}</text>')
    return parts


def _y(value: float, y_max: float) -> float:
    return H - BOTTOM - (H - BOTTOM - TOP) * (value / y_max if y_max else 0.0)


def bar_chart(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None],
              Sequence[list[float] | None]]]) -> str:
    """Grouped bars in [0, 1] with 95% interval whiskers."""
    parts = _frame(title, 1.0, "share", [0, 0.25, 0.5, 0.75, 1.0], ".2f")
    slot = (W - LEFT - 10) / max(1, len(groups))
    width = slot * 0.8 / max(1, len(series))
    for g, group in enumerate(groups):
        x0 = LEFT + g * slot + slot * 0.1
        parts.append(f'<text x="{LEFT + (g + 0.5) * slot:.1f}" y="{H - BOTTOM + 16}" '
                     f'text-anchor="middle">{escape(group)}</text>')
        for s, (name, values, cis) in enumerate(series):
            value = values[g]
            if value is None:
                continue
            x = x0 + s * width
            y = _y(value, 1.0)
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width - 2:.1f}" height="{H - BOTTOM - y:.1f}" '
                         f'fill="{COLORS[s % len(COLORS)]}"><title>{escape(name)} {group}: {pct(value)}</title></rect>')
            ci = cis[g]
            if ci:
                cx = x + (width - 2) / 2
                parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{_y(ci[0], 1):.1f}" y2="{_y(ci[1], 1):.1f}" '
                             'stroke="#222" stroke-width="1.5"/>')
    for s, (name, _, _) in enumerate(series):
        x = LEFT + s * 110
        parts.append(f'<rect x="{x}" y="{H - 18}" width="10" height="10" fill="{COLORS[s % len(COLORS)]}"/>')
        parts.append(f'<text x="{x + 14}" y="{H - 9}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def histogram(title: str, labels: Sequence[str], counts: Sequence[int], x_label: str) -> str:
    """Vertical bars of counts over labelled bins."""
    top = max([1, *counts])
    step = max(1, round(top / 4))
    parts = _frame(title, float(top), "count", [float(t) for t in range(0, top + 1, step)], ".0f")
    slot = (W - LEFT - 10) / max(1, len(labels))
    for k, (label, count) in enumerate(zip(labels, counts, strict=True)):
        x = LEFT + k * slot + slot * 0.1
        y = _y(count, top)
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" height="{H - BOTTOM - y:.1f}" '
                     f'fill="{COLORS[0]}"><title>{escape(label)}: {count}</title></rect>')
        parts.append(f'<text x="{x + slot * 0.4:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
                     f'{escape(label)}</text>')
    parts.append(f'<text x="{W / 2}" y="{H - 14}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def severity_plot(scores: dict[str, Any]) -> str:
    blocks = scores.get("by_severity") or {}
    groups = list(blocks)
    series = [(label, [blocks[g].get(key) for g in groups], [blocks[g].get(f"{key}_ci") for g in groups])
              for key, label in METRICS]
    return bar_chart("Metrics by severity (95% CI)", groups, series)


def correct_plot(scores: dict[str, Any]) -> str:
    labels, counts = correct_histogram(scores)
    return histogram("Correct trials per sample", labels, counts, "correct trials out of N")


def timing_plot(scores: dict[str, Any]) -> str | None:
    stream = scores.get("stream")
    if not stream:
        return None
    labels, counts = position_histogram(stream["first_warning"].get("positions", []))
    return histogram("First warning within the stream (risk samples)", labels, counts,
                     "position of the first warning: 0 = first entry, 1 = last entry")


# -- HTML ----------------------------------------------------------------------------------------


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_to_html(lines: list[str]) -> str:
    """The report's own simple markdown (headings, bullets, tables, paragraphs) as HTML."""
    html: list[str] = []
    table: list[list[str]] = []

    def flush_table() -> None:
        if table:
            html.append(_html_table(table[0], table[2:]))
            table.clear()

    for line in lines:
        if line.startswith("|"):
            # Cells are split on unescaped pipes; a `\|` inside a cell is a literal pipe.
            cells = re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|"))
            table.append([cell.strip().replace("\\|", "|") for cell in cells])
            continue
        flush_table()
        if line.startswith("### "):
            html.append(f"<h3>{_inline(line[4:])}</h3>")
        elif line.startswith("## "):
            html.append(f"<h2>{escape(line[3:])}</h2>")
        elif line.startswith("# "):
            html.append(f"<h1>{escape(line[2:])}</h1>")
        elif line.lstrip().startswith("- "):
            html.append(f"<p class='item'>{_inline(line.lstrip()[2:])}</p>")
        elif line.strip():
            html.append(f"<p>{_inline(line)}</p>")
    flush_table()
    return "\n".join(html)


def _inline(text: str) -> str:
    out = escape(text)
    while out.count("**") >= 2:
        out = out.replace("**", "<strong>", 1).replace("**", "</strong>", 1)
    while out.count("`") >= 2:
        out = out.replace("`", "<code>", 1).replace("`", "</code>", 1)
    return out


_STYLE = """
body { font-family: sans-serif; max-width: 960px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #f3f3f3; }
p.item { margin: 0.2em 0 0.2em 1em; }
p.banner { background: #fff3cd; border: 1px solid #e0c36c; padding: 8px; }
figure { margin: 1em 0; }
"""


def html_page(title: str, body: str) -> str:
    """A whole report page in the style both replays' reports share."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>\n'
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def render_html(scores: dict[str, Any]) -> str:
    markdown = render_markdown(scores).split("\n")
    plots = [severity_plot(scores), correct_plot(scores)]
    timing = timing_plot(scores)
    if timing:
        plots.append(timing)
    figures = "\n".join(f"<figure>{svg}</figure>" for svg in plots)
    banner = "" if scores.get("complete", True) else f"<p class='banner'>{escape(completeness_lines(scores)[0])}</p>"
    verdict = discrimination_line(scores)
    if verdict and blind(scores):
        banner += f"<p class='banner'>{escape(verdict)}</p>"
    if (scores.get("judge") or {}).get("approximate"):
        banner += ("<p class='banner'>Scores by the APPROXIMATE offline judge (embedding similarity). "
                   + _criteria_banner(scores.get("judge") or {})
                   + "Use an LLM judge for numbers comparable with the paper.</p>")
    return html_page("PaSBench replay report", f"{banner}\n{markdown_to_html(markdown)}\n<h2>Plots</h2>\n{figures}")
