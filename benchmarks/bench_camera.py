"""Camera benchmarks (run on demand, not a test): throughput, model calls with gating, memory over time.

    .venv/bin/python benchmarks/bench_camera.py                  # everything, 10 min memory run
    .venv/bin/python benchmarks/bench_camera.py --duration 150   # a shorter memory run
    .venv/bin/python benchmarks/bench_camera.py --only throughput calls realtime

Writes the measured numbers to docs/benchmarks.md under a "## Cameras" heading
(replacing that section if it is there) and prints them. Media are generated
into a temporary folder with OpenCV (mp4v), like the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monitor.assess.keyframes import choose_images  # noqa: E402
from monitor.assess.settings import KeyframeSettings  # noqa: E402
from monitor.windows import RollingWindow  # noqa: E402
from sensors.camera import CameraSource  # noqa: E402
from sensors.camera_config import CameraSettings, Decoder, GatingSettings, Region  # noqa: E402
from sensors.gating import ChangeGate  # noqa: E402
from sensors.types import Observation  # noqa: E402
from tests.support.media import Scene, appears_at, daylight, lamp, moving_square, write_video  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
HEADING = "## Cameras"


# -- 1. decode + sample + change score, one core ----------------------------------------------------------
def one_core() -> None:
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def decode_score_fps(path: Path, *, every: int) -> float:
    """Frames/s through decode (grab for unsampled frames) + change score of every `every`-th frame."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    gate = ChangeGate(GatingSettings())
    frames = 0
    started = time.perf_counter()
    while True:
        if frames % every == 0:
            ok, image = capture.read()
            if not ok:
                break
            gate.decide(image, frames / 30.0)
        elif not capture.grab():
            break
        frames += 1
    elapsed = time.perf_counter() - started
    capture.release()
    return frames / elapsed


def decode_only_fps(path: Path) -> float:
    """Frames/s of a bare OpenCV decode loop that reads every frame: the floor for this file and codec."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    frames = 0
    started = time.perf_counter()
    while capture.read()[0]:
        frames += 1
    elapsed = time.perf_counter() - started
    capture.release()
    return frames / elapsed


def source_fps(path: Path, *, max_fps: float) -> float:
    """Frames/s read through the whole CameraSource (thread, sampling, gate; JPEG only when asked)."""
    # OpenCV, as measured for issue 16; benchmarks/bench_camera_capacity.py sets both decoders side by side.
    camera = CameraSource(CameraSettings(id="bench", kind="file", path=path, speed=0, max_fps=max_fps,
                                         decoder="opencv"))

    async def ignore(observation: Observation) -> None:
        return None

    started = time.perf_counter()
    asyncio.run(camera.run(ignore))
    return camera.frames_read / (time.perf_counter() - started)


def realtime_cpu_share(path: Path, *, max_fps: float) -> float:
    """CPU time of the whole process per second of wall time while a camera plays `path` at its own pace."""
    camera = CameraSource(CameraSettings(id="bench", kind="file", path=path, speed=1, max_fps=max_fps,
                                         decoder="opencv"))

    async def ignore(observation: Observation) -> None:
        return None

    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(camera.run(ignore))
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    values = [measure() for _ in range(runs)]
    return statistics.median(values), values


def bench_throughput(folder: Path, runs: int) -> list[str]:
    """CameraSource against a bare decode loop, interleaved run by run so that noise hits both alike."""
    one_core()
    lines = ["| file | decode only, frames/s | CameraSource max_fps 30 | ratio | CameraSource max_fps 5 | ratio |",
             "|---|---|---|---|---|---|"]
    for name, (width, height) in {"720p": (1280, 720), "1080p": (1920, 1080)}.items():
        scene = Scene(width=width, height=height, seed=5, moving=moving_square(width, height))
        path = write_video(folder / f"moving-{name}.mp4", scene, seconds=10, fps=30)
        decode, at30, at5 = [], [], []
        for _ in range(runs):
            decode.append(decode_only_fps(path))
            at30.append(source_fps(path, max_fps=30))
            at5.append(source_fps(path, max_fps=5))
        d, s30, s5 = (statistics.median(values) for values in (decode, at30, at5))
        r30 = statistics.median(a / b for a, b in zip(at30, decode, strict=True))
        r5 = statistics.median(a / b for a, b in zip(at5, decode, strict=True))
        lines.append(f"| {name} mp4v 30 fps, moving | {d:.0f} | {s30:.0f} | {100 * r30:.0f}% | {s5:.0f} | "
                     f"{100 * r5:.0f}% |")
        print(lines[-1], flush=True)
    return lines


def bench_realtime(folder: Path, runs: int, *, seconds: float = 20.0) -> list[str]:
    lines = ["| stream | max_fps | CPU, share of one core (median) | runs |", "|---|---|---|---|"]
    for name, (width, height) in {"720p30": (1280, 720), "1080p30": (1920, 1080)}.items():
        scene = Scene(width=width, height=height, seed=7, noise=2.0, moving=moving_square(width, height))
        path = write_video(folder / f"realtime-{name}.mp4", scene, seconds=seconds, fps=30)
        median, values = median_of(runs, lambda p=path: realtime_cpu_share(p, max_fps=2))
        lines.append(f"| {name}, moving | 2 | {100 * median:.1f}% | {', '.join(f'{100 * v:.1f}%' for v in values)} |")
        print(lines[-1], flush=True)
    return lines


# -- 2. model calls per hour: gating versus every window ------------------------------------------------
def windows_assessed(path: Path, *, gating: bool, min_interval_s: float, max_fps: float,
                     heartbeat_s: float, ignore: Region | None = None,
                     decoder: Decoder = "auto") -> tuple[int, float, list[float]]:
    """Windows a zone would send to the model, on the file's own clock; returns (count, media s, times)."""
    regions = [ignore] if ignore is not None else []
    settings = CameraSettings(id="cam", kind="file", path=path, speed=0, max_fps=max_fps, decoder=decoder,
                              gating=GatingSettings(enabled=gating, heartbeat_s=heartbeat_s, ignore=regions))
    camera = CameraSource(settings)
    stamps: list[float] = []

    async def emit(observation: Observation) -> None:
        stamps.append(observation.ts)

    asyncio.run(camera.run(emit))
    capture = cv2.VideoCapture(str(path))
    media_s = capture.get(cv2.CAP_PROP_FRAME_COUNT) / capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    snapshots = schedule([t - stamps[0] for t in stamps], min_interval_s)
    return len(snapshots), media_s, snapshots


