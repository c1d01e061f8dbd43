"""The notify sink in the real daemon: an endpoint that refuses, fails and hangs, a restart in between, and
every notification delivered exactly once; failures visible in /metrics and /readyz."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.daemon import Daemon, alert_lines, append, responder, wait_until, write_config
from tests.support.faults import metric
from tests.support.media import Scene, moving_square, write_folder
from tests.support.notify import WebhookServer
from tests.support.openai_server import ScriptedOpenAIServer

NOTIFY = """
[sinks.notify]
enabled = true
retry_initial_s = 0.2
retry_max_s = 0.5
timeout_s = 1.0
max_attempts = {attempts}

[[sinks.notify.targets]]
name = "household"
urls_env = "TEST_NOTIFY_URLS"
"""


def _daemon(tmp_path: Path, server: ScriptedOpenAIServer, log: Path, url: str, *, attempts: int = 100) -> Daemon:
    config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs={"workshop": log},
                          alerts=tmp_path / "alerts.jsonl", extra=NOTIFY.format(attempts=attempts))
    env = {"TEST_NOTIFY_URLS": url, "MONITOR_SERVICE__STATE_DIR": str(tmp_path / "state")}
    return Daemon(config, tmp_path, env=env)


def test_refused_then_500_then_hanging_with_a_restart_delivers_each_notification_once(tmp_path: Path) -> None:
    log = tmp_path / "workshop.jsonl"
    log.write_text("")
    hook = WebhookServer().start()
    hook.stop()  # its port, refused until the server comes back
    with ScriptedOpenAIServer(responder=responder()) as server:
        daemon = _daemon(tmp_path, server, log, hook.url + "?token=NOTIFYSECRET")
        with daemon:
            append(log, "Sam climbs the ladder and leans out")
            daemon.wait_log("notification not delivered; will retry", count=2)  # refused
            hook.mode = "error"
            hook.start()
            wait_until(lambda: hook.attempts >= 2, what="500s answered")
            hook.mode = "hang"
            wait_until(lambda: hook.attempts >= 3, what="a request left hanging")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
        assert "NOTIFYSECRET" not in daemon.stderr_text()
        hook.release.set()
        hook.mode = "ok"
        with _daemon(tmp_path, server, log, hook.url + "?token=NOTIFYSECRET") as again:
            again.wait_log("notifications left by the previous run")
            hook.wait_posted(1)
            append(log, "Sam leaves the stove on")
            posted = hook.wait_posted(2)
            wait_until(lambda: metric(again, "monitor_notifications_total", outcome="sent") == 2.0,
                       what="both counted as sent")
    hook.stop()
    titles = sorted(p.title for p in posted)
    assert titles == ["Danger in workshop: unattended hot stove", "Warning in workshop: fall from ladder"]
    assert len(hook.posted) == 2  # exactly once each


def test_a_notification_failing_for_good_is_counted_and_shown_on_readyz(tmp_path: Path) -> None:
    log = tmp_path / "workshop.jsonl"
    log.write_text("")
    with ScriptedOpenAIServer(responder=responder()) as server, WebhookServer() as hook:
        hook.mode = "error"
        with _daemon(tmp_path, server, log, hook.url + "?token=NOTIFYSECRET", attempts=2) as daemon:
            append(log, "Sam climbs the ladder and leans out")
            failed = daemon.wait_log("notification failed after its retries")
            assert failed[0]["service"] == "household#1 (JSON)"
            assert metric(daemon, "monitor_notifications_total", outcome="failed") == 1.0
            assert metric(daemon, "monitor_optional_failures_total", part="notify") == 1.0
            status, ready = daemon.json("/readyz")
            assert status == 503
            assert "household#1 (JSON)" in ready["checks"]["delivery"]["detail"]["notify"]
            _, health = daemon.json("/healthz")
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
            text = daemon.stderr_text()
        assert daemon.logs()[-1]["optional_failures"]["notify"] == 1  # the stats, as the hub's sensor reads them
        assert "NOTIFYSECRET" not in text and "NOTIFYSECRET" not in str(ready) + str(health)


def test_a_camera_zones_warning_keeps_its_frames_without_history_and_the_push_attaches_one(tmp_path: Path) -> None:
    """history.record_frames off (the default): the alert still names its frames, they are in the state dir as
    sent, and the household's notification attaches the newest, the same bytes."""
    log = tmp_path / "garage.jsonl"
    log.write_text("")
    frames = write_folder(tmp_path / "garage-frames", Scene(width=160, height=120, moving=moving_square(160, 120)),
                          count=4, step_s=0.5)
    cameras = (f'\n[[cameras]]\nid = "garage-cam"\nzone = "garage"\nkind = "folder"\npath = "{frames}"\n'
               "folder_fps = 4.0\n")
    with ScriptedOpenAIServer(responder=responder()) as server, WebhookServer() as hook:
        config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs={"garage": log},
                              alerts=tmp_path / "alerts.jsonl", extra=NOTIFY.format(attempts=3) + cameras)
        env = {"TEST_NOTIFY_URLS": hook.url, "MONITOR_SERVICE__STATE_DIR": str(tmp_path / "state"),
               "MONITOR_MODEL__ACCEPTS_IMAGES": "true"}
        with Daemon(config, tmp_path, env=env):
            wait_until(lambda: server.requests and any("image_url" in json.dumps(r) for r in server.requests),
                       what="a frame sent to the model")
            append(log, "Sam climbs the ladder and leans out")
            alert = wait_until(lambda: next((a for a in alert_lines(tmp_path / "alerts.jsonl")
                                             if a["type"] == "new" and a["evidence_frame"]), None),
                               what="an alert naming its evidence frame")
            posted = hook.wait_posted(1)
    kept = tmp_path / "state" / "evidence" / alert["id"] / f"{alert['evidence_frame']}.jpg"
    assert posted[0].attachments == [kept.read_bytes()]
    assert alert["observations"][-1].endswith('garage: "Sam climbs the ladder and leans out"')
    assert list((tmp_path / "state").glob("history/**/*.jpg")) == []  # the history kept no frame


