"""The notify sink: push notifications through Apprise (ntfy, Telegram, email, Signal, Gotify, ...).

Who hears what (docs/notifications.md):

- a `household` target gets every `new` warning (escalation level 0) of its zones at
  or above its `min_severity`;
- a `caregivers` target gets the escalations that reach the caregivers
  (`caregivers_notified`, from the ladder's `caregivers_from_level`), and the
  escalation engine's storm summaries.

Quiet alerts (`info` in quiet hours) and acknowledged alerts are not sent, exactly as
the speaker does not say them; an acknowledgement takes the alert's waiting
notifications out. `update` and `end` events send nothing.

`publish` commits each notification (one per URL of each target) to a SQLite queue
in the state dir and returns; one task sends them, in a worker thread, with retries
and exponential backoff (`retry_initial_s` doubling to `retry_max_s`), across
restarts. One still failing after `max_attempts` is counted (`notify:failed`), logged
naming the service (`caregivers#1 (Telegram)`, never its URL) and shown as the sink's
`problem` (readiness, the stats' `problems`, the hub) until that service delivers again.

Rate limits per target: `max_per_zone_per_hour` and `max_per_hour`. Past either, a
notification is held; held ones become one summary once the first has waited
`summary_after_s`, at most one summary per `summary_every_s`: a storm is one message,
never silence.

URLs are secrets: from an environment variable or a secret file, never logged; an
error that might quote one is redacted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from monitor.alerts import Alert, AlertEvent
from monitor.assess.verdict import SEVERITY_RANK
from monitor.core.errors import MonitorError
from monitor.core.files import SecretFileError, read_secret_file
from monitor.core.text import redact_credentials
from monitor.sinks.notify_queue import NOTIFY_QUEUE_FILE, Note, NotifyQueue, NotifyQueueError
from monitor.sinks.settings import NotifySinkSettings, NotifyTargetSettings

log = structlog.get_logger("monitor.sinks.notify")

_TITLE_CHARS = 120
_MAX_URL_FILE_BYTES = 64 * 1024
_SEPARATORS = re.compile(r"[\s,]+")
_OPENERS = {"info": "Careful", "warning": "Warning", "critical": "Danger"}
_REMEMBERED = 256
_IDLE_POLL_S = 1.0
_REOPEN_S = 5.0
_SETTLE_S = 0.02
_UNQUEUED_ATTEMPTS = 3  # tries of a notification the queue could not store, held in memory only


class NotifyError(MonitorError):
    """A target's URLs cannot be read or are not understood by Apprise; names the target, never the URL."""


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class Service:
    """One URL of a target, with the label that names it in logs (the secret stays inside)."""

    target: str
    index: int
    url: str
    kind: str

    @property
    def label(self) -> str:
        return f"{self.target}#{self.index + 1} ({self.kind})"

    def __repr__(self) -> str:  # never the URL
        return f"Service({self.label})"

    def redact(self, text: str) -> str:
        """`text` without any part of the URL that could be a secret (tokens, topics, passwords)."""
        rest = self.url.partition("://")[2]
        for token in sorted(set(re.split(r"[/:@?&=#,]+", rest)), key=len, reverse=True):
            if len(token) >= 4:
                text = text.replace(token, "***")
        return redact_credentials(text)


def target_urls(target: NotifyTargetSettings, environ: Mapping[str, str], secrets_dir: Path | None) -> list[str]:
    """The target's Apprise URLs from its variable, file and inline list; NotifyError naming what is wrong."""
    urls = [u.get_secret_value() for u in target.urls]
    if target.urls_env is not None:
        value = environ.get(target.urls_env)
        if not value:
            raise NotifyError(f"notify target '{target.name}': environment variable {target.urls_env} is not set "
                              "or empty")
        urls += [u for u in _SEPARATORS.split(value) if u]
    if target.urls_file is not None:
        urls += _file_urls(target, secrets_dir)
    return urls


