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

`--zones N` writes N logs, one zone each, at `--rate` lines per second per zone; `--kill-at M` kills the
daemon with SIGKILL after M minutes and starts it again. Every run reports the observation accounting
(docs/reliability.md, late and out-of-order observations): per life of the daemon, accepted against
assessed + errored + dropped by reason + pending (from `/metrics` just before a kill, from the final
`monitor stopped` stats at the end), so a load can show that no accepted observation is unaccounted for.

    .venv/bin/python benchmarks/soak.py --minutes 3 --warmup 0.5 --zones 40 --rate 5 --kill-at 1.5

`--mqtt` also starts a real mosquitto on 127.0.0.1, points the daemon's MQTT sink at it and keeps a
persistent QoS 1 subscriber (`mosquitto_sub`) on `<prefix>/alerts` for the whole run; the report then
compares the alert events decided (the daemon's own counts, per life), those in the JSONL file and those
received over MQTT, by message id, with the duplicates counted (issue 20's check):

    .venv/bin/python benchmarks/soak.py --minutes 3 --warmup 0.5 --zones 40 --rate 5 --kill-at 1.5 --mqtt

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
    """Appends JSONL activity entries at `rate` per second to each log; rotates them every `rotate_s`."""

    def __init__(self, paths: list[Path], *, rate: float, rotate_s: float) -> None:
        super().__init__(name="soak-log-writer", daemon=True)
        self.paths = paths
        self.rate = rate
        self.rotate_s = rotate_s
        self.stop = threading.Event()
        self.lines = 0
        self.rotations = 0

    def run(self) -> None:
        rotated_at = time.monotonic()
        tick = 0
        while not self.stop.wait(1.0 / self.rate):
            text = DANGER_TEXT if tick % DANGER_EVERY == DANGER_EVERY - 1 else TEXTS[tick % len(TEXTS)]
            for path in self.paths:
                with path.open("a") as handle:
                    handle.write(json.dumps({"ts": time.time(), "text": f"{text} (#{self.lines})"}) + "\n")
                self.lines += 1
            tick += 1
            if time.monotonic() - rotated_at >= self.rotate_s:
                for path in self.paths:
                    path.replace(path.with_suffix(".1"))  # the tail reads the old file to its end
                    path.write_text("")
                self.rotations += 1
                rotated_at = time.monotonic()


def responder(latency_s: float) -> Callable[[dict[str, Any]], Action]:
    def answer(body: dict[str, Any]) -> Action:
        user = json.dumps(body.get("messages", [{}])[-1].get("content", "")).lower()
        return reply(DANGER if "stove" in user else SAFE, delay_s=latency_s)

    return answer


def write_config(folder: Path, *, base_url: str, logs: dict[str, Path], video: list[Path],
                 mqtt_port: int | None = None) -> Path:
    cameras = "".join(camera_toml(f"cam{i}", path) for i, path in enumerate(video, start=1))
    sources = "".join(f'\n[[sources]]\nid = "{zone}"\npath = "{log}"\nformat = "jsonl"\npoll_interval_s = 0.25\n'
                      for zone, log in logs.items())
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
{sources}{cameras}
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
{_mqtt_toml(mqtt_port)}""")
    return config


MQTT_PREFIX = "soak_monitor"


def _mqtt_toml(port: int | None) -> str:
    if port is None:
        return ""
    return f'''
[mqtt]
host = "127.0.0.1"
port = {port}
topic_prefix = "{MQTT_PREFIX}"

[mqtt.discovery]
enabled = false
'''


class AlertSubscriber:
    """`mosquitto_sub` with a fixed client id and a persistent session at QoS 1 on `<prefix>/alerts`: what a
    subscriber that never goes away receives, one message per line (`-N`: no extra newline in payloads)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.path = folder / "mqtt-alerts.jsonl"
        self.handle = self.path.open("wb")
        self.process = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-c", "-i", "soak-subscriber",
             "-t", f"{MQTT_PREFIX}/alerts"], stdout=self.handle, stderr=subprocess.DEVNULL)

    def stop(self) -> list[dict[str, Any]]:
        time.sleep(2.0)  # the last QoS 1 messages in flight
        self.process.terminate()
        self.process.wait(timeout=10)
        self.handle.close()
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.startswith("{")]


