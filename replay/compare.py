"""`monitor replay compare OUT1 OUT2 ...`: scored runs side by side, one column per run.

Reads each run folder's ``scores.json`` (never the run log, never a model) and renders one
Markdown table: strategy, protocol, model, judge, the paper's three metrics with their
intervals, the false-alarm rate on the safe controls, the cost per sample, and for stream
runs when the first warning came. Runs of `monitor replay history` get their own rows:
agreement with the recorded model, helpful alerts kept, false alarms avoided, missed
hazards caught, and the cost per window (a table of both kinds shows both, n/a where a
row does not apply). ``render_compare_html`` wraps the same table in the report's HTML style.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.core.errors import JsonInputError
from monitor.core.jsonio import MAX_FILE_BYTES, loads_bounded
from replay.appendfile import write_private
from replay.errors import ReplayError
from replay.report import html_page, markdown_to_html, number, pct, pct_ci, reason_assessed

SCORES_FILE = "scores.json"


@dataclass(frozen=True, slots=True)
class ScoredRun:
    """One run's scores and the name its column gets."""

    name: str
    path: Path
    scores: dict[str, Any]

    @property
    def false_alarm_rate(self) -> float | None:
        alarms = self.scores.get("false_alarms")
        return None if not alarms or alarms.get("rate") is None else float(alarms["rate"])

    @property
    def robustness(self) -> float | None:
        value = self.scores.get("robustness")
        return None if value is None else float(value)

    @property
    def calls_per_sample(self) -> float | None:
        value = self.scores.get("calls_per_sample")
        return None if value is None else float(value)


def load_scores(path: Path, *, name: str | None = None) -> ScoredRun:
    """A run folder (or its scores.json) as a ScoredRun; ReplayError naming the file otherwise."""
    file = path / SCORES_FILE if path.is_dir() else path
    try:
        scores = loads_bounded(file.read_bytes(), what="scores file", max_bytes=MAX_FILE_BYTES)
    except FileNotFoundError:
        raise ReplayError(f"{file}: no scores (run `monitor replay score` on its runs.jsonl first)") from None
    except OSError as exc:
        raise ReplayError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except JsonInputError as exc:
        raise ReplayError(f"{file}: {exc.detail}") from None
    if not isinstance(scores, dict) or ("accuracy" not in scores and scores.get("benchmark") != "history"):
        raise ReplayError(f"{file}: not a replay scores.json")
    label = name or (path.name if path.is_dir() else path.parent.name) or str(path)
    return ScoredRun(label, path, scores)


def _strategy(scores: dict[str, Any]) -> str:
    return str(scores.get("strategy_label") or "not recorded")


def _model(scores: dict[str, Any]) -> str:
    model = scores.get("model") or {}
    return f"{model.get('model', '?')} ({model.get('backend', '?')})"


def _judge(scores: dict[str, Any]) -> str:
    judge = scores.get("judge") or {}
    text = f"{judge.get('model', '?')}"
    return text + (" APPROXIMATE" if judge.get("approximate") else "")


def _stream(scores: dict[str, Any], key: str) -> str:
    stream = scores.get("stream")
    if not stream:
        return "n/a"
    if key == "warned_before_last":
        return pct_ci(stream, key)
    entry = (stream.get("first_warning") or {}).get("entry_index")
    return number(entry.get("mean")) if entry else "n/a"


def _false_alarms(scores: dict[str, Any]) -> str:
    alarms = scores.get("false_alarms")
    if not alarms:
        return "n/a (no safe controls)"
    return f"{pct_ci(alarms, 'rate')} ({alarms.get('n_false_alarms', 0)}/{alarms.get('n_trials', 0)})"


def _verdict(scores: dict[str, Any]) -> str:
    block = scores.get("discrimination_verdict")
    if not block:
        return "not recorded"
    return (f"{block.get('verdict')}: {pct_ci(block, 'risk_stream_alert_rate')} vs "
            f"{pct_ci(block, 'safe_stream_alert_rate')}")


def _complete(scores: dict[str, Any]) -> str:
    whole = scores.get("completeness")
    if whole is None:
        return "not recorded"
    return "yes" if whole.get("complete") else "INCOMPLETE: " + "; ".join(whole.get("reasons", []))


ROWS: tuple[tuple[str, Any], ...] = (
    ("complete", _complete),
    ("strategy", _strategy),
    ("protocol", lambda s: str(s.get("protocol"))),
    ("model", _model),
    ("judge", _judge),
    ("Accuracy [95% CI]", lambda s: pct_ci(s, "accuracy")),
    ("Potential [95% CI]", lambda s: pct_ci(s, "potential")),
    ("Robustness [95% CI]", lambda s: pct_ci(s, "robustness")),
    ("false alarms, safe controls [95% CI]", _false_alarms),
    ("alerts depend on danger (risk vs safe streams)", _verdict),
    ("calls per sample", lambda s: number(s.get("calls_per_sample"))),
    ("tokens per sample", lambda s: number(s.get("tokens_per_sample"), 1)),
    ("stream: warned before last entry", lambda s: _stream(s, "warned_before_last")),
    ("stream: mean first-warning entry", lambda s: _stream(s, "entry_index")),
    ("risk samples / trials", lambda s: f"{s.get('n_samples', 0)} / {s.get('n_trials', 0)}"),
)


