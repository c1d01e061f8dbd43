"""Screenshots of what a Home Assistant user sees of the monitor, taken in headless Chromium.

Starts mosquitto, a real Home Assistant core (tests/support/homeassistant.py; needs `make ha-venv`), a scripted
model server and the monitor itself (the real daemon, three zones), then makes the kitchen see a hazard, the
garage go blind (its model calls fail) and the workshop (a camera zone) warn with its evidence frame, and takes
PNG screenshots of the hub device page, the kitchen's device page (a hazard), the garage's (blind), the
workshop's (the Evidence image) and the generated overview dashboard, into `--out` (docs/img).

Chromium (Debian's `chromium`: apt-get install -y chromium) runs headless with a throwaway profile and is
driven over the DevTools protocol (the standard-library websocket client of the HA harness): the page gets
HA's long-lived token in `localStorage.hassTokens`, so no login screen.

    .venv/bin/python benchmarks/ha_screenshots.py [--out docs/img] [--chromium chromium] [--settle 8]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.daemon import Daemon, append, responder, write_config  # noqa: E402
from tests.support.homeassistant import HomeAssistant, _WebSocket, ha_python, missing_ha_reason  # noqa: E402
from tests.support.media import Scene, moving_square, write_folder  # noqa: E402
from tests.support.mosquitto import Mosquitto, free_port  # noqa: E402
from tests.support.openai_server import Action, ScriptedOpenAIServer  # noqa: E402

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1280,1000")


def model_answer(body: dict[str, Any]) -> Action:
    """The scripted model: the garage's observations (a pan of oil) fail with HTTP 500, the rest by word."""
    content = body.get("messages", [{}])[-1].get("content", "")
    if isinstance(content, list):  # the text parts only: an image's base64 can spell "oil" by chance
        content = [part for part in content if isinstance(part, dict) and part.get("type") == "text"]
    text = json.dumps(content).lower()
    return Action(status=500) if "oil" in text else responder()(body)


def monitor_config(folder: Path, base_url: str, broker: Mosquitto) -> Path:
    logs = {zone: folder / f"{zone}.jsonl" for zone in ("kitchen", "garage", "workshop")}
    for log in logs.values():
        log.touch()
    alerts = folder / "alerts.jsonl"
    frames = write_folder(folder / "workshop-frames", Scene(width=640, height=480, moving=moving_square(640, 480)),
                          count=4, step_s=0.5)
    return write_config(folder / "monitor.toml", base_url=base_url, logs=logs, alerts=alerts, extra=f"""
[health]
blind_after_s = 2

[escalation]
enabled = true
confirmed_within_s = 5

[escalation.warning]
escalate_after_s = 1.0
caregivers_from_level = 2

[mqtt]
host = "{broker.host}"
port = {broker.port}
topic_prefix = "proactive_monitor"

[mqtt.discovery]
device_name = "Proactive monitor"

[[zones]]
id = "kitchen"
name = "Kitchen"
area = "Kitchen"

[[zones]]
id = "garage"
name = "Garage"
area = "Garage"

[[zones]]
id = "workshop"
name = "Workshop"
area = "Workshop"

[[cameras]]
id = "workshop-cam"
zone = "workshop"
kind = "folder"
path = "{frames}"
folder_fps = 4.0
""")


