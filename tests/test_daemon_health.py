"""`/healthz`, `/readyz` and `/metrics` of the running daemon, against a model server that goes away."""

from __future__ import annotations

import signal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Daemon, KillableOpenAIServer, append, responder, wait_until, write_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(daemon: Daemon) -> Samples:
    status, body = daemon.http("/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_readyz_follows_the_model_server_and_metrics_count_the_work(tmp_path: Path) -> None:
    """Readiness follows the real assessment calls: a failed call makes it 503 (with what failed), and only a
    call that succeeds again makes it 200; the models-list probe, which answers while calls fail, is not asked."""
    log, alerts = tmp_path / "garage.jsonl", tmp_path / "alerts.jsonl"
    log.write_text("")
    server = KillableOpenAIServer(responder=responder()).start()
    try:
        config = write_config(tmp_path / "monitor.toml", base_url=server.base_url, logs={"garage": log},
                              alerts=alerts, attempt_timeout_s=2.0)
        env = {"MONITOR_HEALTH__BACKEND_FRESH_S": "1.0"}
        with Daemon(config, tmp_path, env=env) as daemon:
            status, health = daemon.json("/healthz")
            assert status == 200 and health["alive"] is True and health["state"] == "running"
            status, ready = daemon.json("/readyz")
            assert status == 200 and ready["failed"] == []
            assert set(ready["checks"]) == {"service", "sources", "zones", "backend", "sinks", "delivery", "tasks"}
            assert ready["checks"]["sources"]["detail"] == {"garage": "online"}
            assert ready["checks"]["zones"]["detail"] == {"garage": "unknown: no observations since start"}

            before = scrape(daemon)
            texts = ["Sam climbs the ladder and leans out", "Sam waters the plants", "Sam leaves the stove on"]
            for count, text in enumerate(texts, start=1):
                append(log, text)
                daemon.wait_log("window assessed", count=count)
            # "window assessed" is logged before the alert is published and the window's end-to-end time
            # observed: wait for the last of the three to be counted rather than race it.
            e2e = ("monitor_stage_latency_seconds_count", (("stage", "end_to_end"),))
            after = wait_until(lambda: (s := scrape(daemon)).get(e2e, 0.0) - before.get(e2e, 0.0) >= 3 and s,
                               timeout=10, what="three end-to-end latencies counted")

            server.stop()
            append(log, "Sam sweeps the floor")  # fails: nobody answers
            daemon.wait_log("assessment failed")
            not_ready = wait_until(lambda: (r := daemon.json("/readyz"))[0] == 503 and r[1], timeout=10,
                                   what="/readyz 503 after a model call failed")
            failed = scrape(daemon)

            server = KillableOpenAIServer(responder=responder(), port=server.port).start()
            still = daemon.json("/readyz")  # the server is back, but no call has succeeded yet
            append(log, "Sam folds the laundry")
            back = wait_until(lambda: (r := daemon.json("/readyz"))[0] == 200 and r[1], timeout=10,
                              what="/readyz 200 after a model call succeeded again")
            assert daemon.json("/healthz")[0] == 200
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(timeout=15) == 0
    finally:
        server.stop()

    assert not_ready["failed"] == ["backend"]
    assert not_ready["checks"]["backend"]["detail"].startswith("the last model call failed")
    assert "transient" in not_ready["checks"]["backend"]["detail"]
    assert still[0] == 503 and "probe" not in still[1]["checks"]["backend"]["detail"]
    assert back["ready"] is True
    assert back["checks"]["zones"]["detail"] == {"garage": "hazard: critical hazard: unattended hot stove"}

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("monitor_windows_assessed_total") == 3
    assert delta("monitor_model_calls_total") == 3
    assert delta("monitor_tokens_total", kind="prompt") == 3 * 42
    assert delta("monitor_tokens_total", kind="completion") == 3 * 17
    assert delta("monitor_alerts_total", type="new", severity="warning") == 1
    assert delta("monitor_alerts_total", type="new", severity="critical") == 1
    assert value(after, "monitor_open_alerts") == 2
    assert value(after, "monitor_source_up", source="garage") == 1
    assert value(before, "monitor_zone_state", zone="garage", state="unknown") == 1
    assert value(after, "monitor_zone_state", zone="garage", state="hazard") == 1
    assert sum(value(after, "monitor_zone_state", zone="garage", state=s)
               for s in ("clear", "hazard", "unknown", "off", "blind")) == 1
    for stage in ("capture", "gating", "queue_wait", "prompt_build", "model_call", "end_to_end"):
        assert delta("monitor_stage_latency_seconds_count", stage=stage) == 3, stage
    assert delta("monitor_stage_latency_seconds_count", stage="alert_publish") == 2
    assert 0 < delta("monitor_stage_latency_seconds_sum", stage="model_call") < 3 * 2.0
    assert value(failed, "monitor_model_errors_total", kind="transient") == 1
    assert value(failed, "monitor_windows_assessed_total") == value(after, "monitor_windows_assessed_total")
    assert value(after, "process_open_fds") > 0