def schedule(arrivals: list[float], min_interval_s: float) -> list[float]:
    """When the pipeline snapshots a zone's window (RollingWindow.due): on new observations, at most
    once per `min_interval_s`; observations that arrive too soon are taken when the interval ends."""
    snapshots: list[float] = []
    pending: float | None = None
    for t in arrivals:
        if pending is not None and pending <= t:
            snapshots.append(pending)
            pending = None
        if pending is not None:
            continue
        if not snapshots or t - snapshots[-1] >= min_interval_s:
            snapshots.append(t)
        else:
            pending = snapshots[-1] + min_interval_s
    if pending is not None:
        snapshots.append(pending)
    return snapshots


@dataclass(frozen=True)
class CallScene:
    """A scene of the calls benchmark: what it shows, the ignore region set for it, when something changes."""

    label: str
    scene: Scene
    ignore: Region | None = None
    change_at: float | None = None  # a person walks in: the first call after it says whether it was caught
    moving: bool = False  # always moving: every window should be assessed


def call_scenes(width: int, height: int, minutes: float, *, change_offset_s: float = 0.0) -> list[CallScene]:
    """The scenes; a change (a person walking in) comes `change_offset_s` after half the clip."""
    seconds = minutes * 60
    half = seconds / 2
    change = half + change_offset_s
    tv = (0.7, 0.05, 0.25, 0.3)

    def scene(seed: int, **kwargs: Any) -> Scene:
        return Scene(width=width, height=height, seed=seed, noise=3.0, **kwargs)

    return [
        CallScene("static (sensor noise)", scene(3)),
        CallScene("moving", Scene(width=width, height=height, seed=4,
                                  moving=moving_square(width, height, period_s=6.0)), moving=True),
        CallScene(f"static, change at {change / 60:g} min", scene(6, moving=appears_at(change, width, height)),
                  change_at=change),
        CallScene(f"daylight: brightness 0.6x to 1.2x over {minutes:g} min, no motion",
                  scene(7, light=daylight(0.6, 1.2, over_s=seconds))),
        CallScene(f"lamp switched on (1.4x) at {half / 60:g} min, no motion", scene(8, light=lamp(half, 1.4))),
        CallScene(f"lamp on at {half / 120:g} min, change at {change / 60:g} min",
                  scene(9, light=lamp(half / 2, 1.4), moving=appears_at(change, width, height)), change_at=change),
        CallScene("TV playing in a corner, no mask", scene(10, tv=tv)),
        CallScene("TV playing in a corner, masked (`ignore`)", scene(10, tv=tv), ignore=tv),
        CallScene(f"TV masked, change at {change / 60:g} min",
                  scene(11, tv=tv, moving=appears_at(change, width, height)), ignore=tv, change_at=change),
    ]