def delivery(folder: Path, received: list[dict[str, Any]], lives: list[dict[str, Any]]) -> dict[str, Any]:
    """Alert events decided (per life), written to JSONL and received over MQTT, by message id."""
    jsonl = [json.loads(line) for line in (folder / "alerts.jsonl").read_text().splitlines() if line.strip()]
    jsonl_ids = [e["message_id"] for e in jsonl]
    mqtt_ids = [e["message_id"] for e in received]
    return {"decided": sum(life.get("alerts_decided", 0) for life in lives),
            "decided_per_life": [life.get("alerts_decided") for life in lives],
            "jsonl": len(jsonl_ids), "jsonl_unique": len(set(jsonl_ids)),
            "mqtt": len(mqtt_ids), "mqtt_unique": len(set(mqtt_ids)),
            "mqtt_duplicates": len(mqtt_ids) - len(set(mqtt_ids)),
            "in_jsonl_not_mqtt": sorted(set(jsonl_ids) - set(mqtt_ids))[:20],
            "in_mqtt_not_jsonl": sorted(set(mqtt_ids) - set(jsonl_ids))[:20]}


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
    zones = ["kitchen"] if args.zones == 1 else [f"zone{n:02d}" for n in range(1, args.zones + 1)]
    logs = {zone: folder / f"{zone}.jsonl" for zone in zones}
    for log in logs.values():
        log.write_text("")
    server = ScriptedOpenAIServer(responder=responder(args.latency)).start()
    writer = LogWriter(list(logs.values()), rate=args.rate, rotate_s=args.rotate_minutes * 60)
    broker = subscriber = None
    if args.mqtt:
        from tests.support.mosquitto import Mosquitto

        broker = Mosquitto(folder / "broker").start()
        subscriber = AlertSubscriber(folder, broker.port)
    config = write_config(folder, base_url=server.base_url, logs=logs, video=video,
                          mqtt_port=None if broker is None else broker.port)
    if video:
        check = subprocess.run([sys.executable, "-m", "monitor", "check-config", str(config)],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise SystemExit(f"camera config rejected; adjust camera_toml():\n{check.stderr}")
    lives: list[dict[str, Any]] = []
    daemon = Life(folder, config, len(lives))
    try:
        writer.start()
        samples = {"start": sample(daemon.pid)}
        trace = [samples["start"]]
        started = time.monotonic()
        warm_end, end = started + args.warmup * 60, started + args.minutes * 60
        kill_at = None if args.kill_at is None else started + args.kill_at * 60
        warm_histograms: Histograms = {}
        warm_counters: dict[str, float] = {}
        while time.monotonic() < end:
            next_stop = min(t for t in (end, kill_at, time.monotonic() + 30.0) if t is not None)
            time.sleep(max(0.0, next_stop - time.monotonic()))
            daemon.check()
            if kill_at is not None and time.monotonic() >= kill_at:
                lives.append(daemon.kill())
                print(f"SIGKILL: {lives[-1]['accounting']}", flush=True)
                kill_at, warm_histograms, warm_counters = None, {}, {}  # the new life's counters start at 0
                daemon = Life(folder, config, len(lives))
                continue
            trace.append(sample(daemon.pid))
            if "warm" not in samples and time.monotonic() >= warm_end:
                samples["warm"] = trace[-1]
                warm_histograms, warm_counters = scrape(daemon.port)
                print(f"warm-up done: {samples['warm']}", flush=True)
        samples["end"] = sample(daemon.pid)
        samples.setdefault("warm", samples["start"])
        histograms, counters = scrape(daemon.port)
        sums = {k: v - warm_counters.get(k, 0.0) for k, v in counters.items() if k.startswith("sum:")}
        writer.stop.set()
        writer.join()
        lives.append(daemon.stop())
        received = subscriber.stop() if subscriber is not None else None
    finally:
        daemon.abandon()
        server.stop()
        if broker is not None:
            broker.stop()
    steady = delta(histograms, warm_histograms)
    latencies: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        count = int(max((c for _, c in steady.get(stage, [])), default=0))
        latencies[stage] = {"count": count, "mean": sums.get(f"sum:{stage}", 0.0) / count if count else None,
                            **{f"p{int(q * 100)}": percentile(steady.get(stage, []), q) for q in (0.5, 0.95, 0.99)}}
    return {
        "minutes": args.minutes, "warmup_minutes": args.warmup, "rate_per_s": args.rate, "latency_s": args.latency,
        "zones": args.zones, "kill_at_minutes": args.kill_at,
        "video": bool(video), "samples": samples, "trace": trace, "latencies": latencies, "counters": counters,
        "lines_written": writer.lines, "rotations": writer.rotations, "exit_code": lives[-1]["exit_code"],
        "lives": lives,
        "delivery": None if received is None else delivery(folder, received, lives),
        "growth_pct": {k: 100 * (samples["end"][k] - samples["warm"][k]) / samples["warm"][k]
                       for k in ("rss_mib", "fds")},
    }


class Life:
    """One run of the daemon as a subprocess: started at once, ended by SIGKILL or SIGTERM."""

    def __init__(self, folder: Path, config: Path, number: int) -> None:
        self.stderr_path = folder / f"daemon-{number}.stderr"
        env = {**os.environ, "MONITOR_SERVICE__LOG_FORMAT": "json", "MONITOR_HEALTH__PORT": "0"}
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--config", str(config)],
                                            stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=folder)
        self.pid = self.process.pid
        self.port = wait_port(self.stderr_path, self.process)

    def check(self) -> None:
        if self.process.poll() is not None:
            raise SystemExit(f"daemon exited with {self.process.returncode}: {self.stderr_path.read_text()[-2000:]}")

    def kill(self) -> dict[str, Any]:
        """SIGKILL right after a last scrape: the accounting as the dying daemon last showed it."""
        _histograms, counters = scrape(self.port)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)
        return {"end": "SIGKILL", "exit_code": self.process.returncode, "accounting": metrics_accounting(counters),
                "alerts_decided": int(sum(v for k, v in counters.items() if k.startswith("monitor_alerts_total{")))}

    def stop(self) -> dict[str, Any]:
        """SIGTERM; the accounting from the final `monitor stopped` line (pending is 0 after a stop)."""
        self.process.send_signal(signal.SIGTERM)
        exit_code = self.process.wait(timeout=60)
        return {"end": "SIGTERM", "exit_code": exit_code, "accounting": stats_accounting(self.stderr_path),
                "alerts_decided": stats_alerts(self.stderr_path)}

    def abandon(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def metrics_accounting(counters: dict[str, float]) -> dict[str, Any]:
    """accepted vs assessed + errored + dropped + pending, from one /metrics scrape (one consistent moment)."""
    dropped = {k.split("reason=")[1].rstrip("}"): int(v) for k, v in counters.items()
               if k.startswith("monitor_observations_dropped_total{")}
    return _balance(int(counters.get("monitor_observations_accepted_total", 0)),
                    int(counters.get("monitor_observations_assessed_total", 0)),
                    int(counters.get("monitor_observations_errored_total", 0)), dropped,
                    int(counters.get("monitor_observations_pending", 0)))


def stats_accounting(stderr_path: Path) -> dict[str, Any]:
    stopped = [json.loads(line) for line in stderr_path.read_text().splitlines()
               if line.startswith("{") and '"monitor stopped"' in line]
    if not stopped:
        return {"error": "no `monitor stopped` line"}
    totals = stopped[-1]["observations"]
    return _balance(totals["accepted"], totals["assessed"], totals["errored"], totals["dropped"], totals["pending"])


def stats_alerts(stderr_path: Path) -> int:
    """Alert events the daemon published in its life, from the final `monitor stopped` stats."""
    stopped = [json.loads(line) for line in stderr_path.read_text().splitlines()
               if line.startswith("{") and '"monitor stopped"' in line]
    return int(sum(stopped[-1].get("alerts", {}).values())) if stopped else 0


def _balance(accepted: int, assessed: int, errored: int, dropped: dict[str, int], pending: int) -> dict[str, Any]:
    return {"accepted": accepted, "assessed": assessed, "errored": errored,
            "dropped": {k: v for k, v in dropped.items() if v}, "pending": pending,
            "unaccounted": accepted - assessed - errored - sum(dropped.values()) - pending}


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
    logs = "one activity log" if result["zones"] == 1 else f"{result['zones']} activity logs"
    video = (f"two looping video files (cameras) and {logs}" if result["video"] else
             f"{logs} only (the two looping video files are behind `--video`)")
    verdict = "met" if max(growth.values()) < 5.0 else "NOT met"
    if result["kill_at_minutes"] is not None:
        verdict = "not measured (the daemon was killed and restarted, so the samples span two processes)"
    zones = "" if result["zones"] == 1 else f" in each of {result['zones']} zones (one log each)"
    kill = ("" if result["kill_at_minutes"] is None else
            f" SIGKILL after {result['kill_at_minutes']:g} min, then started again.")
    return f"""## Soak

`benchmarks/soak.py --minutes {result['minutes']:g} --warmup {result['warmup_minutes']:g}{_options(result)}`, {when}, on
{os.cpu_count()} CPUs (Linux {platform.release()}, Python {platform.python_version()}). The daemon ran as
`monitor run` (uvloop) on {video}. Load: {result['rate_per_s']:g} lines/s{zones}, every {DANGER_EVERY}th one
dangerous, the log rotated {result['rotations']} times; windows at most once a second; the model a scripted
OpenAI-compatible server on 127.0.0.1 answering in {result['latency_s'] * 1000:.0f} ms through the real
`openai` client; JSONL sink (fsync per event).{kill}

| | start | after warm-up | end | growth after warm-up |
|---|---|---|---|---|
{_row("resident memory (MiB)", s, growth, "rss_mib", ".1f")}
{_row("open file descriptors", s, growth, "fds", ".0f")}

Target (growth under 5 % after warm-up): **{verdict}**. Work: {result['lines_written']} lines written,
{int(c.get('monitor_windows_assessed_total', 0))} windows assessed, windows dropped: {dropped or 'none'},
model errors: {errors or 'none'}, alert events: {alerts or 'none'}. Exit code {result['exit_code']} after SIGTERM.

Observations (accepted = assessed + errored + dropped + pending; a life ended by SIGKILL as `/metrics` showed
it just before, its pending ones lost with the process; lines written while no daemon ran are never read,
the tail starting at the end of the file): {_lives(result)}.

{_delivery(result)}Stage latencies after warm-up, from `/metrics` in ms (interpolated inside histogram buckets like
`histogram_quantile`, so a percentile is only as fine as its bucket). `capture` is mostly the tail's
0.25 s poll, `gating` the 1 s minimum interval between windows of a zone:

| stage | count | mean (exact) | p50 | p95 | p99 |
|---|---|---|---|---|---|
{rows}
"""


def _delivery(result: dict[str, Any]) -> str:
    d = result.get("delivery")
    if not d:
        return ""
    return (f"Alert events (`--mqtt`: a real mosquitto, one persistent QoS 1 subscriber for the whole run): "
            f"decided {d['decided']} (per life {d['decided_per_life']}), JSONL {d['jsonl']} ({d['jsonl_unique']} "
            f"distinct message ids), received over MQTT {d['mqtt']} ({d['mqtt_unique']} distinct, "
            f"**{d['mqtt_duplicates']} duplicates**); in JSONL but not received: {len(d['in_jsonl_not_mqtt'])}; "
            f"received but not in JSONL: {len(d['in_mqtt_not_jsonl'])}.\n\n")


def _options(result: dict[str, Any]) -> str:
    options = f" --rate {result['rate_per_s']:g}" if result["rate_per_s"] != 2.0 else ""
    if result["zones"] != 1:
        options += f" --zones {result['zones']}"
    if result["kill_at_minutes"] is not None:
        options += f" --kill-at {result['kill_at_minutes']:g}"
    options += " --mqtt" if result.get("delivery") else ""
    return options + (" --video" if result["video"] else "")


def _lives(result: dict[str, Any]) -> str:
    parts = []
    for life in result["lives"]:
        a = life["accounting"]
        if "error" in a:
            parts.append(f"{life['end']}: {a['error']}")
            continue
        parts.append(f"{life['end']}: {a['accepted']} accepted, {a['assessed']} assessed, {a['errored']} errored, "
                     f"dropped {a['dropped'] or 'none'}, {a['pending']} pending, **{a['unaccounted']} unaccounted**")
    accepted = sum(life["accounting"].get("accepted", 0) for life in result["lives"])
    return "; ".join(parts) + f" ({result['lines_written']} lines written, {accepted} accepted in all)"


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
    parser.add_argument("--mqtt", action="store_true", help="also a real mosquitto and a subscriber: compare alert "
                                                            "events decided, in JSONL and received over MQTT")
    parser.add_argument("--zones", type=int, default=1, help="zones, one activity log each (default 1)")
    parser.add_argument("--kill-at", type=float, default=None, help="SIGKILL the daemon after this many minutes, "
                        "then start it again")
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
