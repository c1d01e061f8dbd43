"""Fault injection, issue 20 sections 3 and 7: decoding is bounded, and the smaller bounds.

An 875 KB PNG of 30000 x 30000 pixels in a folder camera, video frames over the pixel budget, benchmark
composites too large; 1,000 slowloris sockets against the health server; a speech engine that hangs with a
child; an audit log in a folder that does not exist; a 10 KB zone name. The daemon tests run the real daemon
as a subprocess against the scripted OpenAI-compatible server on 127.0.0.1. docs/reliability.md lists them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import struct
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from monitor.core.errors import ConfigError, SensorError
from monitor.settings import load_settings
from monitor.sinks.ha_discovery import ZoneLabel
from monitor.sinks.settings import SpeakerSinkSettings
from monitor.sinks.speaker import SpeakerSink, Utterance
from replay.errors import ReplayError
from replay.pasbench import ImageRef, Scenario
from replay.streams import decode_composite
from sensors.camera import CameraSource, _CaptureReader
from sensors.camera_config import CameraSettings
from sensors.image_header import DEFAULT_MAX_PIXELS, ImageRefused, check_image, image_size
from sensors.types import Observation
from tests.support.daemon import Daemon, responder, wait_until
from tests.support.faults import Rig, metric, still_watching, stops_cleanly, table, tail
from tests.support.media import Scene, png_bomb, write_video
from tests.support.openai_server import ScriptedOpenAIServer

BOMB_SIDE = 30000


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    """The scripted model: ladder, stove and knife are dangers, anything else is safe."""
    with ScriptedOpenAIServer(responder=responder()) as running:
        yield running


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """An 875 KB PNG that decodes to 30000 x 30000 pixels (2.7 GB as BGR)."""
    return png_bomb(BOMB_SIDE, BOMB_SIDE)


# -- 3. decoding is bounded ------------------------------------------------------------------------------
def test_image_headers_give_the_size_of_every_format_a_camera_folder_holds(bomb: bytes) -> None:
    """PNG, JPEG (baseline and progressive), BMP, WebP (lossy and lossless), GIF and TIFF (compressed or not)
    are measured from their headers; a header cut short or a format the reader does not know (PPM, which
    OpenCV would decode unmeasured) is refused, never decoded."""
    image = (np.random.default_rng(3).random((23, 37, 3)) * 255).astype(np.uint8)
    encodings = [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []),
                 (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".gif", []), (".tif", []),
                 (".tiff", [cv2.IMWRITE_TIFF_COMPRESSION, 1])]
    for ext, params in encodings:
        ok, data = cv2.imencode(ext, image, params)
        assert ok, ext
        size = image_size(data.tobytes())
        assert size is not None and (size.width, size.height) == (37, 23), (ext, params, size)
        assert image_size(data.tobytes()[:9]) is None, ext  # cut inside the header
    assert image_size(cv2.imencode(".ppm", image)[1].tobytes()) is None
    huge = image_size(bomb)
    assert huge is not None and (huge.format, huge.width, huge.height) == ("PNG", BOMB_SIDE, BOMB_SIDE)
    with pytest.raises(ImageRefused, match=r"PNG of 30000 x 30000 pixels is over the budget of 40000000"):
        check_image(bomb, DEFAULT_MAX_PIXELS)
    # A JPEG whose frame header states 30000 x 30000 after an EXIF block; a bitmap stored top-down.
    jpeg = b"\xff\xd8\xff\xe1" + struct.pack(">H", 2 + 5000) + bytes(5000) + b"\xff\xc0\x00\x11\x08" \
        + struct.pack(">HH", BOMB_SIDE, BOMB_SIDE) + bytes(12)
    assert image_size(jpeg) is not None and image_size(jpeg).pixels == BOMB_SIDE**2  # type: ignore[union-attr]
    bitmap = b"BM" + bytes(12) + struct.pack("<Iii", 40, 640, -480)
    assert image_size(bitmap) is not None and image_size(bitmap).height == 480  # type: ignore[union-attr]


def test_a_huge_png_in_a_folder_camera_is_refused_counted_and_the_next_image_is_read(
        tmp_path: Path, server: ScriptedOpenAIServer, bomb: bytes) -> None:
    """The 875 KB PNG of 30000 x 30000 pixels between two photos is refused from its header: logged with its
    path and size, counted in the camera's `bad_input` (and `monitor_source_bad_input_total`); the next image
    is read and assessed, and the daemon's peak RSS stays far below the 2.7 GB the decode needs. A FIFO named
    like an image is skipped too. Before the fix the daemon decoded the PNG (peak RSS 5,285 MB), and the FIFO
    held the camera's thread for good."""
    shots = tmp_path / "shots"
    shots.mkdir()
    rng = np.random.default_rng(5)
    for name in ("1-before.jpg", "3-after.jpg"):
        cv2.imwrite(str(shots / name), (rng.random((240, 320, 3)) * 255).astype(np.uint8))
    (shots / "2-bomb.png").write_bytes(bomb)
    os.mkfifo(shots / "2-pipe.jpg")  # nobody writes to it: opened as a file, it would block the camera
    kitchen = tmp_path / "kitchen.jsonl"
    kitchen.write_text("")
    rig = Rig(tmp_path, server.base_url, sources=[
        tail("kitchen", kitchen),
        table("[[cameras]]", id="hall", kind="folder", path=str(shots), speed=0, gating={"enabled": False})])
    with Daemon(rig.write(), tmp_path) as daemon:
        assert daemon.process is not None
        refused, pipe = daemon.wait_log("unreadable image skipped", count=2, source="hall")
        assert refused["path"] == str(shots / "2-bomb.png")
        assert "PNG of 30000 x 30000 pixels is over the budget" in refused["problem"]
        assert pipe["path"] == str(shots / "2-pipe.jpg") and "not a regular file" in pipe["problem"]
        assert daemon.wait_log("camera reached the end", source="hall")[0]["frames"] == 2  # 1 and 3 were read
        wait_until(lambda: len(daemon.find("window assessed", zone="hall")) >= 1, what="the camera assessed")
        assert metric(daemon, "monitor_source_bad_input_total", source="hall") == 2
        peak_mb = _peak_rss_mb(daemon.process.pid)
        assert peak_mb < 1000, f"peak RSS {peak_mb:.0f} MB"
        assert still_watching(daemon, kitchen, zone="kitchen")["alert"] == "new"
        stops_cleanly(daemon)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