def h264_copy(path: Path, *, keyframe_s: float, fps: float) -> Path:
    """`path` re-encoded as a camera would send it: H.264, a keyframe exactly every `keyframe_s` seconds."""
    out = path.with_suffix(".h264.mp4")
    gop = str(round(keyframe_s * fps))
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(path), "-c:v", "libx264",
                    "-preset", "veryfast", "-bf", "0", "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
                    "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def bench_calls(folder: Path, runs: int, *, minutes: float = 10.0, keyframes: bool = False) -> list[str]:
    """With `keyframes`: the same scenes as H.264 with a keyframe every second, at max_fps 1, so that the
    `auto` decoder decodes keyframes only; otherwise the mp4v files at max_fps 2."""
    width, height, fps = 640, 360, 10
    max_fps = 1.0 if keyframes else 2.0
    lines = ["| scene | calls/hour, every window | calls/hour, gated | fewer calls | missed changes | note |",
             "|---|---|---|---|---|---|"]
    # Keyframe-only: the change comes 0.6 s into a GOP, not on a keyframe, so its delay shows.
    for number, case in enumerate(call_scenes(width, height, minutes, change_offset_s=0.6 if keyframes else 0.0)):
        path = write_video(folder / f"calls-{number}.mp4", case.scene, seconds=minutes * 60, fps=fps)
        if keyframes:
            original, path = path, h264_copy(path, keyframe_s=1.0, fps=fps)
            original.unlink()
        every, media_s, _ = windows_assessed(path, gating=False, min_interval_s=2.0, max_fps=max_fps,
                                             heartbeat_s=60.0)
        counts: list[int] = []
        times: list[float] = []
        for _ in range(runs):
            count, media_s, times = windows_assessed(path, gating=True, min_interval_s=2.0, max_fps=max_fps,
                                                     heartbeat_s=60.0, ignore=case.ignore)
            counts.append(count)
        gated = statistics.median(counts)
        per_hour = 3600.0 / media_s
        missed, note = "", ""
        if case.moving:
            missed = f"{every - gated:.0f} of {every} windows"
        elif case.change_at is not None:
            after = [t for t in times if t >= case.change_at]
            missed = "0 of 1" if after else "1 of 1"
            note = f"first call after the change: +{after[0] - case.change_at:.1f} s" if after else "change MISSED"
        lines.append(f"| {case.label} | {every * per_hour:.0f} | {gated * per_hour:.0f} | "
                     f"{100 * (1 - gated / every):.1f}% | {missed} | {note} |")
        print(lines[-1], flush=True)
        path.unlink()
    return lines


