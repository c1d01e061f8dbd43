"""Soak: run `monitor run` for N minutes and watch its memory, descriptors and stage latencies.

The daemon runs as a real subprocess with its health endpoint on a free loopback
port. A writer thread appends activity-log lines at a steady rate (every 40th
one dangerous, so alerts open, update and end) and rotates the log every few
minutes like logrotate does; the model is a scripted OpenAI-compatible server
on 127.0.0.1 with a fixed latency, reached through the real `openai` client.

Resident memory and open descriptors are read from /proc/<pid> at start, after
the warm-up and at the end (and every 30 s in between); the per-stage latency
percentiles come from `/metrics` (histogram deltas between the end of warm-up
and the end, interpolated inside buckets).

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--warmup 2] [--rate 2] [--write]

`--video` adds two looping video files as cameras in the log's zone: it needs the
`[[cameras]]` section in `Settings` (sensors/camera_config.py), and stops with a
message while `Settings` has none.
`--write` replaces (or appends) the "## Soak" section of docs/benchmarks.md,
re-reading the file first so other sections stay as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from monitor.observer import STAGES  # noqa: E402
from monitor.settings import Settings  # noqa: E402
from tests.support.openai_server import DANGER, SAFE, Action, ScriptedOpenAIServer, reply  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
TEXTS = [
    "Sam fills the kettle at the sink", "Sam reads the newspaper at the table", "Sam waters the plants",
    "Sam sweeps the floor in the hall", "Sam folds laundry on the sofa", "Sam makes a sandwich",
    "Sam checks the mail", "Sam washes the dishes", "Sam opens the window",
]
DANGER_TEXT = "Sam puts a pan of oil on the stove and walks away to the garden"
DANGER_EVERY = 40  # lines: with dedup_ttl_s = 8 each alert opens, updates and ends before the next
Histograms = dict[str, list[tuple[float, float]]]


# --------------------------------------------------------------------------- the load


class LogWriter(threading.Thread):
    """Appends JSONL activity entries at `rate` per second; rotates the file every `rotate_s`."""

    def __init__(self, path: Path, *, rate: float, rotate_s: float) -> None:
        super().__init__(name="soak-log-writer", daemon=True)
        self.path = path
        self.rate = rate
        self.rotate_s = rotate_s
        self.stop = threading.Event()
        self.lines = 0
        self.rotations = 0

    def run(self) -> None:
        rotated_at = time.monotonic()
        while not self.stop.wait(1.0 / self.rate):
            text = DANGER_TEXT if self.lines % DANGER_EVERY == DANGER_EVERY - 1 else TEXTS[self.lines % len(TEXTS)]
            with self.path.open("a") as handle:
                handle.write(json.dumps({"ts": time.time(), "text": f"{text} (#{self.lines})"}) + "\n")
            self.lines += 1
            if time.monotonic() - rotated_at >= self.rotate_s:
                self.path.replace(self.path.with_suffix(".1"))  # the tail reads the old file to its end
                self.path.write_text("")
                self.rotations += 1
                rotated_at = time.monotonic()


def responder(latency_s: float) -> Callable[[dict[str, Any]], Action]:
    def answer(body: dict[str, Any]) -> Action:
        user = json.dumps(body.get("messages", [{}])[-1].get("content", "")).lower()
        return reply(DANGER if "stove" in user else SAFE, delay_s=latency_s)

    return answer


def write_config(folder: Path, *, base_url: str, log: Path, video: list[Path]) -> Path:
    cameras = "".join(camera_toml(f"cam{i}", path) for i, path in enumerate(video, start=1))
    config = folder / "monitor.toml"
    config.write_text(f"""
[service]
shutdown_timeout_s = 10.0

[model]
backend = "openai"
base_url = "{base_url}"
model = "scripted-vlm"
attempt_timeout_s = 10.0
total_timeout_s = 20.0
max_retries = 1
concurrency = 2

[[sources]]
id = "kitchen"
path = "{log}"
format = "jsonl"
poll_interval_s = 0.25
{cameras}
[windows]
min_interval_s = 1.0
max_entries = 6

[alerts]
dedup_ttl_s = 8.0

[sinks.stdout]
enabled = false

