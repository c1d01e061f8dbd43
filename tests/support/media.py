"""Real media made by the tests: natural-looking scenes, video files, an MJPEG server, an RTSP relay.

Scenes are synthetic but not flat: a smooth random background, a lighting
gradient, furniture-like shapes and a little sensor noise, so change scores,
JPEG sizes and panel borders behave as they do on camera images.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self

import cv2
import numpy as np
import numpy.typing as npt

from tests.support.http import LoopbackHTTPServer

Image = npt.NDArray[Any]


# -- scenes -----------------------------------------------------------------------------------------
def natural_image(rng: np.random.Generator, height: int, width: int, *, noise: float = 3.0) -> Image:
    """A photo-like BGR image: smooth colour blobs, a lighting gradient, a few objects, noise."""
    coarse = rng.uniform(30, 220, size=(max(2, height // 60), max(2, width // 60), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    gradient = np.linspace(-25, 25, height, dtype=np.float32)[:, None, None]
    image = image + gradient
    for _ in range(int(rng.integers(3, 8))):
        color = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            w, h = int(rng.integers(width // 12, width // 3)), int(rng.integers(height // 12, height // 3))
            cv2.rectangle(image, (x, y), (x + w, y + h), color, -1)
        else:
            cv2.circle(image, (x, y), int(rng.integers(min(height, width) // 20, min(height, width) // 6)), color, -1)
    blurred = np.asarray(cv2.GaussianBlur(image, (3, 3), 0), dtype=np.float32)
    noisy = blurred + rng.normal(0, noise, size=blurred.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def compose(panels: list[Image], *, axis: int = 1, gap: int = 0, gap_color: tuple[int, int, int] = (255, 255, 255),
            outer: int = 0) -> Image:
    """Panels side by side (axis 1) or stacked (axis 0), separated by `gap` px, framed by `outer` px."""
    pieces: list[Image] = []
    for index, panel in enumerate(panels):
        if index and gap:
            shape = (panel.shape[0], gap, 3) if axis == 1 else (gap, panel.shape[1], 3)
            pieces.append(np.full(shape, gap_color, dtype=np.uint8))
        pieces.append(panel)
    image = np.concatenate(pieces, axis=axis)
    if outer:
        image = cv2.copyMakeBorder(image, outer, outer, outer, outer, cv2.BORDER_CONSTANT, value=gap_color)
    return image


@dataclass
class Scene:
    """A static background with an optional moving square; `frame(t)` renders time t in seconds.

    `light(t)` multiplies the whole scene (daylight, a lamp); `tv` is a region [x, y, w, h]
    (shares of the width and height) whose picture changes every `tv_cut_s` seconds.
    """

    width: int = 320
    height: int = 240
    seed: int = 1
    moving: Callable[[float], tuple[int, int] | None] = field(default=lambda t: None)
    noise: float = 0.0
    light: Callable[[float], float] = field(default=lambda t: 1.0)
    tv: tuple[float, float, float, float] | None = None
    tv_cut_s: float = 0.5
    _background: Image | None = None
    _rng: np.random.Generator | None = None

    def frame(self, t: float) -> Image:
        if self._background is None:
            self._background = natural_image(np.random.default_rng(self.seed), self.height, self.width, noise=2.0)
            self._rng = np.random.default_rng(self.seed + 1)
        image = self._background.copy()
        position = self.moving(t)
        if position is not None:
            size = max(8, self.width // 10)
            x, y = position
            cv2.rectangle(image, (x, y), (x + size, y + size), (30, 40, 220), -1)
        if self.tv is not None:
            self._draw_tv(image, t)
        gain = self.light(t)
        if gain != 1.0:
            image = cv2.convertScaleAbs(image, alpha=gain)
        if self.noise and self._rng is not None:
            jitter = self._rng.normal(0, self.noise, size=image.shape)
            image = np.clip(image + jitter, 0, 255).astype(np.uint8)
        return image

    def _draw_tv(self, image: Image, t: float) -> None:
        x, y, w, h = self.tv or (0.0, 0.0, 0.0, 0.0)
        left, top = int(x * self.width), int(y * self.height)
        width, height = max(1, int(w * self.width)), max(1, int(h * self.height))
        shot = np.random.default_rng(self.seed * 1000 + int(t / self.tv_cut_s))
        image[top:top + height, left:left + width] = natural_image(shot, height, width, noise=4.0)


def daylight(start: float, end: float, over_s: float) -> Callable[[float], float]:
    """Light that ramps from `start` to `end` over `over_s` seconds and stays (a sunrise, clouds passing)."""
    return lambda t: start + (end - start) * min(1.0, t / over_s)


def lamp(at_s: float, gain: float) -> Callable[[float], float]:
    """Light that steps to `gain` at `at_s` seconds (a lamp switched on)."""
    return lambda t: 1.0 if t < at_s else gain


def moving_square(width: int, height: int, period_s: float = 4.0) -> Callable[[float], tuple[int, int]]:
    """A square crossing the scene back and forth, always moving."""
    def at(t: float) -> tuple[int, int]:
        phase = (t % period_s) / period_s
        u = 2 * phase if phase < 0.5 else 2 - 2 * phase
        return int(u * (width * 0.8)), int(height * 0.4)
    return at


def appears_at(start_s: float, width: int, height: int) -> Callable[[float], tuple[int, int] | None]:
    """Nothing until `start_s`, then a square that walks in for one second and stays."""
    def at(t: float) -> tuple[int, int] | None:
        if t < start_s:
            return None
        u = min(1.0, t - start_s)
        return int(width * 0.1 + u * width * 0.4), int(height * 0.5)
    return at


def write_video(path: Path, scene: Scene, *, seconds: float, fps: float = 10.0) -> Path:
    """An mp4v MP4 of `scene`, readable by cv2.VideoCapture."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (scene.width, scene.height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    try:
        for index in range(round(seconds * fps)):
            writer.write(scene.frame(index / fps))
    finally:
        writer.release()
    return path


