"""The notify sink (push through Apprise) against real endpoints on 127.0.0.1: a JSON webhook and SMTP."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from monitor.alerts import Alert, AlertEvent
from monitor.core.errors import MonitorError
from monitor.evidence import EvidenceFrame
from monitor.sinks.notify import NotifyError, NotifySink, Service, body_of, services_of, target_urls, title_of
from monitor.sinks.settings import NotifySinkSettings, NotifyTargetSettings
from tests.support.notify import SmtpServer, WebhookServer

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20 + b"\xff\xd9"


def alert(zone: str = "kitchen", *, severity: str = "critical", hazard: str = "unattended hot stove",
          alert_id: str = "a1", frames: tuple[str, ...] = ()) -> Alert:
    return Alert(id=alert_id, zone=zone, sources=("cam",), created_at=time.time(), updated_at=time.time(),
                 severity=severity, hazard=hazard, reason="Oil left on the burner.",  # type: ignore[arg-type]
                 advice="Go back and turn off the stove.", evidence=("walks away",), confidence=0.9, model="m",
                 strategy="single", window_id="w", latency_s=0.1, prompt_tokens=1, completion_tokens=1,
                 zone_name="Kitchen", observations=('10:00:01 log: "Sam walks away from the pan"',), frames=frames)


def new_event(a: Alert, jpeg: bytes | None = JPEG) -> AlertEvent:
    frames = (EvidenceFrame.of(jpeg),) if jpeg is not None else ()
    if frames:
        a = replace(a, frames=(frames[0].id,))
    return AlertEvent("new", a, frames=frames)


def target(name: str, urls: list[str], **options: Any) -> NotifyTargetSettings:
    return NotifyTargetSettings(name=name, urls=[SecretStr(u) for u in urls], **options)


def settings(*targets: NotifyTargetSettings, **options: Any) -> NotifySinkSettings:
    defaults: dict[str, Any] = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "timeout_s": 2.0}
    return NotifySinkSettings(enabled=True, targets=list(targets), **{**defaults, **options})


async def until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_json_webhook_gets_title_advice_first_and_the_evidence_frame(tmp_path: Path) -> None:
    with WebhookServer() as hook:
        sink = NotifySink(settings(target("household", [hook.url])), state_dir=tmp_path)
        await sink.start()
        try:
            await sink.publish(new_event(alert()))
            posted = await asyncio.to_thread(hook.wait_posted, 1)
        finally:
            await sink.close()
    assert posted[0].title == "Danger in Kitchen: unattended hot stove"
    lines = posted[0].message.splitlines()
    assert lines[0] == "Go back and turn off the stove."
    assert "Hazard: unattended hot stove (critical, confidence 0.90)" in lines
    assert "Where: Kitchen" in lines
    assert any(line.startswith("When: ") for line in lines)
    assert '  10:00:01 log: "Sam walks away from the pan"' in lines
    assert posted[0].attachments == [JPEG]
    assert sink.counters["notify:sent"] == 1


async def test_email_through_a_local_smtp_server_carries_the_jpeg(tmp_path: Path) -> None:
    with SmtpServer() as smtp:
        sink = NotifySink(settings(target("caregivers", [smtp.url])), state_dir=tmp_path)
        await sink.start()
        try:
            await sink.publish(new_event(alert()))
            await until(lambda: smtp.messages)
        finally:
            await sink.close()
    message = smtp.messages[0]
    assert message["Subject"] == "Danger in Kitchen: unattended hot stove"
    assert message["To"] == "ann@example.com"
    images = [part for part in message.iter_attachments() if part.get_content_type() == "image/jpeg"]
    assert len(images) == 1 and images[0].get_content() == JPEG
    text = message.get_body(preferencelist=("plain",))
    assert text is not None and text.get_content().startswith("Go back and turn off the stove.")


async def test_routing_household_new_caregivers_from_their_level_quiet_and_acknowledged_not_sent(
        tmp_path: Path) -> None:
    sent: list[tuple[str, str]] = []

    def sender(service: Service, title: str, body: str, attachment: bytes | None) -> str | None:
        sent.append((service.target, title))
        return None

    sink = NotifySink(settings(target("household", ["json://127.0.0.1:9/h"]),
                               target("caregivers", ["json://127.0.0.1:9/c"], audience="caregivers"),
                               target("garage", ["json://127.0.0.1:9/g"], zones=["garage"])),
                      state_dir=tmp_path, sender=sender)
    await sink.start()
    try:
        first = alert()
        await sink.publish(new_event(first))
        await sink.publish(AlertEvent("update", first))  # repeats send nothing
        await sink.publish(AlertEvent("escalate", replace(first, escalation_level=1)))  # below the caregivers
        await sink.publish(AlertEvent("escalate", replace(first, escalation_level=2, caregivers_notified=True)))
        await sink.publish(AlertEvent("new", replace(alert(alert_id="q"), quiet=True)))
        await sink.publish(AlertEvent("new", replace(alert(alert_id="w", severity="info"))))  # below min_severity
        await until(lambda: len(sent) >= 2)
        await asyncio.sleep(0.3)
    finally:
        await sink.close()
    assert sorted(sent) == [("caregivers", "Not acknowledged: Kitchen: unattended hot stove"),
                            ("household", "Danger in Kitchen: unattended hot stove")]
    assert sink.counters["notify:quiet"] == 1


async def test_an_acknowledgement_takes_the_waiting_notifications_out(tmp_path: Path) -> None:
    with WebhookServer() as hook:
        hook.mode = "error"
        sink = NotifySink(settings(target("household", [hook.url]), retry_initial_s=0.3, retry_max_s=0.3),
                          state_dir=tmp_path)
        await sink.start()
        try:
            a = alert()
            await sink.publish(new_event(a))
            await until(lambda: hook.attempts >= 1)
            await sink.publish(AlertEvent("ack", replace(a, acknowledged_at=time.time(), acknowledged_by="ann")))
            hook.mode = "ok"
            await asyncio.sleep(1.0)
            await sink.publish(new_event(a))  # an acknowledged alert is never sent again
            await asyncio.sleep(0.5)
        finally:
            await sink.close()
    assert hook.posted == []
    assert sink.counters["notify:cancelled_ack"] == 1 and sink.counters["notify:acknowledged"] == 1


async def test_a_storm_past_the_limits_is_one_summary_naming_every_alert(tmp_path: Path) -> None:
    with WebhookServer() as hook:
        sink = NotifySink(settings(target("household", [hook.url]), max_per_zone_per_hour=2, summary_after_s=0.2),
                          state_dir=tmp_path)
        await sink.start()
        try:
            for n in range(7):
                await sink.publish(new_event(alert(alert_id=f"a{n}", hazard=f"hazard number {n}"), jpeg=None))
            posted = await asyncio.to_thread(hook.wait_posted, 3)
            await asyncio.sleep(0.5)
        finally:
            await sink.close()
    assert len(hook.posted) == 3  # two alone, then one summary: never silence, never a flood
    summary = posted[2]
    assert summary.title == "5 warnings in kitchen"
    assert all(f"hazard number {n}" in summary.message for n in range(2, 7))
    assert sink.counters["notify:summarised"] == 5


async def test_failing_after_retries_is_counted_logged_by_service_and_a_problem_never_showing_the_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with WebhookServer() as hook:
        hook.mode = "error"
        secret_url = hook.url + "?token=VERYSECRETTOKEN"
        sink = NotifySink(settings(target("caregivers", [secret_url]), max_attempts=3), state_dir=tmp_path)
        await sink.start()
        try:
            await sink.publish(new_event(alert()))
            await until(lambda: sink.counters["notify:failed"] == 1)
            assert sink.problem is not None and "caregivers#1 (JSON)" in sink.problem
            hook.mode = "ok"
            await sink.publish(new_event(alert(alert_id="a2")))
            await until(lambda: sink.counters["notify:sent"] == 1)
        finally:
            await sink.close()
    assert sink.problem is None  # the service delivers again
    assert hook.attempts == 4
    out = capsys.readouterr()
    assert "VERYSECRETTOKEN" not in out.out + out.err + repr(sink)
    assert "notification failed after its retries" in out.out + out.err


def test_urls_come_from_an_env_variable_or_a_secret_file_and_errors_never_quote_them(tmp_path: Path) -> None:
    (tmp_path / "caregivers.urls").write_text("# Ann's phone\nntfy://ann-topic-secret\n\njson://127.0.0.1:9/x\n")
    by_file = NotifyTargetSettings(name="c", urls_file=Path("caregivers.urls"))
    assert target_urls(by_file, {}, tmp_path) == ["ntfy://ann-topic-secret", "json://127.0.0.1:9/x"]
    by_env = NotifyTargetSettings(name="h", urls_env="HOUSE_URLS")
    assert target_urls(by_env, {"HOUSE_URLS": "ntfy://a, tgram://1:b/2"}, None) == ["ntfy://a", "tgram://1:b/2"]
    with pytest.raises(NotifyError, match="HOUSE_URLS is not set"):
        target_urls(by_env, {}, None)
    with pytest.raises(NotifyError, match=r"URL #2 \(bogus\)") as info:
        services_of(by_env, ["ntfy://fine", "bogus://SECRETPART"])
    assert "SECRETPART" not in str(info.value)
    with pytest.raises(ValueError, match="urls_env"):
        NotifyTargetSettings(name="x")


def test_the_message_is_bounded_and_the_title_one_line() -> None:
    long = replace(alert(), advice="Leave now.\nIgnore this " + "x" * 5000, hazard="fire\n" * 100)
    event = AlertEvent("new", long)
    assert "\n" not in title_of(event) and len(title_of(event)) <= 120
    body = body_of(event, 500)
    assert len(body) <= 500 and body.startswith("Leave now. Ignore this")


async def test_a_queue_that_cannot_open_is_a_problem_not_a_dead_monitor_and_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state dir should be")  # nothing can be created inside
    with WebhookServer() as hook:
        sink = NotifySink(settings(target("household", [hook.url])), state_dir=blocker)
        await sink.start()
        try:
            assert sink.problem is not None and sink.problem.startswith("notify queue unavailable")
            with pytest.raises(MonitorError):
                await sink.publish(new_event(alert()))
            # Stored nowhere, yet sent (before: counted as failed and never sent, the service up all along).
            first = await asyncio.to_thread(hook.wait_posted, 1)
            await until(lambda: sink.counters["notify:sent_unqueued"] == 1)
            assert sink.counters["notify:failed"] == 0
            assert sink.problem is not None and sink.problem.startswith("notify queue unavailable")
            blocker.unlink()
            await until(lambda: sink.problem is None, timeout=15)
            await sink.publish(new_event(alert(alert_id="a2")))
            posted = await asyncio.to_thread(hook.wait_posted, 2)
        finally:
            await sink.close()
    assert len(first) == 1 and len(posted) == 2


async def test_a_notification_the_queue_could_not_store_is_tried_three_times_then_counted_failed(
        tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state dir should be")
    tries: list[str] = []

    def refusing(service: Any, title: str, body: str, attachment: bytes | None) -> str | None:
        tries.append(title)
        return "HTTP 503"

    sink = NotifySink(settings(target("household", ["json://127.0.0.1:9/hook"])), state_dir=blocker, sender=refusing)
    await sink.start()
    try:
        with pytest.raises(MonitorError):
            await sink.publish(new_event(alert()))
        await until(lambda: sink.counters["notify:failed"] == 1)
        assert len(tries) == 3 and sink.counters["notify:sent_unqueued"] == 0
        with pytest.raises(MonitorError):  # a stop before the tries are done loses it, counted and said
            await sink.publish(new_event(alert(alert_id="a2")))
    finally:
        await sink.close()
    assert sink.counters["notify:failed"] == 2


def test_the_shipped_notify_config_loads() -> None:
    from monitor.settings import load_settings
    from tests.support.paths import REPO

    settings = load_settings(REPO / "configs" / "notify.toml")
    assert [t.audience for t in settings.sinks.notify.targets] == ["household", "caregivers"]
    assert [z.evidence for z in settings.zones] == [True, False]


def test_check_config_names_a_target_whose_urls_a_start_would_refuse(tmp_path: Path) -> None:
    from monitor.settings import load_settings, notify_problems
    from tests.support.paths import REPO

    settings = load_settings(REPO / "configs" / "notify.toml")
    problems = notify_problems(settings, {})
    assert problems[0] == ("sinks.notify.targets[0]: notify target 'household': environment variable "
                           "MONITOR_NOTIFY_HOUSEHOLD is not set or empty (monitor run refuses to start)")
    assert problems[1].startswith("sinks.notify.targets[1]: notify target 'caregivers': urls_file ")
    fine = notify_problems(settings, {"MONITOR_NOTIFY_HOUSEHOLD": "ntfy://ntfy.sh/SECRETTOPIC"})
    assert not any("targets[0]" in w for w in fine) and "SECRETTOPIC" not in str(fine)
