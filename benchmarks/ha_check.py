"""What does Home Assistant make of the monitor's discovery messages? Start mosquitto and a real HA, then look.

Starts a mosquitto broker on a free 127.0.0.1 port (or uses one already listening there, `--broker-port`) and
a real Home Assistant core (tests/support/homeassistant.py; needs `make ha-venv`) whose MQTT integration is
connected to it with discovery on `--discovery-prefix`. Prints the broker and HA addresses (and an access
token), waits `--wait` seconds for discovery messages (point a monitor at the broker meanwhile, or pass
`--example` to publish a sample safety sensor), then lists the MQTT entities whose unique_id starts with
`--prefix` (entity id, state, device class, name, device) and the warnings HA logged about MQTT or discovery
(its INFO notices too).

    .venv/bin/python benchmarks/ha_check.py [--prefix pm_] [--wait 10] [--example] [--json] [--keep DIR]

Exit status: 0 when HA logged no MQTT/discovery problem, 1 when it did, 2 when it could not run.
(`--monitor-config` to start the monitor itself against the broker is planned.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.homeassistant import (  # noqa: E402
    NOTICE_LEVELS,
    HomeAssistant,
    HomeAssistantError,
    ha_python,
    missing_ha_reason,
)
from tests.support.mosquitto import Mosquitto  # noqa: E402


@contextmanager
def broker_at(workdir: Path, port: int | None) -> Iterator[tuple[str, int]]:
    """A broker on 127.0.0.1: ours (started and stopped here) or one already listening on `port`."""
    if port is not None:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        yield "127.0.0.1", port
        return
    with Mosquitto(workdir / "broker") as broker:
        yield broker.host, broker.port


def publish_example(host: str, port: int, discovery_prefix: str, prefix: str) -> None:
    """A safety binary_sensor and a problem binary_sensor as the monitor might announce them (mosquitto_pub)."""
    import subprocess

    base = f"{prefix}example"
    device = {"identifiers": [f"{prefix}example"], "name": "Monitor example", "manufacturer": "proactive-monitor",
              "model": "safety monitor"}
    messages = [
        (f"{discovery_prefix}/binary_sensor/{prefix}example/kitchen_danger/config", {
            "name": "Kitchen danger", "unique_id": f"{prefix}example_kitchen_danger", "device_class": "safety",
            "state_topic": f"{base}/kitchen/state", "value_template": "{{ 'ON' if value_json.danger else 'OFF' }}",
            "availability_topic": f"{base}/availability", "device": device}),
        (f"{discovery_prefix}/binary_sensor/{prefix}example/fault/config", {
            "name": "Fault", "unique_id": f"{prefix}example_fault", "device_class": "problem",
            "entity_category": "diagnostic", "state_topic": f"{base}/health",
            "value_template": "{{ 'OFF' if value_json.status == 'ok' else 'ON' }}",
            "availability_topic": f"{base}/availability", "device": device}),
        (f"{base}/availability", "online"),
        (f"{base}/kitchen/state", {"danger": True}),
        (f"{base}/health", {"status": "ok"}),
    ]
    for topic, payload in messages:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1", "-r", "-t", topic, "-m", text],
                       check=True, timeout=10)


def listing(ha: HomeAssistant, prefix: str) -> list[dict[str, Any]]:
    """The MQTT entities whose unique_id starts with `prefix`, with state, attributes and device."""
    states = {s["entity_id"]: s for s in ha.states()}
    devices = {d["id"]: d for d in ha.device_registry()}
    rows = []
    for entry in sorted(ha.entity_registry(), key=lambda e: e["entity_id"]):
        if entry.get("platform") != "mqtt" or not str(entry.get("unique_id", "")).startswith(prefix):
            continue
        state = states.get(entry["entity_id"], {})
        device = devices.get(entry.get("device_id") or "", {})
        rows.append({
            "entity_id": entry["entity_id"], "unique_id": entry["unique_id"], "state": state.get("state"),
            "device_class": state.get("attributes", {}).get("device_class"),
            "friendly_name": state.get("attributes", {}).get("friendly_name"),
            "entity_category": entry.get("entity_category"), "disabled_by": entry.get("disabled_by"),
            "device": device.get("name_by_user") or device.get("name"),
            "device_identifiers": device.get("identifiers"), "attributes": state.get("attributes", {}),
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", default="", help="list entities whose unique_id starts with this")
    parser.add_argument("--discovery-prefix", default="homeassistant")
    parser.add_argument("--broker-port", type=int, help="use the broker already listening on 127.0.0.1:PORT")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for discovery messages")
    parser.add_argument("--example", action="store_true", help="publish a sample safety sensor first")
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")
    parser.add_argument("--keep", type=Path, help="keep HA's config dir and logs here (default: a temp dir)")
    args = parser.parse_args()

    python = ha_python()
    if python is None:
        print(missing_ha_reason(), file=sys.stderr)
        return 2
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="ha-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with broker_at(workdir, args.broker_port) as (host, port):
            ha = HomeAssistant(workdir / "ha", mqtt_host=host, mqtt_port=port, python=python,
                               discovery_prefix=args.discovery_prefix)
            with ha:
                print(f"broker   mqtt://{host}:{port} (discovery prefix {args.discovery_prefix!r})")
                print(f"HA       {ha.url} (up with MQTT connected in {ha.startup_s:.1f} s, pid {ha.pid})")
                print(f"token    {ha.token}")
                print(f"config   {ha.config_dir}")
                if args.example:
                    publish_example(host, port, args.discovery_prefix, args.prefix or "pm_")
                print(f"waiting {args.wait:g} s for discovery messages ...", flush=True)
                time.sleep(args.wait)
                rows = listing(ha, args.prefix)
                problems = ha.problems(levels=NOTICE_LEVELS)
    except (HomeAssistantError, OSError) as error:
        print(f"ha_check: {error}", file=sys.stderr)
        return 2
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        print(json.dumps({"entities": rows, "problems": [str(p) for p in problems]}, indent=2))
    else:
        print(f"\n{len(rows)} MQTT entities with unique_id starting {args.prefix!r}:")
        for row in rows:
            extra = ", ".join(f"{k}={row[k]}" for k in ("device_class", "entity_category", "disabled_by") if row[k])
            print(f"  {row['entity_id']:<50} {row['state']!s:<12} {row['friendly_name']!r} "
                  f"[device {row['device']!r}] {extra}")
        print(f"\n{len(problems)} MQTT/discovery warnings and notices in HA's log:")
        for problem in problems:
            print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