def test_the_household_hears_the_first_warning_and_the_caregivers_only_its_escalation_until_acknowledged(
        tmp_path: Path) -> None:
    """A persisting ladder hazard through `monitor run`: level 0 to the household, level 2 (the caregivers'
    level) to the caregivers with the frame-less text, nothing more after `monitor ack`."""
    log = tmp_path / "garage.jsonl"
    log.write_text("")
    ladder = """
[escalation]
enabled = true
confirmed_within_s = 5
max_per_alert = 10
max_per_hour = 100

[escalation.warning]
escalate_after_s = 1.0
caregivers_from_level = 2

[sinks.notify]
enabled = true
retry_initial_s = 0.2
retry_max_s = 0.5

[[sinks.notify.targets]]
name = "household"
urls_env = "TEST_HOUSEHOLD"

[[sinks.notify.targets]]
name = "caregivers"
audience = "caregivers"
urls_env = "TEST_CAREGIVERS"
"""
    with ScriptedOpenAIServer(responder=responder()) as server, WebhookServer() as household, \
            WebhookServer() as caregivers:
        config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs={"garage": log},
                              alerts=tmp_path / "alerts.jsonl", extra=ladder)
        env = {"TEST_HOUSEHOLD": household.url, "TEST_CAREGIVERS": caregivers.url,
               "MONITOR_SERVICE__STATE_DIR": str(tmp_path / "state")}
        with Daemon(config, tmp_path, env=env) as daemon:
            def caregivers_told() -> bool:
                append(log, "Sam climbs the ladder and leans out")  # the hazard persists
                return bool(caregivers.posted)

            wait_until(caregivers_told, timeout=40, what="the caregivers' notification")
            alert_id = next(a["id"] for a in alert_lines(tmp_path / "alerts.jsonl") if a["type"] == "new")
            ack = subprocess.run([sys.executable, "-m", "monitor", "ack", alert_id, "--config", str(config)],
                                 cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
                                 env={**daemon.env})
            assert ack.returncode == 0, ack.stdout + ack.stderr
            for _ in range(10):  # seen again and again after the ack: no more escalations, no more pushes
                append(log, "Sam climbs the ladder and leans out")
                time.sleep(0.3)
            told = len(caregivers.posted)
    assert [p.title for p in household.posted] == ["Warning in garage: fall from ladder"]
    assert told == len(caregivers.posted) >= 1
    assert caregivers.posted[0].title == "Not acknowledged: garage: fall from ladder"
    assert "(escalation level 2)" in caregivers.posted[0].message