def _file_urls(target: NotifyTargetSettings, secrets_dir: Path | None) -> list[str]:
    assert target.urls_file is not None
    try:
        text = read_secret_file(target.urls_file, secrets_dir, max_bytes=_MAX_URL_FILE_BYTES)
    except SecretFileError as exc:
        raise NotifyError(f"notify target '{target.name}': urls_file {exc}") from None
    lines = [line.strip() for line in text.splitlines()]
    return [u for line in lines if line and not line.startswith("#") for u in _SEPARATORS.split(line) if u]


def services_of(target: NotifyTargetSettings, urls: list[str]) -> list[Service]:
    """Each URL checked by Apprise; NotifyError naming the target and the URL's number, never the URL."""
    import apprise

    services = []
    for index, url in enumerate(urls):
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            scheme = url.partition("://")[0][:16] if "://" in url else "no scheme"
            raise NotifyError(f"notify target '{target.name}': URL #{index + 1} ({scheme}) is not an Apprise URL "
                              "Apprise understands (docs/notifications.md)")
        services.append(Service(target.name, index, url, str(plugin.service_name)))
    return services


def url_problems(settings: NotifySinkSettings, environ: Mapping[str, str], secrets_dir: Path | None) -> list[str]:
    """What stops the sink from starting (check-config): one line per target, never a URL."""
    if not settings.enabled:
        return []
    problems = []
    for index, target in enumerate(settings.targets):
        try:
            services_of(target, target_urls(target, environ, secrets_dir))
        except NotifyError as exc:
            problems.append(f"sinks.notify.targets[{index}]: {exc} (monitor run refuses to start)")
    return problems


# --------------------------------------------------------------------------- the message


def clean(text: str, limit: int) -> str:
    """One line of printable text, at most `limit` characters, cut at a word."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(text) > limit:
        text = text[: limit - 1].rsplit(" ", 1)[0] + "…"
    return text


def local_time(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at))


def title_of(event: AlertEvent) -> str:
    """Where and what, in a person's words: `Danger in Kitchen: unattended hot stove`."""
    alert = event.alert
    where, hazard = clean(alert.zone_label, 40), clean(alert.hazard, 70)
    if event.type == "escalate":
        if alert.caregivers_notified:
            return clean(f"Not acknowledged: {where}: {hazard}", _TITLE_CHARS)
        return clean(f"Again: {_OPENERS[alert.severity]} in {where}: {hazard}", _TITLE_CHARS)
    return clean(f"{_OPENERS[alert.severity]} in {where}: {hazard}", _TITLE_CHARS)


def body_of(event: AlertEvent, limit: int) -> str:
    """Advice first, then the hazard, the zone, the time, why, what was seen; bounded to `limit` characters."""
    alert = event.alert
    lines = []
    if alert.advice.strip():
        lines.append(clean(alert.advice, 300))
    lines.append(f"Hazard: {clean(alert.hazard, 100)} ({alert.severity}, confidence {alert.confidence:.2f})")
    lines.append(f"Where: {clean(alert.zone_label, 60)}")
    lines.append(f"When: {local_time(alert.created_at)}")
    if event.type == "escalate":
        lines.append(f"Still seen {event.at - alert.created_at:.0f} s later, not acknowledged "
                     f"(escalation level {alert.escalation_level}).")
    if alert.reason.strip():
        lines.append(f"Why: {clean(alert.reason, 300)}")
    seen = [clean(o, 160) for o in alert.observations[-3:]]
    if seen:
        lines.append("Seen:")
        lines += [f"  {line}" for line in seen]
    for other in event.summary[:10]:
        lines.append(f"Also waiting: {clean(other.zone_label, 40)}: {clean(other.hazard, 60)} ({other.severity})")
    if len(event.summary) > 10:
        lines.append(f"and {len(event.summary) - 10} more.")
    lines.append(f"Alert {alert.id}" + (f", frame {alert.frames[-1]}" if alert.frames else "")
                 + f". Acknowledge: monitor ack {alert.id}")
    return bound("\n".join(lines), limit)


