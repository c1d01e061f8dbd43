"""Entry counts and lengths of the safe controls next to the risk logs (docs/replay.md, "Safe controls").

A false-alarm rate is only comparable with the risk streams' alert rate when safe streams are as long
as risk streams: a blind model that warns on a share of windows alerts more often on longer streams.
This prints both distributions (entries as the monitor's parser reads them, and characters), and the
places the safe controls cover.

Run:  .venv/bin/python benchmarks/safe_log_stats.py [--data ../shared/pasbench] [--safe DIR_OR_JSON]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from replay.pasbench import load_release, load_safe_controls
from sensors.logs.parsers import parse_pasbench_log

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "pasbench"


def entries(text: str) -> int:
    return len(parse_pasbench_log(text, source="stats", clock=lambda: 0.0))


def summary(values: Sequence[int]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return (f"n {len(values)}, min {min(values)}, quartiles {q1:.0f} / {median:.0f} / {q3:.0f}, "
            f"max {max(values)}, mean {statistics.fmean(values):.1f}")


def histogram(values: Sequence[int]) -> str:
    counts = Counter(values)
    total = len(values)
    return ", ".join(f"{k}: {100 * counts[k] / total:.0f}%" for k in sorted(counts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--safe", type=Path, help="safe controls (default: the bundled set)")
    args = parser.parse_args(argv)
    risk = [s.text or "" for s in load_release(args.data, modality="text").scenarios]
    safe_scenarios = load_safe_controls(args.safe)
    safe = [s.text or "" for s in safe_scenarios]
    rows = [("risk logs", risk), ("safe controls", safe)]
    print("| logs | entries | characters |")
    print("|---|---|---|")
    for name, texts in rows:
        print(f"| {name} | {summary([entries(t) for t in texts])} | {summary([len(t) for t in texts])} |")
    print()
    for name, texts in rows:
        print(f"entries per log, {name}: {histogram([entries(t) for t in texts])}")
    print()
    places = Counter(s.id.removeprefix("safe-").split("-")[0] for s in safe_scenarios)
    print("safe controls by theme: " + ", ".join(f"{k} {v}" for k, v in sorted(places.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
