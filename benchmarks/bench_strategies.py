"""Simulation: how each assessment strategy changes Robustness, Accuracy and false alarms.

THIS IS A SIMULATION. The model is `monitor/backends/stochastic.py`: per scenario a
probability p of a correct warning drawn from Beta(0.21, 0.118) (calibrated to PaSBench's
Gemini-2.5-pro on text: Accuracy 64 %, Robustness about 45 % over 16 trials), a false-alarm
probability per call on safe controls, and documented assumptions for the propose and
verify steps. The strategies and the alert logic are the product's own classes.

Protocols:
- paper: one window per trial with the whole log;
- stream: `--windows` windows per trial; the risk is visible only in the last
  `--risk-windows` of them (PaSBench logs stop just before harm); earlier windows
  behave like safe ones.

Run:  .venv/bin/python benchmarks/bench_strategies.py [--trials 16] [--out docs/strategies.md]
Against a real endpoint, run `monitor replay pasbench` with each strategy instead (docs/replay.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from monitor.alerts import AlertManager, AlertSettings
from monitor.assess.settings import AssessmentSettings
from monitor.assess.single import Assessor
from monitor.assess.strategies import build_assessor
from monitor.backends.settings import ModelSettings
from monitor.backends.stochastic import StochasticBackend, StochasticParameters, correct_hazard
from monitor.windows import Window
from sensors.types import LogEntry

STRATEGIES: dict[str, dict[str, object]] = {
    "single": {"strategy": "single"},
    "vote 2/3": {"strategy": "vote", "vote": {"k": 3, "m": 2}},
    "vote 1/3": {"strategy": "vote", "vote": {"k": 3, "m": 1}},
    "vote 2/5": {"strategy": "vote", "vote": {"k": 5, "m": 2}},
    "verify (3 candidates)": {"strategy": "verify", "verify": {"max_candidates": 3}},
    "temporal(single)": {"strategy": "temporal", "temporal": {"inner": "single", "decay": 0.6, "threshold": 1.0}},
    "temporal(verify)": {"strategy": "temporal",
                         "temporal": {"inner": "verify", "decay": 0.6, "threshold": 1.2}},
}


@dataclass
class Outcome:
    correct: bool
    alarmed: bool
    calls: int
    windows: int


def window(zone: str, index: int) -> Window:
    entry = LogEntry(source=zone, ts=float(index), text=f"entry {index}")
    return Window(id=f"{zone}-{index}", zone=zone, observations=(entry,), new_count=1, created_at=0.0)


async def run_trial(assessor: Assessor, scenario: str, n_windows: int, risk_windows: int) -> Outcome:
    alerts = AlertManager(AlertSettings())
    calls = 0
    correct = alarmed = False
    for index in range(n_windows):
        # Before the risk shows, a risk scenario's window looks like a safe one.
        zone = scenario if index >= n_windows - risk_windows else f"safe-pre-{scenario}"
        verdict = await assessor.assess(window(zone, index))
        calls += verdict.usage.calls
        event = alerts.decide(window(scenario, index), verdict)
        if event is not None:
            alarmed = True
            correct = correct or event.alert.hazard == correct_hazard(zone)
    return Outcome(correct=correct, alarmed=alarmed, calls=calls, windows=n_windows)


async def evaluate(name: str, config: dict[str, object], params: StochasticParameters, *, trials: int,
                   risks: int, safes: int, n_windows: int, risk_windows: int) -> dict[str, float]:
    backend = StochasticBackend(ModelSettings(backend="stochastic", script=Path("unused.json"), model="sim"),
                                params)
    settings = AssessmentSettings.model_validate(config)
    per_sample: list[list[Outcome]] = []
    safe_outcomes: list[Outcome] = []
    for trial in range(trials):
        assessors: dict[str, Assessor] = {}
        for s in range(risks):
            scenario = f"risk-{s}"
            assessors[scenario] = build_assessor(backend, settings)  # fresh state per trial
            outcome = await run_trial(assessors[scenario], scenario, n_windows, risk_windows)
            if trial == 0:
                per_sample.append([])
            per_sample[s].append(outcome)
        for s in range(safes):
            assessor = build_assessor(backend, settings)
            safe_outcomes.append(await run_trial(assessor, f"safe-{s}", n_windows, 0))
    all_risk = [o for outcomes in per_sample for o in outcomes]
    return {
        "accuracy": sum(o.correct for o in all_risk) / len(all_risk),
        "potential": sum(any(o.correct for o in outs) for outs in per_sample) / len(per_sample),
        "robustness": sum(all(o.correct for o in outs) for outs in per_sample) / len(per_sample),
        "false_alarm": sum(o.alarmed for o in safe_outcomes) / max(1, len(safe_outcomes)),
        "calls_per_window": statistics.mean(o.calls / o.windows for o in [*all_risk, *safe_outcomes]),
        "calls_per_sample": statistics.mean(o.calls for o in all_risk),
    }


def table(rows: dict[str, dict[str, float]], title: str) -> str:
    lines = [f"### {title}", "",
             "| strategy | Robustness | Accuracy | Potential | false alarms (safe) | calls/window | calls/sample |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['robustness']:.1%} | {r['accuracy']:.1%} | {r['potential']:.1%} | "
                     f"{r['false_alarm']:.1%} | {r['calls_per_window']:.2f} | {r['calls_per_sample']:.1f} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--risks", type=int, default=288, help="risk scenarios (PaSBench text: 288)")
    parser.add_argument("--safes", type=int, default=60, help="safe control scenarios")
    parser.add_argument("--windows", type=int, default=6, help="stream protocol: windows per trial")
    parser.add_argument("--risk-windows", type=int, default=2, help="stream: windows in which the risk shows")
    parser.add_argument("--false-positive", type=float, default=0.03, help="per-call false alarm on safe windows")
    parser.add_argument("--step-concentration", type=float, default=None,
                        help="propose/verify reliability concentration (default: as unstable as the proactive answer)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write the tables as Markdown here")
    args = parser.parse_args()
    params = StochasticParameters(false_positive=args.false_positive, seed=args.seed,
                                  step_concentration=args.step_concentration)
    started = time.perf_counter()
    sections = []
    for protocol, n_windows, risk_windows in (("paper", 1, 1), ("stream", args.windows, args.risk_windows)):
        rows = {}
        for name, config in STRATEGIES.items():
            if protocol == "paper" and name.startswith("temporal"):
                continue  # one window per trial: nothing to accumulate
            rows[name] = await evaluate(name, config, params, trials=args.trials, risks=args.risks,
                                        safes=args.safes, n_windows=n_windows, risk_windows=risk_windows)
        plural = "s" if n_windows > 1 else ""
        sections.append(table(rows, f"{protocol} protocol ({n_windows} window{plural} per trial)"))
    text = "\n\n".join(sections)
    print(text)
    print(f"\n({time.perf_counter() - started:.1f} s; {args.risks} risk scenarios, {args.safes} safe, "
          f"{args.trials} trials, false-positive per call {args.false_positive}, seed {args.seed})")
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