def write_h264(path: Path, scene: Scene, *, seconds: float, fps: float = 30.0, keyframe_s: float = 1.0,
               bframes: int = 0) -> Path:
    """An H.264 MP4 of `scene` with a keyframe exactly every `keyframe_s` seconds (ffmpeg's libx264).

    A camera's encoder: fixed GOP, no scene-cut keyframes, no B-frames unless asked (`bframes`).
    """
    gop = max(1, round(keyframe_s * fps))
    preset = ["-preset", "veryfast", "-bf", str(bframes)] if bframes else ["-preset", "ultrafast"]
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{scene.width}x{scene.height}", "-r", f"{fps:g}", "-i", "-", "-c:v", "libx264", *preset,
               "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(path)]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as encoder:
        assert encoder.stdin is not None
        try:
            for index in range(round(seconds * fps)):
                encoder.stdin.write(scene.frame(index / fps).tobytes())
        finally:
            encoder.stdin.close()
        errors = encoder.stderr.read().decode(errors="replace") if encoder.stderr is not None else ""
    if encoder.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {errors.strip()}")
    return path


def write_folder(folder: Path, scene: Scene, *, count: int, step_s: float = 1.0, ext: str = "png") -> Path:
    """`count` images of `scene`, named so that sorting by name is time order."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        ok, data = cv2.imencode(f".{ext}", scene.frame(index * step_s))
        assert ok
        (folder / f"frame-{index:04d}.{ext}").write_bytes(data.tobytes())
    return folder


# -- MJPEG over HTTP --------------------------------------------------------------------------------
def png_bomb(width: int, height: int) -> bytes:
    """A valid greyscale PNG of `width` x `height` black pixels in a few hundred KB (30000 x 30000: 875 KB).

    Deflate compresses zeros about 1000:1. A slice of rows is compressed once, ended with a full flush (no
    reference back across it), and repeated; the Adler-32 of n zero bytes is ((n % 65521) << 16) | 1.
    """
    row = bytes(width + 1)  # filter byte 0, then the row's pixels
    rows = max(1, min(height, (32 << 20) // len(row)))
    repeats, rest = divmod(height, rows)

    def deflate(data: bytes, *, last: bool) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)

    adler = ((len(row) * height % 65521) << 16) | 1
    idat = b"\x78\xda" + deflate(row * rows, last=False) * repeats + deflate(row * rest, last=True) \
        + struct.pack(">I", adler)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, not interlaced
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MjpegServer(LoopbackHTTPServer):
    """`multipart/x-mixed-replace` JPEG stream at http://127.0.0.1:PORT/stream.mjpg.

    `stop()` closes the listening socket and every open stream; `start()` serves
    again on the same port, which is how a test takes a camera offline and back.
    """

    thread_name = "mjpeg"

    def __init__(self, scene: Scene, *, fps: float = 10.0, port: int | None = None) -> None:
        super().__init__(port=port or free_port())
        self.scene = scene
        self.fps = fps
        self._stopped = threading.Event()
        self.clients = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> Self:
        self._stopped.clear()
        return super().start()

    def stop(self) -> None:
        self._stopped.set()
        super().stop()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                owner.clients += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                started = time.monotonic()
                try:
                    while not owner._stopped.is_set():
                        ok, jpeg = cv2.imencode(".jpg", owner.scene.frame(time.monotonic() - started))
                        assert ok
                        data = jpeg.tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                        self.wfile.write(f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                        owner._stopped.wait(1.0 / owner.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


# -- RTSP relay (rtsp-server-perl) fed by ffmpeg ------------------------------------------------------
RTSP_BINARIES = ("rtsp-server-perl", "ffmpeg")


def rtsp_missing() -> str | None:
    """Why the RTSP tests cannot run here, or None."""
    missing = [name for name in RTSP_BINARIES if shutil.which(name) is None]
    return f"needs {', '.join(missing)} (Debian packages ffmpeg, rtsp-server-perl)" if missing else None


class RtspRelay:
    """An RTSP stream on 127.0.0.1: `rtsp-server-perl` relays what an `ffmpeg` pusher sends.

    The relay speaks RTP over UDP only, so readers need
    OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;udp". `stop_pusher()` and
    `start_pusher()` take the stream away and bring it back.
    """

    def __init__(self, clip: Path, *, gop: int = 10) -> None:
        self.clip = clip
        self.gop = gop  # frames between keyframes the pusher encodes
        self.client_port = free_port()
        self.source_port = free_port()
        self.rtp_port = 20000 + (os.getpid() * 7) % 20000
        self._relay: subprocess.Popen[bytes] | None = None
        self._pusher: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.client_port}/live"

    def start(self) -> RtspRelay:
        self._relay = subprocess.Popen(
            ["rtsp-server-perl", "--clientport", str(self.client_port), "--serverport", str(self.source_port),
             "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
             "--rtp_start_port", str(self.rtp_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_port(self.source_port)
        self.start_pusher()
        return self

    def start_pusher(self) -> None:
        self._pusher = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(self.clip),
             "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(self.gop),
             "-keyint_min", str(self.gop), "-sc_threshold", "0",
             "-rtsp_transport", "udp", "-f", "rtsp", f"rtsp://127.0.0.1:{self.source_port}/live"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop_pusher(self) -> None:
        _terminate(self._pusher)
        self._pusher = None

    def stop(self) -> None:
        self.stop_pusher()
        _terminate(self._relay)
        self._relay = None

    def __enter__(self) -> RtspRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration of a block."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
