"""Failover benchmark (run on demand, not a test): a primary outage with the fallback up (docs/failover.md).

The real daemon (`monitor run`, a subprocess) tails one activity log written at a steady rate; the
primary and the fallback are scripted OpenAI-compatible servers on 127.0.0.1 with fixed latencies,
reached through the real `openai` client; `[model.breaker]` keeps its defaults. After a warm-up the
primary goes away for `--outage` seconds, in two ways:

- `refused`: the primary's server is stopped (the cable pulled: connections refused), then started again;
- `hang`: the primary accepts and never answers (a wedged GPU box), then answers again.

From the daemon's own history records (every settled window, with the backend that answered or its
error), it reports: the time from the primary's first failure to the first window assessed by the
fallback; the time from the primary's return to the first window assessed by it again; and the windows
lost (settled with an error, unassessed) from the outage's start until the primary answers again.
Target: 0 windows lost.

    .venv/bin/python benchmarks/bench_failover.py [--outage 60] [--rate 2] [--kinds refused hang] [--write]

`--write` replaces (or appends) the "## Failover" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.daemon import Daemon, KillableOpenAIServer, append, responder, write_config  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
HEADING = "## Failover"
PRIMARY = "scripted-vlm"
ATTEMPT_S = 2.0
PRIMARY_LATENCY_S = 0.2
FALLBACK_LATENCY_S = 0.4


EXPLAINED = [
    '"Windows during the outage" counts every window settled from the primary\'s first failure to its',
    "first answer after it came back (that one included). Going over costs the fallback's latency when the",
    "connection is refused, and the primary's `attempt_timeout_s` plus the fallback's latency when it hangs",
    "(for the 3 windows that open the breaker and for each probe; the others go straight to the fallback).",
    "Coming back is bounded by the breaker's pause: 10 s, doubled for each probe that failed during the",
    "outage (here the pause was 20 s or 40 s when the primary returned), so a home that wants its primary",
    "back sooner lowers `breaker.max_open_s`; meanwhile the fallback watches.",
]


@dataclass
class Outcome:
    kind: str
    to_fallback_s: float | None
    back_s: float | None
    lost: int
    by_fallback: int
    during: int
    errors: list[str]


def config(tmp: Path, primary: KillableOpenAIServer, fallback: KillableOpenAIServer) -> tuple[Path, Path]:
    log = tmp / "kitchen.jsonl"
    log.touch()
    extra = f"""