# -- 3. resident memory over a looped file ----------------------------------------------------------------
def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_memory(folder: Path, duration_s: float, speed: float) -> list[str]:
    path = write_video(folder / "loop-720p.mp4", Scene(width=1280, height=720, seed=9,
                                                       moving=moving_square(1280, 720, period_s=3.0)),
                       seconds=20, fps=30)
    camera = CameraSource(CameraSettings(id="cam", kind="file", path=path, speed=speed, loop=True, max_fps=5))
    window = RollingWindow("zone", max_age_s=60, max_entries=12, min_interval_s=0.0)
    keyframes = KeyframeSettings()
    samples: list[tuple[float, float]] = []
    sent = {"windows": 0, "bytes": 0}

    async def emit(observation: Observation) -> None:
        window.add(observation)
        # what the model stage does with every window: choose and encode keyframes
        images = choose_images(window.snapshot(), keyframes)
        sent["windows"] += 1
        sent["bytes"] += sum(len(url) for _, url in images)
        await asyncio.sleep(0)

    async def run() -> None:
        task = asyncio.create_task(camera.run(emit))
        started = time.monotonic()
        while time.monotonic() - started < duration_s:
            samples.append((time.monotonic() - started, rss_mb()))
            await asyncio.sleep(5.0)
        samples.append((time.monotonic() - started, rss_mb()))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())
    warm = [(t, m) for t, m in samples if t >= min(60.0, duration_s / 3)]
    slope = _slope(warm) * 60.0
    health = camera.health()
    lines = [
        f"- looped 720p file, speed {speed:g} ({'as fast as possible' if speed == 0 else 'paced'}), max_fps 5, "
        f"every emitted frame snapshotted and its keyframes encoded; ran {samples[-1][0]:.0f} s "
        f"(`--duration {duration_s:g}`; the issue's full run is `--duration 600`)",
        f"- frames read {health.frames_read}, sampled {health.frames_sampled}, windows {sent['windows']}, "
        f"dropped {health.frames_dropped}",
        f"- RSS: start {samples[0][1]:.0f} MB, after warm-up {warm[0][1]:.0f} MB, end {samples[-1][1]:.0f} MB, "
        f"max {max(m for _, m in samples):.0f} MB; slope after warm-up {slope:+.2f} MB/min",
    ]
    for line in lines:
        print(line, flush=True)
    return lines


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_m = statistics.fmean(m for _, m in points)
    num = sum((t - mean_t) * (m - mean_m) for t, m in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return num / den if den else 0.0


# -- report ----------------------------------------------------------------------------------------------
def write_section(intro: list[str], parts: dict[str, list[str]]) -> None:
    """Write the Cameras section of docs/benchmarks.md; subsections not measured this time are kept."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    # At a line's start: "### Cameras" elsewhere in the file must not be taken for the section.
    found = text.find("\n" + HEADING + "\n")
    start = -1 if found == -1 else found + 1
    before, after, old = text.rstrip() + "\n\n", "", ""
    if start != -1:
        end = text.find("\n## ", start + len(HEADING))
        before, old = text[:start], text[start:] if end == -1 else text[start:end + 1]
        after = "" if end == -1 else text[end + 1:]
    kept = {title: body for title, body in _subsections(old).items() if title not in parts}
    lines = [HEADING, "", *intro, ""]
    for title, body in {**kept, **parts}.items():
        lines += [title, "", *body, ""]
    DOC.write_text(before + "\n".join(lines).rstrip() + "\n" + ("\n" + after if after else ""), encoding="utf-8")


def _subsections(section: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    title: str | None = None
    for line in section.splitlines():
        if line.startswith("### "):
            title = line
            found[title] = []
        elif title is not None:
            found[title].append(line)
    return {t: _strip_blank(body) for t, body in found.items()}


def _strip_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement; medians are reported")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of the memory run (issue: 600)")
    parser.add_argument("--speed", type=float, default=0.0, help="memory run playback speed; 0 = as fast as possible")
    parser.add_argument("--only", nargs="*", choices=["throughput", "calls", "calls-keyframes", "memory", "realtime"],
                        default=None)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    only = set(args.only or ["throughput", "calls", "calls-keyframes", "memory", "realtime"])
    intro = [
        f"Measured by `benchmarks/bench_camera.py` on {time.strftime('%Y-%m-%d')}: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, OpenCV {cv2.__version__}. "
        "Media are synthetic mp4v files written by OpenCV (a textured background, a moving square).",
    ]
    parts: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        folder = Path(tmp)
        if "calls" in only:
            parts["### Model calls per hour, gated versus every window"] = [
                "10 minutes of 640x360 10 fps video per scene, sampled at 2 fps, windows at most every 2 s (the "
                "default `min_interval_s`), heartbeat 60 s, default threshold; the gated count is the median of "
                f"{args.runs} runs.", "", *bench_calls(folder, args.runs)]
        if "calls-keyframes" in only:
            parts["### Model calls per hour, keyframe-only decoding"] = [
                "The same scenes re-encoded as H.264 with a keyframe every second, sampled at `max_fps` 1, so "
                "the `auto` decoder decodes keyframes only (docs/cameras.md, \"Decoding\"); windows at most "
                f"every 2 s, heartbeat 60 s; the gated count is the median of {args.runs} runs. The changes come 0.6 s "
                "after a keyframe (5 min 0.6 s); the delays of many changes are in \"Camera capacity\".",
                "", *bench_calls(folder, args.runs, keyframes=True)]
        if "memory" in only:
            parts["### Resident memory over a looped file"] = bench_memory(folder, args.duration, args.speed)
        if "realtime" in only:
            parts["### CPU per camera at real time"] = [
                f"A {20:g} s 30 fps file played at its own pace (`speed` 1) at `max_fps` 2, the default sampling; "
                "CPU time of the whole process (decoding thread, gate, event loop) over wall time; median of "
                f"{args.runs} runs.", "", *bench_realtime(folder, args.runs)]
        if "throughput" in only:  # last: it pins the process to one core
            parts["### CameraSource against a bare decode loop, one core"] = [
                "`cv2.setNumThreads(1)`, FFmpeg decode threads 1, process pinned to one CPU; a 10 s 30 fps file "
                "(300 frames) of a moving scene, so the gate passes every sampled frame; the ratio is the median of "
                f"{args.runs} per-run ratios, runs interleaved. Targets (issue 16): at least 60% at max_fps 30, "
                "90% at max_fps 5.", "", *bench_throughput(folder, args.runs)]
    if not args.no_write:
        write_section(intro, parts)
        print(f"wrote {DOC.relative_to(REPO)} ({HEADING})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
