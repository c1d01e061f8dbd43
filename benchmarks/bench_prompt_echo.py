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

    .venv/bin/python benchmarks/bench_prompt_echo.py [--limit 40] [--schema-hint on|off|both] [--raw FILE]
    .venv/bin/python benchmarks/bench_prompt_echo.py --rescore FILE [FILE ...]

Prints a Markdown table and a JSON line per configuration. `--raw` keeps every reply, so replies
collected with an older prompt (from an older checkout) can be classified again with the current
rule (`--rescore`): before and after are then judged by the same yardstick.
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
    """True when hazard, reason or advice repeats a template text: the product's own rule where it has one."""
    fields = {"hazard": assessment.hazard, "reason": assessment.reason, "advice": assessment.advice}
    product_rule = getattr(prompt_module, "echoed", None)
    if callable(product_rule):
        return product_rule(fields, templates) is not None
    for value in fields.values():  # an older checkout without the rule: same words, or nearly all of them
        got = set(words(value))
        if got and any(len(got & set(words(t))) / len(got | set(words(t))) >= 0.8 for t in templates):
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
    raws: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"valid": 0, "echo": 0, "invalid": 0, "error": 0})
    latencies: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        total = sum(self.counts.values())
        return {"schema_hint": self.hint, "replies": total,
                **{f"{k}_pct": round(100 * v / total, 1) for k, v in self.counts.items()},
                "mean_latency_s": round(statistics.mean(self.latencies), 2) if self.latencies else None}


async def run(hint: bool, items: list[tuple[str, Window]]) -> Tally:
    """One configuration: the embedded server with its grammar enforcing the schema (`hint`), or the same
    server through a plain OpenAI-compatible client in JSON mode only (no schema), as Ollama users get."""
    settings = ModelSettings(backend="embedded", temperature=0.7, max_tokens=300,
                             attempt_timeout_s=120.0, total_timeout_s=300.0, concurrency=1)
    server = create_backend(settings)
    await server.start()
    backend = server
    if not hint and getattr(server, "enforces_schema", False):  # an embedded server that now always enforces it
        from monitor.backends.openai_compat import OpenAICompatBackend

        backend = OpenAICompatBackend(settings.model_copy(update={"backend": "openai", "json_schema_hint": False}),
                                      base_url=server.base_url)
        await backend.start()
    tally, single, templates = Tally(hint), SingleCall(backend), template_texts()
    try:
        for index, (_name, window) in enumerate(items, 1):
            started = time.perf_counter()
            try:
                reply = await backend.complete(single.request(window))
            except BackendError:
                tally.counts["error"] += 1
                tally.raws.append({"window": _name, "hint": hint, "reply": None, "latency_s": None})
                continue
            tally.latencies.append(time.perf_counter() - started)
            tally.counts[classify(reply.text, templates)] += 1
            tally.raws.append({"window": _name, "hint": hint, "reply": reply.text,
                               "latency_s": round(tally.latencies[-1], 3)})
            if len(tally.examples) < 3:
                tally.examples.append(reply.text[:200])
            print(f"\r  schema enforced {'yes' if hint else 'no'}: {index}/{len(items)}", end="", file=sys.stderr)
    finally:
        if backend is not server:
            await backend.close()
        await server.close()
        print(file=sys.stderr)
    return tally


def classify(text: str, templates: list[str]) -> str:
    try:
        assessment = Assessment.parse_reply(text)
    except BackendError:
        return "invalid"
    return "echo" if echoes(assessment, templates) else "valid"


def rescore(paths: list[Path]) -> list[Tally]:
    """Classify saved replies again with the current rule, one tally per schema-hint setting."""
    tallies: dict[bool, Tally] = {}
    templates = template_texts()
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            tally = tallies.setdefault(record["hint"], Tally(record["hint"]))
            if record.get("reply") is None:
                tally.counts["error"] += 1
                continue
            tally.counts[classify(record["reply"], templates)] += 1
            tally.latencies.append(record["latency_s"])
    return [tallies[h] for h in sorted(tallies, reverse=True)]


def table(rows: list[dict[str, Any]]) -> None:
    print("\n| schema enforced | replies | valid | echo the template | not an Assessment | backend error "
          "| mean latency |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        enforced = "yes" if r["schema_hint"] else "no (JSON mode only)"
        print(f"| {enforced} | {r['replies']} | {r['valid_pct']}% | {r['echo_pct']}% | "
              f"{r['invalid_pct']}% | {r['error_pct']}% | {r['mean_latency_s']} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="the first N risk logs and N safe logs")
    parser.add_argument("--schema-hint", choices=["on", "off", "both"], default="both")
    parser.add_argument("--raw", type=Path, help="also write every reply to this JSON-lines file")
    parser.add_argument("--rescore", type=Path, nargs="+", help="classify saved replies again; call no model")
    args = parser.parse_args()
    if args.rescore:
        table([tally.row() for tally in rescore(args.rescore)])
        return
    items = windows(args.limit)
    hints = {"on": [True], "off": [False], "both": [True, False]}[args.schema_hint]
    rows = []
    for hint in hints:
        tally = asyncio.run(run(hint, items))
        rows.append(tally.row())
        print(json.dumps({**tally.row(), "examples": tally.examples}))
        if args.raw is not None:
            with args.raw.open("a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r) + "\n" for r in tally.raws)
    table(rows)


if __name__ == "__main__":
    main()