async def test_a_video_whose_frames_are_over_the_budget_is_refused_at_open(tmp_path: Path) -> None:
    """A 320 x 240 video for a camera allowed 64 x 64 pixels is refused before its first frame is read:
    counted in `bad_input`, the camera fails with a message naming the size and the setting."""
    video = write_video(tmp_path / "clip.mp4", Scene(width=320, height=240), seconds=0.5)
    camera = CameraSource(CameraSettings(id="porch", kind="file", path=video, max_pixels=64 * 64))

    async def keep(observation: Observation) -> None:
        raise AssertionError(f"a frame over the budget was emitted: {observation}")

    with pytest.raises(SensorError, match=r"frames of 320 x 240 pixels, over cameras.max_pixels=4096"):
        await camera.run(keep)
    health = camera.health()
    assert health.bad_input == 1 and health.frames_read == 0 and "4096" in (health.last_error or "")


def test_a_stream_frame_that_grows_over_the_budget_is_refused() -> None:
    """A stream that changes its size after it was opened: the first frame over the budget is refused."""

    class Growing:
        def __init__(self) -> None:
            self.sizes = [(240, 320), (4000, 4000)]

        def retrieve(self, _into: Any) -> tuple[bool, Any]:
            height, width = self.sizes.pop(0)
            return True, np.zeros((height, width, 3), dtype=np.uint8)

    reader = _CaptureReader(Growing(), None, max_pixels=1_000_000)  # type: ignore[arg-type]
    assert reader.retrieve() is not None
    with pytest.raises(ImageRefused, match=r"4000 x 4000 pixels is over cameras.max_pixels=1000000"):
        reader.retrieve()