class Chromium:
    """A headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={self.port}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._id = 0
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as response:
                    pages = [p for p in json.loads(response.read()) if p.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port within 30 s")
            time.sleep(0.2)
        path = pages[0]["webSocketDebuggerUrl"].split(f":{self.port}", 1)[1]
        self.ws = _WebSocket("127.0.0.1", self.port, path, 60.0)

    def call(self, method: str, **params: Any) -> Any:
        self._id += 1
        self.ws.send_json({"id": self._id, "method": method, "params": params})
        while (answer := self.ws.receive_json()).get("id") != self._id:
            pass
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result")

    def open(self, url: str, settle_s: float) -> None:
        self.call("Page.navigate", url=url)
        time.sleep(settle_s)  # HA's frontend renders in web components after its websocket answers

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"wrote {path} ({path.stat().st_size} bytes)")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextlib.contextmanager
def stack(folder: Path) -> Iterator[tuple[HomeAssistant, Daemon]]:
    with Mosquitto(folder / "broker") as broker, ScriptedOpenAIServer(responder=model_answer) as model:
        ha = HomeAssistant(folder / "ha", mqtt_host=broker.host, mqtt_port=broker.port)
        (folder / "ha").mkdir(exist_ok=True)
        ha.start()
        daemon = Daemon(monitor_config(folder, model.base_url, broker), folder,
                        env={"MONITOR_MODEL__ACCEPTS_IMAGES": "true"})
        try:
            daemon.start()
            yield ha, daemon
        finally:
            daemon.kill()
            ha.stop()


def device_id(ha: HomeAssistant, identifier: str) -> str:
    for device in ha.device_registry():
        if ["mqtt", identifier] in device["identifiers"]:
            return str(device["id"])
    raise RuntimeError(f"no device {identifier} in Home Assistant")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds for a page to render")
    args = parser.parse_args()
    if ha_python() is None:
        print(missing_ha_reason(), file=sys.stderr)
        return 2
    if shutil.which(args.chromium) is None:
        print(f"no chromium at {args.chromium!r}: apt-get install -y chromium", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ha-screenshots-") as tmp, stack(Path(tmp)) as (ha, daemon):
        folder = Path(tmp)
        ha.wait_state("binary_sensor.kitchen_hazard", timeout=60)
        # First, while the camera's frames are in the workshop's window: a warning with its evidence frame.
        append(folder / "workshop.jsonl", "Sam climbs the ladder and leans far out")
        ha.wait_state("image.workshop_evidence", lambda s: s["state"] not in ("unknown", "unavailable"), timeout=30)
        append(folder / "kitchen.jsonl", "Sam waters the plants")
        ha.wait_state("binary_sensor.kitchen_hazard", "off", timeout=30)
        for _ in range(20):  # a persisting hazard: it escalates to a caregiver
            append(folder / "kitchen.jsonl", "Sam climbs the ladder and leans far out")
            time.sleep(0.3)
        ha.wait_state("binary_sensor.kitchen_hazard", "on", timeout=30)
        append(folder / "garage.jsonl", "Sam puts a pan of oil on the stove")
        ha.wait_state("binary_sensor.garage_monitoring_problem", "on", timeout=30)
        chromium = Chromium(args.chromium, folder / "chromium")
        try:
            chromium.open(ha.url + "/", 3)
            tokens = {"access_token": ha.token, "token_type": "Bearer", "expires_in": 315360000,
                      "hassUrl": ha.url, "clientId": ha.url + "/", "expires": int(time.time() * 1000) + 315360000000,
                      "refresh_token": ""}
            store = f"localStorage.setItem('hassTokens', {json.dumps(json.dumps(tokens))})"
            chromium.call("Runtime.evaluate", expression=store)
            pages = {"ha-hub.png": f"/config/devices/device/{device_id(ha, 'proactive_monitor')}",
                     "ha-zone-hazard.png": f"/config/devices/device/{device_id(ha, 'proactive_monitor_kitchen')}",
                     "ha-zone-blind.png": f"/config/devices/device/{device_id(ha, 'proactive_monitor_garage')}",
                     "ha-zone-evidence.png":
                         f"/config/devices/device/{device_id(ha, 'proactive_monitor_workshop')}",
                     "ha-overview.png": "/lovelace/0"}
            for name, page in pages.items():
                chromium.open(ha.url + page, args.settle)
                chromium.screenshot(args.out / name)
        finally:
            chromium.close()
        daemon.signal()
        daemon.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
