"""The notify sink in the real daemon: an endpoint that refuses, fails and hangs, a restart in between, and
every notification delivered exactly once; failures visible in /metrics and /readyz."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.daemon import Daemon, append, responder, wait_until, write_config
from tests.support.faults import metric
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
            status, ready = daemon.json("/readyz")
            assert status == 503
            assert "household#1 (JSON)" in ready["checks"]["delivery"]["detail"]["notify"]
            _, stats = daemon.json("/healthz")
            text = daemon.stderr_text()
        assert "NOTIFYSECRET" not in text and "NOTIFYSECRET" not in str(ready) + str(stats)