def test_a_benchmark_composite_over_the_budget_is_refused_unread(tmp_path: Path, bomb: bytes) -> None:
    """A PaSBench composite is measured before it is decoded: the bomb is a named error, not 2.7 GB."""
    path = tmp_path / "115.png"
    path.write_bytes(bomb)
    scenario = Scenario(id="image-115", modality="image", severity="high", reference=None,
                        image=ImageRef(name="115.png", path=path), origin="pasbench.json[3]")
    with pytest.raises(ReplayError, match=r"115\.png \(pasbench.json\[3\]\): PNG of 30000 x 30000 pixels"):
        decode_composite(scenario)


# -- 7. the health server under slowloris -----------------------------------------------------------------
SLOW_SOCKETS = 1000
PROBES = 100


def test_slowloris_sockets_cannot_keep_health_probes_out(tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """1,000 sockets that send a request's head a line at a time hold the health server's 32 connections;
    100 quick `/healthz` probes made meanwhile are still answered (at least 95), because each pushes out the
    oldest connection still sending its head. Before the fix 98 of 100 were refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SLOW_SOCKETS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, SLOW_SOCKETS + 200), hard))
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)])
    with Daemon(rig.write(), tmp_path) as daemon:
        port = daemon.port
        slow: list[socket.socket] = []
        stop = threading.Event()
        try:
            for _ in range(SLOW_SOCKETS):
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                connection.sendall(b"GET /healthz HTTP/1.1\r\n")
                slow.append(connection)
            trickle = threading.Thread(target=_trickle, args=(slow, stop), daemon=True)
            trickle.start()
            served = sum(_probe(port) == 200 for _ in range(PROBES))
        finally:
            stop.set()
            for connection in slow:
                connection.close()
        assert served >= 95, f"{served} of {PROBES} probes answered"
        limit = daemon.wait_log("health server at its connection limit; the oldest idle connections closed")[0]
        assert limit["max_connections"] == 32
        assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
        stops_cleanly(daemon)


def _trickle(sockets: list[socket.socket], stop: threading.Event) -> None:
    """Slowloris: one more header line on every socket, now and then, never the blank line that ends them."""
    while not stop.wait(0.2):
        for connection in list(sockets):
            with contextlib.suppress(OSError):
                connection.send(b"X-Slow: 1\r\n")


def _probe(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0  # refused, reset or closed without an answer
    finally:
        connection.close()


# -- 7. a speech engine that hangs with a child -------------------------------------------------------------
ENGINE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1], "a") as pids:
    pids.write(f"{child.pid}\\n")
time.sleep(120)
"""


async def test_a_hung_speech_engine_is_killed_with_the_processes_it_started(tmp_path: Path) -> None:
    """An engine that starts a player and hangs: at `timeout_s` the engine and its child are killed together,
    three times over, and no process is left behind. Before the fix each timeout left the child running
    (6 orphans after 3 timeouts with an engine that started two)."""
    script, pids = tmp_path / "engine.py", tmp_path / "pids"
    script.write_text(ENGINE)
    settings = SpeakerSinkSettings(enabled=True, command=[sys.executable, str(script), str(pids), "{text}"],
                                   require_audio_device=False, timeout_s=1.0)
    sink = SpeakerSink(settings, counters=Counter())
    for n in range(3):
        assert not await sink.say(Utterance(f"a{n}", "kitchen", "critical", "new", "Danger! Turn off the stove.", n))
    children = [int(pid) for pid in pids.read_text().split()]
    assert len(children) == 3 and sink.counters["speech:failed"] == 3
    wait_until(lambda: not any(_running(pid) for pid in children), timeout=10, what="the engines' children gone")


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


# -- 7. an audit log in a folder that does not exist ----------------------------------------------------
def test_an_audit_log_in_a_missing_folder_is_created_private(tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """`service.audit_log` under folders that do not exist: they are made (0700) at start and every record
    lands, also after its folder is removed while running; a reload to a path that cannot be written is
    rejected and the running log kept. Before the fix
    every record failed (`history record not written`, No such file or directory)."""
    log, audit = tmp_path / "kitchen.jsonl", tmp_path / "audit" / "2026" / "decisions.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], audit=audit)
    with Daemon(rig.write(), tmp_path) as daemon:
        assert still_watching(daemon, log, zone="kitchen")["alert"] == "new"
        wait_until(lambda: audit.exists() and audit.read_text().count("\n") >= 1, what="an audit record")
        assert not daemon.find("history record not written")
        for folder in (audit.parent, audit.parent.parent):
            assert folder.stat().st_mode & 0o777 == 0o700, folder
        assert audit.stat().st_mode & 0o777 == 0o600
        shutil.rmtree(audit.parent)  # removed while running: made again by the next record
        assert still_watching(daemon, log, zone="kitchen", text="Sam takes out the knife")["alert"] == "new"
        wait_until(lambda: audit.exists() and audit.read_text().count("\n") >= 1, what="the log made again")
        assert audit.parent.stat().st_mode & 0o777 == 0o700
        # A reload to a path that cannot be written is rejected in one line; the running log is kept.
        (tmp_path / "plain-file").write_text("")
        rig.audit = tmp_path / "plain-file" / "a.jsonl"
        rig.write()
        daemon.signal(signal.SIGHUP)
        rejected = daemon.wait_log("configuration reload rejected")[0]
        assert "service.audit_log" in rejected["problem"] and "Not a directory" in rejected["problem"]
        lines = audit.read_text().count("\n")
        assert still_watching(daemon, log, zone="kitchen", text="Sam leaves the stove on")["alert"] == "new"
        wait_until(lambda: audit.read_text().count("\n") > lines, what="the next record in the running log")
        stops_cleanly(daemon)


def test_an_audit_log_that_cannot_be_written_is_refused_at_start_in_one_line(
        tmp_path: Path, server: ScriptedOpenAIServer) -> None:
    """A path under a regular file can never be created: the daemon refuses to start, exit 1, with one
    line naming `service.audit_log`. Before the fix it started and failed every record."""
    (tmp_path / "plain-file").write_text("")
    log = tmp_path / "kitchen.jsonl"
    log.write_text("")
    rig = Rig(tmp_path, server.base_url, sources=[tail("kitchen", log)], audit=tmp_path / "plain-file" / "a.jsonl")
    daemon = Daemon(rig.write(), tmp_path)
    with pytest.raises(AssertionError):
        daemon.start(ready_timeout=15)
    try:
        assert daemon.wait(timeout=15) == 1
    finally:
        daemon.kill()
    lines = [line for line in daemon.stderr_text().splitlines() if "service.audit_log" in line]
    assert len(lines) == 1 and "plain-file/a.jsonl: cannot be written: Not a directory" in lines[0], lines


# -- 7. names sent to Home Assistant ----------------------------------------------------------------------
def test_zone_names_and_areas_are_bounded_one_line_names(tmp_path: Path) -> None:
    """A 10 KB zone name, a name with a newline and a blank area are configuration errors naming the key;
    Home Assistant's device name is cut to 100 characters whatever built the zone's label. Before the fix
    the 10 KB name was accepted and sent in the discovery payload."""
    config = tmp_path / "monitor.toml"
    base = ('[model]\nbackend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n\n'
            '[[sources]]\nid = "kitchen"\nkind = "stdin"\n')
    for zone, problem in ((f'name = "{"Kitchen " * 1250}"', "at most 100 characters"),
                          ('name = "Kitchen\\nIGNORE"', "one line of printable characters"),
                          ('area = "   "', "must not be blank")):
        config.write_text(base + f'\n[[zones]]\nid = "kitchen"\n{zone}\n')
        with pytest.raises(ConfigError) as caught:
            load_settings(config)
        assert any("zones" in line and problem in line for line in caught.value.problems), caught.value.problems
    config.write_text(base + '\n[[zones]]\nid = "kitchen"\nname = "Küche (Erdgeschoss)"\narea = "Kitchen"\n')
    assert load_settings(config).zones[0].name == "Küche (Erdgeschoss)"

    from monitor.mqtt.settings import MqttSettings
    from monitor.sinks.ha_discovery import Discovery

    messages = Discovery(MqttSettings()).messages([ZoneLabel("kitchen", "K" * 10_000, "A" * 10_000)])
    devices = [config["device"] for config in messages.values() if "kitchen" in config["device"]["identifiers"][0]]
    assert devices and all(len(device["name"]) == 100 and len(device["suggested_area"]) == 100
                           for device in devices)
    assert all(len(json.dumps(config)) < 4000 for config in messages.values())
