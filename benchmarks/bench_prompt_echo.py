"""Does a small local model follow the assessment prompt, or copy its answer template?

Runs the monitor's own `single` assessment request (system prompt + quoted observations) through
the embedded SmolLM2-135M server over the PaSBench development subset's text logs and the bundled
safe logs, one window per log, and counts per reply:

- valid: one JSON object that validates as an Assessment and does not echo the template;
- echo: it validates, but its hazard, reason or advice repeats the prompt's field descriptions,
  placeholder prose or example answer (what the first screen of `make demo` showed);
- invalid: not an Assessment at all; error: the backend failed.

It measures whether replies are well formed, NOT whether verdicts are right: a 135M model cannot
judge danger. Run from the project root:

    .venv/bin/python benchmarks/bench_prompt_echo.py [--limit 40] [--schema-hint on|off|both]

Prints a Markdown table and a JSON line per configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monitor.assess import prompt as prompt_module  # noqa: E402
from monitor.assess.single import SingleCall  # noqa: E402
from monitor.assess.verdict import Assessment  # noqa: E402
from monitor.backends import create_backend  # noqa: E402
from monitor.backends.settings import ModelSettings  # noqa: E402
from monitor.core.errors import BackendError  # noqa: E402
from monitor.windows import Window  # noqa: E402
from sensors.logs.parsers import parse_pasbench_log  # noqa: E402

PASBENCH = REPO.parent / "shared" / "pasbench" / "text_eval_hugging.json"
SAFE_DIR = REPO / "replay" / "data" / "safe_controls"
# The placeholder prose of the answer template the prompt carried until issue 15.
OLD_TEMPLATE = ("short name of the risk, empty if none", "why this is dangerous, citing the observations",
                "what the person should do or stop doing now", "the observations that show it")
_WORDS = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def template_texts() -> list[str]:
    """Every text the prompt shows as a description or example (the current prompt's, and the old one's)."""
    current = getattr(prompt_module, "template_texts", None)
    return [*OLD_TEMPLATE, *(current() if callable(current) else [])]


def echoes(assessment: Assessment, templates: list[str]) -> bool:
    """True when a free-text field repeats a template text (the same words, or nearly all of them)."""
    for value in (assessment.hazard, assessment.reason, assessment.advice):
        got = words(value)
        if not got:
            continue
        for template in templates:
            want = words(template)
            overlap = len(set(got) & set(want)) / max(len(set(got) | set(want)), 1)
            if got == want or overlap >= 0.8:
                return True
    return False


def windows(limit: int | None) -> list[tuple[str, Window]]:
    records = json.loads(PASBENCH.read_text())[:limit]
    logs = [(f"risk-{i}", r["input"]) for i, r in enumerate(records)]
    safe = sorted(SAFE_DIR.glob("*.log"))[:limit]
    logs += [(f"safe-{p.stem}", p.read_text()) for p in safe]
    out = []
    for name, text in logs:
        # The demo's window: the last 6 entries (configs/demo.toml, windows.max_entries).
        entries = parse_pasbench_log(text, source="activity-log", clock=lambda: 0.0)[-6:]
        if entries:
            out.append((name, Window(id=name, zone="home", observations=tuple(entries), new_count=len(entries),
                                     created_at=time.time())))
    return out


@dataclass
class Tally:
    hint: bool
    counts: dict[str, int] = field(default_factory=lambda: {"valid": 0, "echo": 0, "invalid": 0, "error": 0})
    latencies: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        total = sum(self.counts.values())
        return {"schema_hint": self.hint, "replies": total,
                **{f"{k}_pct": round(100 * v / total, 1) for k, v in self.counts.items()},
                "mean_latency_s": round(statistics.mean(self.latencies), 2) if self.latencies else None}


async def run(hint: bool, items: list[tuple[str, Window]]) -> Tally:
    settings = ModelSettings(backend="embedded", json_schema_hint=hint, temperature=0.7, max_tokens=300,
                             attempt_timeout_s=120.0, total_timeout_s=300.0, concurrency=1)
    backend = create_backend(settings)
    await backend.start()
    tally, single, templates = Tally(hint), SingleCall(backend), template_texts()
    try:
        for index, (_name, window) in enumerate(items, 1):
            started = time.perf_counter()
            try:
                reply = await backend.complete(single.request(window))
            except BackendError:
                tally.counts["error"] += 1
                continue
            tally.latencies.append(time.perf_counter() - started)
            tally.counts[classify(reply.text, templates)] += 1
            if len(tally.examples) < 3:
                tally.examples.append(reply.text[:200])
            print(f"\r  schema hint {'on' if hint else 'off'}: {index}/{len(items)}", end="", file=sys.stderr)
    finally:
        await backend.close()
        print(file=sys.stderr)
    return tally


def classify(text: str, templates: list[str]) -> str:
    try:
        assessment = Assessment.parse_reply(text)
    except BackendError:
        return "invalid"
    return "echo" if echoes(assessment, templates) else "valid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="the first N risk logs and N safe logs")
    parser.add_argument("--schema-hint", choices=["on", "off", "both"], default="both")
    args = parser.parse_args()
    items = windows(args.limit)
    hints = {"on": [True], "off": [False], "both": [True, False]}[args.schema_hint]
    rows = []
    for hint in hints:
        tally = asyncio.run(run(hint, items))
        rows.append(tally.row())
        print(json.dumps({**tally.row(), "examples": tally.examples}))
    print("\n| schema hint | replies | valid | echo the template | not an Assessment | backend error | mean latency |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {'on' if r['schema_hint'] else 'off'} | {r['replies']} | {r['valid_pct']}% | {r['echo_pct']}% | "
              f"{r['invalid_pct']}% | {r['error_pct']}% | {r['mean_latency_s']} s |")


if __name__ == "__main__":
    main()