[sinks.jsonl]
enabled = true
path = "{folder / 'alerts.jsonl'}"
""")
    return config


def camera_toml(camera_id: str, path: Path) -> str:
    """A `[[cameras]]` entry (docs/cameras.md): a video file played at real time, looping."""
    return (f'\n[[cameras]]\nid = "{camera_id}"\nzone = "kitchen"\nkind = "file"\npath = "{path}"\n'
            "speed = 1.0\nloop = true\nmax_fps = 2.0\n")


def make_videos(folder: Path) -> list[Path]:
    from tests.support.media import Scene, moving_square, write_video

    return [write_video(folder / f"clip{i}.mp4", Scene(seed=i, moving=moving_square(320, 240)), seconds=20)
            for i in (1, 2)]


# --------------------------------------------------------------------------- measuring


def sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"rss_mib": rss_kib / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")), "at": time.monotonic()}


def scrape(port: int) -> tuple[Histograms, dict[str, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    histograms: Histograms = {}
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "monitor_stage_latency_seconds_sum":
                counters[f"sum:{s.labels['stage']}"] = s.value
            elif s.name == "monitor_stage_latency_seconds_bucket":
                bound = float("inf") if s.labels["le"] == "+Inf" else float(s.labels["le"])
                histograms.setdefault(s.labels["stage"], []).append((bound, s.value))
            elif s.name.startswith("monitor_") and not s.name.startswith("monitor_stage"):
                key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))
                counters[key] = s.value
    return histograms, counters


def percentile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, linear inside the bucket (as histogram_quantile does)."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return None


def delta(after: Histograms, before: Histograms) -> Histograms:
    result: Histograms = {}
    for stage, buckets in after.items():
        previous = dict(before.get(stage, []))
        result[stage] = [(bound, count - previous.get(bound, 0.0)) for bound, count in buckets]
    return result


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    video: list[Path] = []
    if args.video:
        if "cameras" not in Settings.model_fields:
            raise SystemExit("--video needs `cameras` in Settings (sensors/camera_config.py); not there yet")
        video = make_videos(folder)
    log = folder / "kitchen.jsonl"
    log.write_text("")
    server = ScriptedOpenAIServer(responder=responder(args.latency)).start()
    writer = LogWriter(log, rate=args.rate, rotate_s=args.rotate_minutes * 60)
    config = write_config(folder, base_url=server.base_url, log=log, video=video)
    if video:
        check = subprocess.run([sys.executable, "-m", "monitor", "check-config", str(config)],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise SystemExit(f"camera config rejected; adjust camera_toml():\n{check.stderr}")
    stderr_path = folder / "daemon.stderr"
    env = {**os.environ, "MONITOR_SERVICE__LOG_FORMAT": "json", "MONITOR_HEALTH__PORT": "0"}
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=folder)
    try:
        port = wait_port(stderr_path, process)
        writer.start()
        samples = {"start": sample(process.pid)}
        trace = [samples["start"]]
        started = time.monotonic()
        warm_end, end = started + args.warmup * 60, started + args.minutes * 60
        warm_histograms: Histograms = {}
        warm_counters: dict[str, float] = {}
        while time.monotonic() < end:
            time.sleep(min(30.0, max(0.0, end - time.monotonic())))
            if process.poll() is not None:
                raise SystemExit(f"daemon exited with {process.returncode}: {stderr_path.read_text()[-2000:]}")
            trace.append(sample(process.pid))
            if "warm" not in samples and time.monotonic() >= warm_end:
                samples["warm"] = trace[-1]
                warm_histograms, warm_counters = scrape(port)
                print(f"warm-up done: {samples['warm']}", flush=True)
        samples["end"] = sample(process.pid)
        histograms, counters = scrape(port)
        sums = {k: v - warm_counters.get(k, 0.0) for k, v in counters.items() if k.startswith("sum:")}
        writer.stop.set()
        writer.join()
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        server.stop()
    steady = delta(histograms, warm_histograms)
    latencies: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        count = int(max((c for _, c in steady.get(stage, [])), default=0))
        latencies[stage] = {"count": count, "mean": sums.get(f"sum:{stage}", 0.0) / count if count else None,
                            **{f"p{int(q * 100)}": percentile(steady.get(stage, []), q) for q in (0.5, 0.95, 0.99)}}
    return {
        "minutes": args.minutes, "warmup_minutes": args.warmup, "rate_per_s": args.rate, "latency_s": args.latency,
        "video": bool(video), "samples": samples, "trace": trace, "latencies": latencies, "counters": counters,
        "lines_written": writer.lines, "rotations": writer.rotations, "exit_code": exit_code,
        "growth_pct": {k: 100 * (samples["end"][k] - samples["warm"][k]) / samples["warm"][k]
                       for k in ("rss_mib", "fds")},
    }


def wait_port(stderr_path: Path, process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    port: int | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"daemon exited with {process.returncode}: {stderr_path.read_text()[-2000:]}")
        for line in stderr_path.read_text().splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("event") == "health server listening":
                port = int(record["port"])
            if record.get("event") == "monitor ready" and port is not None:
                return port
        time.sleep(0.1)
    raise SystemExit("daemon did not become ready")


# --------------------------------------------------------------------------- the report


def section(result: dict[str, Any]) -> str:
    s, growth, c = result["samples"], result["growth_pct"], result["counters"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f}"

    rows = "\n".join(
        f"| {stage} | {v['count']} | {ms(v.get('mean'))} | {ms(v['p50'])} | {ms(v['p95'])} | {ms(v['p99'])} |"
        for stage, v in result["latencies"].items()
    )
    dropped = {k.split("reason=")[1].rstrip("}"): int(v) for k, v in c.items()
               if k.startswith("monitor_windows_dropped_total") and v}
    alerts = {k.split("type=")[1].rstrip("}"): int(v) for k, v in c.items()
              if k.startswith("monitor_alerts_total") and v}
    errors = {k.split("kind=")[1].rstrip("}"): int(v) for k, v in c.items()
              if k.startswith("monitor_model_errors_total") and v}
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    video = ("two looping video files (cameras) and one activity log" if result["video"] else
             "one activity log only (the camera sensor and its `cameras` config were not available yet; the "
             "two looping video files are behind `--video`)")
    verdict = "met" if max(growth.values()) < 5.0 else "NOT met"
    return f"""## Soak