[[model.fallbacks]]
name = "local"
backend = "openai"
base_url = "{fallback.base_url}"
model = "local-qwen"
attempt_timeout_s = 10.0
total_timeout_s = 20.0
max_retries = 1
"""
    path = write_config(tmp / "monitor.toml", base_url=primary.base_url, logs={"kitchen": log},
                        alerts=tmp / "alerts.jsonl", attempt_timeout_s=ATTEMPT_S, extra=extra)
    return path, log


def writer(log: Path, rate: float, stop: threading.Event) -> None:
    """Steady activity, every 20th line dangerous."""
    n = 0
    while not stop.wait(1.0 / rate):
        n += 1
        append(log, "Sam climbs the ladder" if n % 20 == 0 else f"Sam tidies the kitchen ({n})")


def records(state: Path) -> list[dict[str, Any]]:
    out = []
    for file in sorted(state.rglob("history/*.jsonl")):
        for line in file.read_text().splitlines():
            record = json.loads(line)
            if record.get("type") == "window":
                out.append(record)
    return out


def run(kind: str, *, outage_s: float, rate: float, warmup_s: float) -> Outcome:
    primary = KillableOpenAIServer(responder=responder(PRIMARY_LATENCY_S))
    fallback = KillableOpenAIServer(model="local-qwen", responder=responder(FALLBACK_LATENCY_S))
    with tempfile.TemporaryDirectory() as folder, primary, fallback:
        tmp = Path(folder)
        path, log = config(tmp, primary, fallback)
        daemon = Daemon(path, tmp, env={"MONITOR_SERVICE__STATE_DIR": str(tmp / "state")})
        stop = threading.Event()
        thread = threading.Thread(target=writer, args=(log, rate, stop), daemon=True)
        try:
            daemon.start()
            thread.start()
            time.sleep(warmup_s)
            failed_at = time.time()
            if kind == "refused":
                primary.stop()
            else:
                primary.responder = responder(3600.0)  # accepts, never answers in time
            time.sleep(outage_s)
            back_at = time.time()
            if kind == "refused":
                primary.start()
            else:
                primary.responder = responder(PRIMARY_LATENCY_S)
            time.sleep(max(45.0, outage_s / 2))  # the breaker's probe comes after its (doubled) pause
            stop.set()
            thread.join()
            daemon.signal()
            daemon.wait(30)
        finally:
            stop.set()
            daemon.kill()
        return outcome(kind, records(tmp / "state"), failed_at, back_at)


def outcome(kind: str, recs: list[dict[str, Any]], failed_at: float, back_at: float) -> Outcome:
    after = [r for r in recs if r["at"] >= failed_at]
    by_fallback = [r for r in after if r.get("backend") == "local"]
    returned = [r for r in recs if r["at"] >= back_at and r.get("backend") == PRIMARY]
    until = returned[0]["at"] if returned else float("inf")
    during = [r for r in after if r["at"] <= until]
    lost = [r for r in during if r.get("error") is not None]
    return Outcome(
        kind=kind,
        to_fallback_s=by_fallback[0]["at"] - failed_at if by_fallback else None,
        back_s=until - back_at if returned else None,
        lost=len(lost), by_fallback=len(by_fallback), during=len(during),
        errors=[r["error"]["message"][:160] for r in lost[:3]],
    )


def table(outcomes: list[Outcome], args: argparse.Namespace) -> str:
    run = (f"`benchmarks/bench_failover.py --outage {args.outage:g} --rate {args.rate:g}`, {date.today()}, on "
           f"{os.cpu_count()} CPUs, {platform.system()} (Python {platform.python_version()}).")
    setup = (f"The real daemon tails one activity log at {args.rate:g} lines/s (one window per line); the primary "
             f"and the fallback are scripted OpenAI-compatible servers on 127.0.0.1 answering in "
             f"{PRIMARY_LATENCY_S * 1000:.0f} and {FALLBACK_LATENCY_S * 1000:.0f} ms through the real `openai` "
             f"client; the primary's `attempt_timeout_s` is {ATTEMPT_S:g} s, `[model.breaker]` the defaults "
             "(3 failures in a row, 10 s first pause, doubled per failed probe up to 300 s). Figures from the "
             "daemon's history records (each settled window names its backend or its error).")
    lines = [
        HEADING, "", f"{run} {setup}",
        "",
        "| outage | to the first window by the fallback | primary back to the first window by it | "
        "windows during the outage | by the fallback | lost (unassessed) |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        first = f"{o.to_fallback_s:.2f} s" if o.to_fallback_s is not None else "never"
        back = f"{o.back_s:.1f} s" if o.back_s is not None else "not within the run"
        lines.append(f"| {o.kind} ({args.outage:g} s) | {first} | {back} | {o.during} | {o.by_fallback} | "
                     f"**{o.lost}** |")
    lost = sum(o.lost for o in outcomes)
    lines += ["", f"Target (0 windows lost with the fallback up): **{'met' if lost == 0 else 'not met'}**.", "",
              *EXPLAINED]
    for o in outcomes:
        if o.errors:
            lines.append(f"Lost in `{o.kind}`: " + "; ".join(o.errors))
    return "\n".join(lines) + "\n"


def write(section: str) -> None:
    text = DOC.read_text()
    start = text.find(HEADING + "\n")
    if start < 0:
        DOC.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    end = text.find("\n## ", start + len(HEADING))
    DOC.write_text(text[:start] + section + (text[end + 1:] if end >= 0 else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the primary is away (default 60)")
    parser.add_argument("--rate", type=float, default=2.0, help="activity lines per second (default 2)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the outage (default 10)")
    parser.add_argument("--kinds", nargs="+", choices=["refused", "hang"], default=["refused", "hang"])
    parser.add_argument("--write", action="store_true", help="write the section into docs/benchmarks.md")
    args = parser.parse_args()
    outcomes = [run(kind, outage_s=args.outage, rate=args.rate, warmup_s=args.warmup) for kind in args.kinds]
    section = table(outcomes, args)
    print(section)
    if args.write:
        write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