def bound(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_of(held: list[Note], limit: int) -> tuple[str, str]:
    """One message standing for several held ones: the most severe first, every one named."""
    ordered = sorted(held, key=lambda n: (-SEVERITY_RANK.get(n.severity, 0), n.seq))
    zones = sorted({n.zone for n in held})
    title = clean(f"{len(held)} warnings in {', '.join(zones)}", _TITLE_CHARS)
    lines = [f"More warnings than the rate limit lets through; each is listed here ({len(held)}):"]
    lines += [f"- {n.title} ({local_time(n.created_at)})" for n in ordered]
    return title, bound("\n".join(lines), limit)


# --------------------------------------------------------------------------- sending


def send(service: Service, title: str, body: str, attachment: bytes | None, *, timeout_s: float) -> str | None:
    """Send one notification (blocking: a worker thread); None when the service accepted it, else why not."""
    import apprise
    from apprise.attachment.memory import AttachMemory

    app = apprise.Apprise()
    if not app.add(service.url):
        return "URL not understood by Apprise"
    attach = None
    if attachment is not None:
        attach = apprise.AppriseAttachment()
        attach.add(AttachMemory(content=attachment, name="evidence.jpg",  # type: ignore[no-untyped-call]
                                mimetype="image/jpeg"))
    with apprise.LogCapture(level=logging.WARNING) as captured:  # type: ignore[no-untyped-call]
        ok = app.notify(body=body, title=title, attach=attach, timeout=timeout_s)
        said = captured.getvalue() if hasattr(captured, "getvalue") else ""
    if ok:
        return None
    reason = " ".join(line.partition(" - WARNING - ")[2] or line for line in said.splitlines()[-3:])
    return service.redact(clean(reason or "not accepted", 300))


Sender = Callable[[Service, str, str, bytes | None], str | None]


# --------------------------------------------------------------------------- the sink


class NotifySink:
    """Push notifications through Apprise, from a durable queue, with retries, routing and rate limits."""

    name = "notify"
    connected = None  # many services, no one connection to report

    def __init__(self, settings: NotifySinkSettings, *, state_dir: Path, counters: Counter[str] | None = None,
                 environ: Mapping[str, str] | None = None, secrets_dir: Path | None = None,
                 evidence: Callable[[str, str], bytes | None] | None = None,
                 sender: Sender | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.queue = NotifyQueue(state_dir / NOTIFY_QUEUE_FILE, max_rows=settings.max_queued)
        self.problem: str | None = None
        self._environ = environ if environ is not None else os.environ
        self._evidence = evidence  # (alert id, frame id) -> the kept JPEG, for escalations after a restart
        self._sender = sender
        self._clock = clock
        # Read and checked when built: a bad URL stops a start, or a reload's prepare, before anything changed.
        self._services = {target.name: services_of(target, target_urls(target, self._environ, secrets_dir))
                          for target in settings.targets}
        self._failing: dict[str, str] = {}  # service label -> why its last notification failed for good
        self._unqueued: set[asyncio.Task[None]] = set()  # sends of notifications the queue could not store
        self._unqueued_notes = 0  # those notifications not yet sent nor counted as failed
        self._frames: OrderedDict[str, bytes] = OrderedDict()  # alert id -> its newest frame as sent
        self._acknowledged: OrderedDict[str, None] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="notify")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backlog = 0
        self._reopen_at = 0.0

    def __repr__(self) -> str:
        return f"NotifySink(targets={[t.name for t in self.settings.targets]})"

    @property
    def backlog(self) -> int:
        return self._backlog

    # -- AlertSink --------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the queue, start sending what a previous run left.

        A queue that cannot be opened (a full disk) does not stop the monitor: it is the sink's problem,
        each notification meanwhile is counted as failed, and the queue is opened again every few seconds.
        """
        await self._open_queue()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="notify")

    async def _open_queue(self) -> bool:
        try:
            await asyncio.to_thread(self.queue.open)
        except NotifyQueueError as exc:
            if self.problem is None:
                log.error("notify queue unavailable; notifications are sent from memory, not durably, until it opens",
                          error=str(exc), retry_every_s=_REOPEN_S)
            self.problem = f"notify queue unavailable: {exc}"
            return False
        if self.problem is not None and self.problem.startswith("notify queue"):
            log.info("notify queue available again", queue=str(self.queue.path))
            self.problem = None
            self._show_problem()
        self._backlog = await asyncio.to_thread(len, self.queue)
        if self._backlog:
            log.info("notifications left by the previous run", waiting=self._backlog)
        return True

    async def publish(self, event: AlertEvent) -> None:
        """Queue the notifications the event calls for, durably; returns before anything is sent."""
        alert = event.alert
        if event.frames:
            self._remember(self._frames, alert.id, event.frames[-1].jpeg)
        if event.type == "ack":
            await self._acknowledge(alert.id)
            return
        targets = [t for t in self.settings.targets if self._routes(t, event)]
        if not targets:
            return
        if (skip := self._skip_reason(alert)) is not None:
            self.counters[f"notify:{skip}"] += len(targets)
            return
        notes = [self._note(event, service) for target in targets for service in self._services[target.name]]
        try:
            added = await asyncio.to_thread(self.queue.put, notes)
        except NotifyQueueError as exc:
            self.problem = f"notify queue unavailable: {exc}"
            self._unqueued_notes += len(notes)
            task = asyncio.create_task(self._send_unqueued(notes), name="notify-unqueued")
            self._unqueued.add(task)
            task.add_done_callback(self._unqueued.discard)
            raise
        self.counters["notify:queued"] += added
        if self.problem is not None and self.problem.startswith("notify queue"):
            self._show_problem()
        self._backlog += added
        self._wake.set()

    async def close(self) -> None:
        """Stop sending; whatever waits stays in the queue for the next start."""
        if self._unqueued:  # held in memory only: a try under way may finish; what is not sent then is lost
            _done, unfinished = await asyncio.wait(self._unqueued, timeout=self.settings.timeout_s + 5.0)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._unqueued_notes:
            log.error("notifications the queue could not store were not sent before the sink closed (a stop or a "
                      "reload)", lost=self._unqueued_notes)
            self.counters["notify:failed"] += self._unqueued_notes
            self._unqueued_notes = 0
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.queue.close)

    # -- routing --------------------------------------------------------------------------
    def _routes(self, target: NotifyTargetSettings, event: AlertEvent) -> bool:
        alert = event.alert
        if target.zones and alert.zone not in target.zones:
            return False
        if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[target.min_severity]:
            return False
        if target.audience == "household":
            return event.type == "new"
        return event.type == "escalate" and alert.caregivers_notified

    def _skip_reason(self, alert: Alert) -> str | None:
        if alert.acknowledged_at is not None or alert.id in self._acknowledged:
            return "acknowledged"
        if alert.quiet:
            return "quiet"
        return None

    async def _acknowledge(self, alert_id: str) -> None:
        self._remember(self._acknowledged, alert_id, None)
        cancelled = await asyncio.to_thread(self.queue.cancel_alert, alert_id)
        if cancelled:
            self.counters["notify:cancelled_ack"] += cancelled
            self._backlog = max(0, self._backlog - cancelled)

    @staticmethod
    def _remember(memory: OrderedDict[str, bytes | None] | OrderedDict[str, bytes] | OrderedDict[str, None],
                  key: str, value: object) -> None:
        memory[key] = value  # type: ignore[assignment]
        memory.move_to_end(key)
        while len(memory) > _REMEMBERED:
            memory.popitem(last=False)

    def _note(self, event: AlertEvent, service: Service) -> Note:
        alert = event.alert
        return Note(0, f"{event.message_id}|{service.target}|{service.index}", service.target, service.index,
                    alert.id, alert.zone, alert.severity, "alert", title_of(event),
                    body_of(event, self.settings.max_body_chars), self._attachment(alert), 0, 0.0, "pending",
                    self._clock())

    def _attachment(self, alert: Alert) -> bytes | None:
        if not self.settings.attach_evidence or not alert.frames:
            return None
        limit = self.settings.max_attachment_kb * 1024
        jpeg = self._frames.get(alert.id)
        if jpeg is None and self._evidence is not None:
            jpeg = self._evidence(alert.id, alert.frames[-1])
        if jpeg is None or len(jpeg) > limit:
            return None
        return jpeg

    # -- sending ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await self._pass()
            except Exception:  # a bug in one pass must not stop every later notification
                log.exception("notify pass failed")
            self._wake.clear()
            try:
                async with asyncio.timeout(await self._sleep_for()):
                    await self._wake.wait()
                # Woken by a publish: the decision's other sinks (the JSONL writer thread, MQTT) go first;
                # a send holds the GIL for a few ms (Apprise builds the request in Python) and would delay them.
                await asyncio.sleep(_SETTLE_S)
            except TimeoutError:
                pass

    async def _sleep_for(self) -> float:
        if not self.queue.is_open:
            return _IDLE_POLL_S
        due = await asyncio.to_thread(self.queue.next_due)
        return _IDLE_POLL_S if due is None else min(_IDLE_POLL_S, max(0.0, due - self._clock()))

    async def _pass(self) -> None:
        if not self.queue.is_open:
            if time.monotonic() < self._reopen_at:
                return
            self._reopen_at = time.monotonic() + _REOPEN_S
            if not await self._open_queue():
                return
        for note in await asyncio.to_thread(self.queue.due, self._clock()):
            await self._deliver(note)
        await self._summarise()
        self._backlog = await asyncio.to_thread(len, self.queue)

    async def _deliver(self, note: Note) -> None:
        if note.kind == "alert" and note.alert_id in self._acknowledged:
            await asyncio.to_thread(self.queue.remove, [note.seq])
            self.counters["notify:cancelled_ack"] += 1
            return
        if note.kind == "alert" and await asyncio.to_thread(self._over_limit, note):
            await asyncio.to_thread(self.queue.hold, note)
            self.counters["notify:rate_limited"] += 1
            return
        service = self._service(note)
        if service is None:  # its target or URL left the configuration
            await asyncio.to_thread(self.queue.remove, [note.seq])
            self.counters["notify:dropped_unconfigured"] += 1
            log.warning("notification dropped: its target is no longer configured", target=note.target,
                        url_number=note.url_index + 1, alert=note.alert_id)
            return
        error = await self._attempt(service, note)
        if error is None:
            await asyncio.to_thread(self.queue.sent, note, self._clock())
            self.counters["notify:sent"] += 1
            self._recovered(service)
        else:
            await self._failed_attempt(service, note, error)

    async def _attempt(self, service: Service, note: Note) -> str | None:
        loop = asyncio.get_running_loop()
        timeout = self.settings.timeout_s
        sender = self._sender

        def call() -> str | None:
            if sender is not None:
                return sender(service, note.title, note.body, note.attachment)
            return send(service, note.title, note.body, note.attachment, timeout_s=timeout)

        try:
            async with asyncio.timeout(timeout + 5.0):
                return await loop.run_in_executor(self._pool, call)
        except TimeoutError:
            return f"no answer within sinks.notify.timeout_s={timeout:g}"
        except Exception as exc:  # a plugin's bug is a failed attempt, never a dead sink
            return service.redact(clean(f"{type(exc).__name__}: {exc}", 300))

    async def _failed_attempt(self, service: Service, note: Note, error: str) -> None:
        attempts = note.attempts + 1
        if attempts >= self.settings.max_attempts:
            await asyncio.to_thread(self.queue.remove, [note.seq])
            self.counters["notify:failed"] += 1
            self._failing[service.label] = error
            self._show_problem()
            log.error("notification failed after its retries", service=service.label, alert=note.alert_id,
                      attempts=attempts, error=error)
            return
        delay = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2 ** (attempts - 1))
        await asyncio.to_thread(self.queue.retry, note, next_at=self._clock() + delay, error=error)
        self.counters["notify:retried"] += 1
        log.warning("notification not delivered; will retry", service=service.label, alert=note.alert_id,
                    attempt=attempts, retry_in_s=round(delay, 1), error=error)

    async def _send_unqueued(self, notes: list[Note]) -> None:
        """Notifications the queue could not store (a full disk) are still sent now, each tried up to 3 times a
        few seconds apart: not durable (a stop loses them, counted), and without the rate limits and summaries,
        which need the queue. Sending is what matters; the queue's failure is shown as the sink's problem."""
        pending = list(notes)  # taken out by _send_in_memory as each is settled
        try:
            await self._send_in_memory(pending)
        except Exception:  # a bug here must not leave its notifications neither sent nor counted
            log.exception("sending notifications the queue could not store failed", lost=len(pending))
            self._unqueued_failed(len(pending))

    async def _send_in_memory(self, pending: list[Note]) -> None:
        for attempt in range(_UNQUEUED_ATTEMPTS):
            if attempt:
                await asyncio.sleep(min(self.settings.retry_initial_s, 10.0) * 2 ** (attempt - 1))
            for note in list(pending):
                if await self._sent_unqueued(note, attempt):
                    pending.remove(note)
                    self._unqueued_notes -= 1
            if not pending:
                return
        self._unqueued_failed(len(pending))
        pending.clear()

    def _unqueued_failed(self, count: int) -> None:
        self.counters["notify:failed"] += count
        self._unqueued_notes -= count

    async def _sent_unqueued(self, note: Note, attempt: int) -> bool:
        """One try of a notification held in memory; True when it needs no more tries."""
        service = self._service(note)
        if note.alert_id in self._acknowledged:
            self.counters["notify:cancelled_ack"] += 1
            return True
        if service is None:
            return True
        error = await self._attempt(service, note)
        # The sink's problem stays "notify queue unavailable" until the queue opens, which then shows these.
        if error is None:
            self.counters["notify:sent_unqueued"] += 1
            self._failing.pop(service.label, None)
            return True
        log.warning("notification the queue could not store not delivered", service=service.label,
                    alert=note.alert_id, attempt=attempt + 1, of=_UNQUEUED_ATTEMPTS, error=error)
        if attempt + 1 == _UNQUEUED_ATTEMPTS:
            self._failing[service.label] = error
        return False

    def _recovered(self, service: Service) -> None:
        if self._failing.pop(service.label, None) is not None:
            log.info("notification service delivers again", service=service.label)
            self._show_problem()

    def _show_problem(self) -> None:
        failed = self.counters["notify:failed"]
        self.problem = None if not self._failing else (
            f"{failed} notification(s) failed after {self.settings.max_attempts} attempts; failing: "
            + "; ".join(f"{label}: {why}" for label, why in sorted(self._failing.items())))

    def _service(self, note: Note) -> Service | None:
        services = self._services.get(note.target, [])
        return services[note.url_index] if note.url_index < len(services) else None

    # -- rate limits and summaries ---------------------------------------------------------------
    def _over_limit(self, note: Note) -> bool:
        sent = self.queue.sent_within(note.target, note.url_index, note.zone, self._clock() - 3600.0)
        return sent.zone >= self.settings.max_per_zone_per_hour or sent.total >= self.settings.max_per_hour

    async def _summarise(self) -> None:
        held = await asyncio.to_thread(self.queue.held)
        groups: dict[tuple[str, int], list[Note]] = {}
        for note in held:
            groups.setdefault((note.target, note.url_index), []).append(note)
        now = self._clock()
        for (target, index), notes in groups.items():
            if now - notes[0].created_at < self.settings.summary_after_s:
                continue
            sent = await asyncio.to_thread(self.queue.sent_within, target, index, "", now - 3600.0)
            if sent.last_summary_at is not None and now - sent.last_summary_at < self.settings.summary_every_s:
                continue
            title, body = summary_of(notes, self.settings.max_body_chars)
            worst = max(notes, key=lambda n: (SEVERITY_RANK.get(n.severity, 0), n.seq))
            summary = Note(0, f"summary|{target}|{index}|{notes[0].seq}-{notes[-1].seq}", target, index,
                           worst.alert_id, worst.zone, worst.severity, "summary", title, body, worst.attachment, 0,
                           now, "pending", now)
            await asyncio.to_thread(self.queue.summarise, notes, summary)
            self.counters["notify:summarised"] += len(notes)
            log.warning("notifications past the rate limit sent as one summary", target=target,
                        url_number=index + 1, alerts=len(notes))
            self._wake.set()