`benchmarks/soak.py --minutes {result['minutes']:g} --warmup {result['warmup_minutes']:g}`, {when}, on
{os.cpu_count()} CPUs (Linux {platform.release()}, Python {platform.python_version()}). The daemon ran as
`monitor run` (uvloop) on {video}. Load: {result['rate_per_s']:g} lines/s, every {DANGER_EVERY}th one
dangerous, the log rotated {result['rotations']} times; windows at most once a second; the model a scripted
OpenAI-compatible server on 127.0.0.1 answering in {result['latency_s'] * 1000:.0f} ms through the real
`openai` client; JSONL sink (fsync per event).

| | start | after warm-up | end | growth after warm-up |
|---|---|---|---|---|
{_row("resident memory (MiB)", s, growth, "rss_mib", ".1f")}
{_row("open file descriptors", s, growth, "fds", ".0f")}

Target (growth under 5 % after warm-up): **{verdict}**. Work: {result['lines_written']} lines written,
{int(c.get('monitor_windows_assessed_total', 0))} windows assessed, windows dropped: {dropped or 'none'},
model errors: {errors or 'none'}, alert events: {alerts or 'none'}. Exit code {result['exit_code']} after SIGTERM.

Stage latencies after warm-up, from `/metrics` in ms (interpolated inside histogram buckets like
`histogram_quantile`, so a percentile is only as fine as its bucket). `capture` is mostly the tail's
0.25 s poll, `gating` the 1 s minimum interval between windows of a zone:

| stage | count | mean (exact) | p50 | p95 | p99 |
|---|---|---|---|---|---|
{rows}
"""


def _row(label: str, samples: dict[str, dict[str, float]], growth: dict[str, float], key: str, fmt: str) -> str:
    values = " | ".join(format(samples[moment][key], fmt) for moment in ("start", "warm", "end"))
    return f"| {label} | {values} | {growth[key]:+.1f} % |"


def write_section(text: str) -> None:
    """Replace (or append) the "## Soak" section of docs/benchmarks.md, keeping every other section."""
    current = DOC.read_text() if DOC.is_file() else "# Benchmarks\n"  # re-read: others write here too
    lines = current.rstrip("\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Soak"), None)
    new_lines = text.rstrip("\n").split("\n")
    if start is None:
        lines += ["", *new_lines]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = [*new_lines, ""] if end < len(lines) else new_lines
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="total run time (default 30)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up minutes (default: min(5, minutes/5))")
    parser.add_argument("--rate", type=float, default=2.0, help="activity-log lines per second")
    parser.add_argument("--latency", type=float, default=0.2, help="scripted model latency in seconds")
    parser.add_argument("--rotate-minutes", type=float, default=5.0, help="rotate the activity log this often")
    parser.add_argument("--video", action="store_true", help="also two looping video files as cameras")
    parser.add_argument("--write", action="store_true", help="write the Soak section of docs/benchmarks.md")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = min(5.0, args.minutes / 5)
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "trace"}, indent=1))
    text = section(result)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
