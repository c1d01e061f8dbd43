"""The notify sink off the hot path: `../shared/bench/overhead.py`'s per-decision overhead, with and without it.

Runs the shared script's two drivers (the bare read-call-append loop, then `monitor run`) twice over: once as
the script configures the monitor, once with `[sinks.notify]` on, a household target posting every decision's
`new` alert (`alerts.dedup_ttl_s` is tiny there: every line is a new alert) to a JSON webhook on 127.0.0.1.
Prints one JSON line per configuration. Start nothing first: it starts `stub_openai.py` itself.

    .venv/bin/python benchmarks/bench_notify_overhead.py [--n 200] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.media import free_port  # noqa: E402
from tests.support.notify import WebhookServer  # noqa: E402

SHARED = REPO.parent.parent / "shared" / "bench"
NOTIFY = """
[sinks.notify]
enabled = true
max_per_zone_per_hour = 100000
max_per_hour = 100000
attach_evidence = false

[[sinks.notify.targets]]
name = "household"
urls_env = "BENCH_NOTIFY_URLS"
"""


def run(script: Path, bin_dir: Path, url: str, n: int, latency: float, env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run([sys.executable, str(script), "--monitor", str(bin_dir / "monitor"),
                          "--python", str(bin_dir / "python"), "--url", url, "--latency", str(latency),
                          "--n", str(n)], capture_output=True, text=True, env=env, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("BENCH_SHARED", SHARED)))
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    port = free_port()
    stub = subprocess.Popen([sys.executable, str(args.shared / "stub_openai.py"), "--port", str(port),
                             "--latency", str(args.latency), "--danger-rate", "1.0"])
    work = Path(tempfile.mkdtemp())
    plain = work / "overhead.py"
    plain.write_text((args.shared / "overhead.py").read_text())
    with_notify = work / "overhead_notify.py"
    source = plain.read_text()
    with_notify.write_text(re.sub(r'(\[health\]\nenabled = false\n)', lambda m: m.group(1) + NOTIFY, source, count=1))
    assert with_notify.read_text() != source, "overhead.py's config changed: cannot add [sinks.notify]"
    try:
        time.sleep(1.0)
        url = f"http://127.0.0.1:{port}/v1"
        with WebhookServer() as hook:
            env = {**os.environ, "BENCH_NOTIFY_URLS": hook.url, "MONITOR_SERVICE__STATE_DIR": str(work / "state"),
                   "PYTHONPATH": str(REPO)}
            for name, script in (("without notify", plain), ("with notify", with_notify)):
                result = run(script, bin_dir, url, args.n, args.latency, env)
                print(json.dumps({"config": name, **result, "webhook_posts": len(hook.posted)}), flush=True)
    finally:
        stub.terminate()
        stub.wait(10)


if __name__ == "__main__":
    main()
