"""The walk-through of docs/history.md on the synthetic household of the tests, end to end, with timings.

    .venv/bin/python benchmarks/history_walkthrough.py [--out out/history-walkthrough] [--docs]

1. A week of the household (tests/support/household.py: four zones, a garage camera, a scripted model
   whose mistakes are known) runs through the monitor's pipeline with the history recorder.
2. The week is labelled with `monitor feedback` (the command line a person would use): hob alerts are
   false alarms, the others helpful, and the wet bathroom floor on Monday morning was missed.
3. `monitor replay history` measures three candidates on it: the same model without the hob false alarm,
   one that knows wet floors, and a scripted model that heeds the feedback notes
   (assessment.feedback_context). Then `monitor replay compare` puts them side by side.

The models are scripted, so the numbers show what the report measures, not how any real model does.
With --docs the plots of the first candidate's report are copied to docs/img/ for docs/history.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.household import (  # noqa: E402
    CANDIDATE_CALM_HOB,
    CANDIDATE_WET_FLOOR,
    RECORDED_SCRIPT,
    SAFE,
    START,
    household_settings,
    record_household,
)

HEEDS_NOTES = {"rules": [{"match": "an earlier warning here was a false alarm", "reply": SAFE},
                         *RECORDED_SCRIPT["rules"]], "default": SAFE}


def monitor(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, check=False,
                            cwd=REPO)
    if result.returncode not in (0, 3):
        raise SystemExit(f"monitor {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def candidate(folder: Path, name: str, script: dict[str, object], extra: str = "") -> Path:
    (folder / f"{name}.json").write_text(json.dumps(script))
    config = folder / f"{name}.toml"
    config.write_text(f'[model]\nbackend = "scripted"\nmodel = "{name}"\nscript = "{folder / name}.json"\n{extra}')
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "history-walkthrough")
    parser.add_argument("--docs", action="store_true", help="copy the plots to docs/img/")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    state = out / "state"

    started = time.perf_counter()
    settings = household_settings(state, RECORDED_SCRIPT, history={"record_frames": True})

    async def record() -> None:
        (await record_household(settings, camera=True)).close()

    asyncio.run(record())
    recorded = time.perf_counter() - started
    windows = sum(len(p.read_text().splitlines()) for p in (state / "history").glob("*.jsonl"))
    size = sum(p.stat().st_size for p in (state / "history").rglob("*") if p.is_file())
    print(f"recorded {windows} windows in {recorded:.1f} s; history {size / 1e3:.0f} kB")

    started = time.perf_counter()
    listing = monitor("feedback", "--list", "--since", str(START - 1), "--state", str(state))
    for line in listing.splitlines()[:-1]:
        alert_id, hazard = line.split("  ")[2], line.split("  ")[4]
        monitor("feedback", alert_id, "false_alarm" if "hob" in hazard else "helpful", "--note",
                "we simmer soup on low on purpose" if "hob" in hazard else "", "--state", str(state))
    monitor("feedback", "--zone", "bathroom", "--missed", "--from", "2026-01-05T09:00Z", "--to", "2026-01-05T09:10Z",
            "--note", "grandma nearly slipped on the wet floor", "--state", str(state))
    print(f"labelled in {time.perf_counter() - started:.1f} s (one `monitor feedback` per label)")

    runs = {"calm-hob": candidate(out, "calm-hob", CANDIDATE_CALM_HOB),
            "wet-floor": candidate(out, "wet-floor", CANDIDATE_WET_FLOOR),
            "heeds-notes": candidate(out, "heeds-notes", HEEDS_NOTES,
                                     "[assessment.feedback_context]\nenabled = true\n")}
    for name, config in runs.items():
        started = time.perf_counter()
        headline = monitor("replay", "history", "--from", str(state), "--config", str(config), "--out",
                           str(out / name), "--no-progress").splitlines()[0]
        print(f"{name}: {time.perf_counter() - started:.1f} s: {headline}")
    print(monitor("replay", "compare", *(str(out / name) for name in runs), "--out", str(out / "compare.md")))
    if args.docs:
        images = REPO / "docs" / "img"
        images.mkdir(exist_ok=True)
        for name in ("labels", "zones"):  # a scripted model's latency says nothing: that plot stays out
            shutil.copy(out / "calm-hob" / "plots" / f"{name}.svg", images / f"history-{name}.svg")
        print(f"plots copied to {images}")


if __name__ == "__main__":
    main()