def _history(block: str, side: str = "candidate") -> Any:
    def cell(scores: dict[str, Any]) -> str:
        labels = (scores.get("labels") or {}).get(block)
        if not labels or not labels.get("n"):
            return "n/a"
        share = labels[side]
        return f"{share['count']}/{share['of']} ({pct(share['share'])})"

    return cell


def _per_window(key: str, digits: int = 2) -> Any:
    def cell(scores: dict[str, Any]) -> str:
        block = ((scores.get("cost") or {}).get("candidate") or {}).get(key)
        return number(block.get("mean"), digits) if block else "n/a"

    return cell


def _agreement(scores: dict[str, Any]) -> str:
    agreement = scores.get("agreement") or {}
    return pct((agreement.get("warning") or {}).get("share")) if agreement else "n/a"


HISTORY_ROWS: tuple[tuple[str, Any], ...] = (
    ("complete", _complete),
    ("strategy", _strategy),
    ("model", _model),
    ("history windows", lambda s: str(s.get("n_windows", "n/a"))),
    ("agreement with recorded warnings", _agreement),
    ("helpful alerts kept", _history("helpful")),
    ("false alarms avoided", _history("false_alarm")),
    ("missed hazards caught", _history("missed")),
    ("windows warned on", lambda s: str((s.get("warned") or {}).get("candidate", "n/a"))),
    ("calls per window", _per_window("calls")),
    ("tokens per window", _per_window("tokens", 1)),
    ("model latency per window, s", _per_window("latency_s", 3)),
)


def _is_history(run: ScoredRun) -> bool:
    return run.scores.get("benchmark") == "history"


def compare_rows(runs: Sequence[ScoredRun]) -> tuple[list[str], list[list[str]]]:
    """The table's header (one column per run) and rows (one per measure): PaSBench rows, history rows, or both."""
    header = ["", *(run.name for run in runs)]
    kinds = {_is_history(run) for run in runs}
    chosen: list[tuple[str, Any]] = [] if kinds == {True} else list(ROWS)
    if True in kinds:
        chosen += [row for row in HISTORY_ROWS if row[0] not in {label for label, _ in chosen}]
    rows = [[label, *(_safe(cell, run.scores) for run in runs)] for label, cell in chosen]
    return header, rows


def _safe(cell: Any, scores: dict[str, Any]) -> str:
    # A row of the other kind of run has nothing to show: n/a, never a crash.
    try:
        return str(cell(scores))
    except (KeyError, TypeError, ValueError, AttributeError):
        return "n/a"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_compare_markdown(runs: Sequence[ScoredRun], *, title: str = "Strategies side by side") -> str:
    header, rows = compare_rows(runs)
    lines = [f"# {title}", "", "| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    lines += ["", "Runs: " + ", ".join(f"`{run.name}` = {run.path}" for run in runs), ""]
    if not all(_is_history(run) for run in runs):
        lines += ["Calls and tokens are per risk-sample trial, cached calls included (what the strategy costs "
                  "live). False alarms are trials with any alert on the safe control logs.", ""]
    if any(_is_history(run) for run in runs):
        lines += ["History runs (`monitor replay history`): counts are over the home's labelled alerts and "
                  "reports; calls, tokens and latency are per window; agreement is with the recorded warnings. "
                  "Runs over different histories or ranges are not comparable.", ""]
    approximate = [run for run in runs if (run.scores.get("judge") or {}).get("approximate")]
    # An approximate judge that declares no criteria predates the reason check: it graded the risk only.
    risk_only = [run.name for run in approximate
                 if not (judge := run.scores.get("judge") or {}).get("criteria") or not reason_assessed(judge)]
    both = [run.name for run in approximate if run.name not in risk_only]
    if risk_only:
        lines += [f"APPROXIMATE offline judge in: {', '.join(risk_only)} (it grades the risk only; the reason "
                  "criterion is not assessed).", ""]
    if both:
        lines += [f"APPROXIMATE offline judge in: {', '.join(both)} (risk and reason checked by embedding "
                  "similarity).", ""]
    judges = {json.dumps(run.scores.get("judge", {}).get("model")) for run in runs}
    protocols = {json.dumps(run.scores.get("protocol")) for run in runs}
    if len(judges) > 1 or len(protocols) > 1:
        lines += ["Note: the runs differ in judge or protocol; their numbers are not directly comparable.", ""]
    return "\n".join(lines)


def render_compare_html(runs: Sequence[ScoredRun], *, title: str = "Strategies side by side") -> str:
    """The same comparison as `render_compare_markdown`, every line of it, as a page in the reports' style."""
    return html_page(title, markdown_to_html(render_compare_markdown(runs, title=title).split("\n")))


def write_compare(runs: Sequence[ScoredRun], out: Path, *, title: str = "Strategies side by side") -> list[Path]:
    """Write the comparison as Markdown at `out` and as HTML next to it; return both paths."""
    write_private(out, render_compare_markdown(runs, title=title))
    html = out.with_suffix(".html")
    write_private(html, render_compare_html(runs, title=title))
    return [out, html]
