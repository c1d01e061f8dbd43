"""The MQTT alert sink: the topic contract, control topics, discovery and delivery that loses nothing.

Topics under `<prefix>` (docs/mqtt.md has the full contract):

- `available`: retained `online` once connected (after every retained state topic is current, so a
  subscriber never sees `online` next to a stale state), `offline` at clean shutdown and as the Last Will.
- `alerts`: every alert event as JSON, QoS 1, not retained.
- `<zone>/state`: the zone's state from `ZoneStatus` (clear, hazard, degraded, unknown, off, blind, with a reason).
- `<zone>/last_warning`, `<zone>/event`: the open warning's text (cleared when it ends) and HA events.
- `<zone>/monitoring/set|state`, `<zone>/sensitivity/set|state`: run-time controls.
- `stats`: periodic JSON, retained (Home Assistant's diagnostic sensors read it).

Timestamps in payloads are ISO 8601 in UTC; the same instant in seconds since the
epoch is kept under `<key>_epoch`.
- `escalations` (out) and `<zone>/ack` (in): reaching the person, see `monitor/escalation/contract.py`.
- `<zone>/escalation_state`, `escalation_state`: the open escalations of a zone, of every zone (retained).

Every alert event carries an `event_id` and a `seq` (monitor/sinks/sequence.py), the same on each topic it
reaches, so consumers can drop duplicates; the retained escalation state carries the `seq` of the
escalations still waiting for a caregiver.

Alert messages (`alerts`, `<zone>/event`) go through the durable `Outbox`: `publish`
returns once the message is committed to SQLite, and a background task sends
them in order, removing each only after the broker's PUBACK. Retained state
topics are "latest value wins" and are simply re-published on every connect.
The reconnect loop lives outside the client, with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from monitor.alerts import Alert, AlertEvent
from monitor.control import ZoneControls
from monitor.core.aio import Backoff, cancel_all, wait_event
from monitor.core.errors import MonitorError
from monitor.core.files import UnsafePathError, private_dir, read_nofollow, replace_file
from monitor.core.jsonio import loads_bounded
from monitor.core.statefile import move_aside
from monitor.core.supervise import RESTART_MAX_S, RESTART_MIN_S, Crashes
from monitor.core.text import iso_time, shorten
from monitor.escalation import contract as reach
from monitor.escalation.engine import AckRequest
from monitor.mqtt.client import log_connect_failure, make_client
from monitor.mqtt.settings import MqttSettings
from monitor.sinks.ha_discovery import Discovery, Topics, ZoneLabel, labels
from monitor.sinks.outbox import MemoryOverflow, Outbox, OutboxError, OutboxMessage
from monitor.sinks.sequence import EventSequence
from monitor.zones import ZoneState, ZoneStatus

if TYPE_CHECKING:
    from monitor.history.desk import FeedbackHandler

log = structlog.get_logger("monitor.sinks.mqtt")

_BATCH = 32  # outbox messages in flight at once; the acknowledged prefix is removed
_GOODBYE_TIMEOUT_S = 2.0
_PUBLISHED_RECORD = "mqtt-published.json"
_MAX_RECORD_BYTES = 16 * 1024 * 1024
_MAX_RECORD_DEPTH = 4  # {"topics": [...]}
_ZONE_TOPIC_TAILS = ("state", "last_warning", "monitoring/state", "sensitivity/state", "escalation_state",
                     "evidence")
# Zone ids and discovery object ids (`<zone>_<entity>`) as the configuration allows them; no wildcard, no NUL.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}\Z")
_COMPONENT = re.compile(r"^[a-z_]{1,40}\Z")

StatsProvider = Callable[[], Mapping[str, Any]]


class MqttSinkError(MonitorError):
    """The MQTT sink's background task failed; names the broker."""


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _stamp(key: str, epoch_s: float) -> dict[str, Any]:
    """`key` as ISO 8601 and `<key>_epoch` as seconds since the epoch."""
    return {key: iso_time(epoch_s), f"{key}_epoch": epoch_s}


# --------------------------------------------------------------------------- the sink


class MqttSink:
    """Publishes alert events to MQTT and applies control commands to `controls`.

    `zones` are the configured zones, ids or `ZoneLabel`s with a display name and
    area (for discovery, state and control topics); `state_dir` holds the outbox
    (unless configured elsewhere) and the record of retained topics published;
    `stats` returns the service's counters for the `stats` topic; `status` is the
    service's zone tracker, which the zone state topics follow (a sink made
    without one tracks the alerts it publishes itself); `configuration_url` (the
    health server) goes into the hub device of the discovery.
    """

    name = "mqtt"

    def __init__(self, settings: MqttSettings, *, zones: Sequence[str | ZoneLabel], state_dir: Path,
                 controls: ZoneControls | None = None, stats: StatsProvider | None = None,
                 status: ZoneStatus | None = None, configuration_url: str | None = None,
                 acknowledge: Callable[[AckRequest], None] | None = None) -> None:
        self.settings = settings
        self.labels = labels(zones)
        self.zones = [label.id for label in self.labels]
        self._evidence_zones = frozenset(label.id for label in self.labels if label.evidence)
        self.state_dir = state_dir
        self.controls = controls if controls is not None else ZoneControls()
        self.status = status if status is not None else ZoneStatus(self.zones, controls=self.controls)
        # Escalations restored at start and not confirmed since (the daemon sets AlertManager.held_escalations).
        self.held_escalations: Callable[[], Sequence[Alert]] = tuple
        self.topics = Topics(settings.topic_prefix)
        self.discovery = Discovery(settings, configuration_url=configuration_url, reach=acknowledge is not None)
        self.outbox = Outbox(settings.outbox.resolve(state_dir), max_messages=settings.outbox.max_messages)
        # What the outbox could not store (a full disk) still goes out while the broker is connected.
        self.overflow = MemoryOverflow()
        # A spill into the outbox and a delivery's choice of batch (the outbox's, else memory's) never interleave:
        # else a batch from memory could go out before the older messages a spill just moved into the outbox.
        self._order = threading.Lock()
        self.sequence = EventSequence(state_dir)
        self._names = {label.id: label.name or label.id for label in self.labels}
        self.counters: Counter[str] = Counter()
        self._stats = stats
        self._acknowledge = acknowledge  # where `<zone>/ack` requests go (the escalation engine)
        self._retained: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._announce_due = False
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        self._outbox_wake = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._state_wake = asyncio.Event()
        self._stats_wake = asyncio.Event()
        self.crashes = Crashes("mqtt-sink")  # the delivery task restarted after an unexpected error
        # Feedback on alerts (issue 13): set by the daemon; then <prefix>/feedback is subscribed,
        # its messages go to the handler, and each zone's device gets the feedback buttons.
        self.feedback: FeedbackHandler | None = None

    def __repr__(self) -> str:
        return f"MqttSink(broker={self.settings.broker!r}, prefix={self.settings.topic_prefix!r})"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def problem(self) -> str | None:
        """Why the sink cannot be trusted to deliver right now (its task died and was restarted), else None."""
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            return f"delivery task stopped: {task.exception()}"
        return self.crashes.problem()

    @property
    def backlog(self) -> int:
        """Messages in the outbox, or kept in memory, waiting for the broker's acknowledgement."""
        return len(self.outbox) + len(self.overflow)

    async def wait_connected(self) -> None:
        """Wait until the sink is connected and has announced itself (tests, readiness)."""
        await self._connected.wait()

    def restore_open_alerts(self, alerts: Sequence[Alert]) -> None:
        """Seed the per-zone state with alerts already open (a sink rebuilt by a config reload)."""
        for alert in alerts:
            self.status.alert_event(AlertEvent("update", alert, at=alert.updated_at))

    # -- AlertSink ------------------------------------------------------------------
    async def start(self) -> None:
        """Open the outbox (pending messages of a previous run go out first) and start connecting."""
        if self._task is not None:
            return
        self._stop.clear()
        # A full disk or an unwritable state dir must not keep the monitor from starting: the sink runs
        # without durability (put failures are counted) and the outbox opens as soon as it can.
        await asyncio.to_thread(self.outbox.try_open)
        await asyncio.to_thread(self.sequence.load)
        if len(self.outbox):
            log.info("mqtt outbox has messages from a previous run", pending=len(self.outbox),
                     outbox=str(self.outbox.path))
        else:
            self._outbox_empty.set()
        for zone in self.zones:
            self._set_zone_state(self.status.state(zone))
            self._set_last_warning(zone, time.time())
            self._echo_controls(zone)
        self._set_escalation_state()
        self.controls.listeners.append(self._echo_controls)
        self.status.listeners.append(self._set_zone_state)
        self._task = asyncio.create_task(self._run(), name="mqtt-sink")
        self._task.add_done_callback(self._task_done)

    async def publish(self, event: AlertEvent) -> None:
        """Returns once the event's messages are committed to the outbox; delivery happens in the background."""
        self._raise_if_failed()
        alert = event.alert
        seq = await self._number(event)
        messages = [(self.topics.alerts, _dumps(_alert_payload(event, seq)), event.message_id)]
        if event.type == "new" and not alert.quiet:  # quiet hours: recorded, but no HA event to act on
            messages.append((self.topics.event(alert.zone), _dumps(_event_payload(event, seq)),
                             f"{event.message_id}:event"))
        messages += reach.escalation_messages(self.topics.prefix, event, seq)
        failure: OutboxError | None = None
        for topic, payload, message_id in messages:
            try:
                await self._enqueue(topic, payload, message_id)
            except OutboxError as exc:  # kept in memory: every message of the event is, not just the first
                failure = failure or exc
        if failure is not None:
            # Counted and raised after the zone's retained state is updated: that needs no disk.
            self.counters["outbox_put_failures"] += 1
        # The tracker hears of the event from the pipeline too, after every sink; telling it now keeps
        # the retained state in step with the alert just queued (opening or closing is idempotent).
        self.status.alert_event(event)
        if event.type != "ack":  # an ack is not a warning: last_warning keeps its time
            self._set_last_warning(alert.zone, event.at)
        if event.frames and alert.zone in self._evidence_zones:  # the frame the alert names (evidence_frame)
            self._set_retained(self.topics.evidence(alert.zone), event.frames[-1].jpeg)
        self._set_escalation_state(alert.zone)
        if failure is not None:
            raise failure

    async def _number(self, event: AlertEvent) -> int:
        """The event's sequence number; a newly reserved block is on disk before its first number is used."""
        seq, reserved = self.sequence.take()
        if reserved:
            await self.sequence.flush()
        if event.type == "escalate":
            self.sequence.escalated(event.alert.id, seq)
        elif event.type == "end":
            self.sequence.ended(event.alert.id)
        return seq

    async def close(self, *, flush: bool = True) -> None:
        """Flush the outbox (at most `close_timeout_s`), publish retained `offline`, disconnect.

        With `flush=False` the waiting messages simply stay in the outbox for the next start.
        """
        if self._task is None:
            return
        timeout = self.settings.close_timeout_s
        if flush and not self._task.done() and not await wait_event(self._outbox_empty, timeout):
            log.warning("mqtt outbox not flushed at shutdown; messages are kept for the next start",
                        pending=len(self.outbox), outbox=str(self.outbox.path), broker=self.settings.broker)
        await asyncio.to_thread(self._spill)  # space may have come back
        if lost := self.overflow.peek(len(self.overflow)):
            log.error("mqtt messages the outbox could not store were not delivered; this stop loses them",
                      lost=len(lost), message_ids=[m.message_id for m in lost][:20], outbox=str(self.outbox.path))
        self._stop.set()
        _done, pending = await asyncio.wait({self._task}, timeout=timeout + _GOODBYE_TIMEOUT_S)
        for task in pending:
            log.warning("mqtt sink did not stop in time; cancelled", broker=self.settings.broker)
            task.cancel()
        # A failed task has logged itself (see _task_done); close must still release the outbox.
        await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(ValueError):
            self.controls.listeners.remove(self._echo_controls)
        with contextlib.suppress(ValueError):
            self.status.listeners.remove(self._set_zone_state)
        self._task = None
        await self.sequence.flush()
        await asyncio.to_thread(self.outbox.close)

    # -- enqueueing and state ----------------------------------------------------------
    async def _enqueue(self, topic: str, payload: bytes, message_id: str) -> None:
        try:
            await asyncio.to_thread(self._store, topic, payload, message_id, time.time())
        finally:  # stored or kept in memory: either way there is something to send
            self._outbox_empty.clear()
            self._outbox_wake.set()

    def _store(self, topic: str, payload: bytes, message_id: str, created_at: float) -> None:
        """Worker thread: into the outbox, after the messages kept in memory (they are older); what it cannot
        store is kept in memory, and OutboxError says so (the message is not durable)."""
        with self._order:
            self._store_in_order(topic, payload, message_id, created_at)

    def _store_in_order(self, topic: str, payload: bytes, message_id: str, created_at: float) -> None:
        self.overflow.spill_into(self.outbox)
        try:
            if len(self.overflow):
                raise OutboxError(f"outbox {self.outbox.path}: cannot store message {message_id}: "
                                  f"{self.outbox.last_error or 'it refuses the messages waiting before it'}")
            self.outbox.put(topic, payload, qos=1, retain=False, message_id=message_id, created_at=created_at)
        except OutboxError as exc:
            self.overflow.keep(topic, payload, qos=1, retain=False, message_id=message_id, created_at=created_at)
            raise OutboxError(f"{exc}; kept in memory and sent while the broker is connected, but lost if the "
                              "monitor stops first") from exc

    def _set_retained(self, topic: str, payload: bytes) -> None:
        self._retained[topic] = payload
        self._dirty.add(topic)
        self._state_wake.set()

    def _set_zone_state(self, state: ZoneState) -> None:
        if state.zone in self.zones:
            self._set_retained(self.topics.state(state.zone), _dumps(state.to_json()))
            self._set_escalation_state(state.zone)

    def _set_escalation_state(self, zone: str | None = None) -> None:
        """The retained open escalations of `zone` (every zone when None) and of the hub, when they changed."""
        for one in self.zones if zone is None else [zone] if zone in self.zones else []:
            self._set_retained_if_changed(reach.escalation_state_topic(self.topics.prefix, one),
                                          self._escalation_payload(self._escalations(one)))
        every = [alert for one in self.zones for alert in self._escalations(one)]
        self._set_retained_if_changed(reach.escalation_state_topic(self.topics.prefix), self._escalation_payload(every))

    def escalations_changed(self) -> None:
        """Publish the retained escalation states again (the escalations held over a restart are known now)."""
        self._set_escalation_state()

    def _escalations(self, zone: str) -> list[Alert]:
        """The zone's open alerts, and its escalations held over a restart (`held_escalations`): a caregiver
        called before the restart and not acknowledged is still needed, though the hazard is unconfirmed."""
        current = self.status.open_alerts(zone)
        known = {alert.id for alert in current}
        return [*current, *(a for a in self.held_escalations() if a.zone == zone and a.id not in known)]

    def _escalation_payload(self, alerts: Sequence[Alert]) -> bytes:
        return _dumps(reach.escalation_state(alerts, seq=self.sequence.escalation, names=self._names))

    def _set_retained_if_changed(self, topic: str, payload: bytes) -> None:
        if self._retained.get(topic) != payload:  # every zone state change asks: most change nothing here
            self._set_retained(topic, payload)

    def _set_last_warning(self, zone: str, at: float) -> None:
        """The zone's newest open warning, or cleared (`text` empty) once none is open."""
        newest = max(self.status.open_alerts(zone), key=lambda a: a.updated_at, default=None)
        self._set_retained(self.topics.last_warning(zone), _dumps(_last_warning(newest, at)))

    def _echo_controls(self, zone: str) -> None:
        monitoring = "ON" if self.controls.is_monitoring(zone) else "OFF"
        self._set_retained(self.topics.monitoring(zone, "state"), monitoring.encode())
        self._set_retained(self.topics.sensitivity(zone, "state"), f"{self.controls.get_sensitivity(zone):g}".encode())

    def _raise_if_failed(self) -> None:
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            raise MqttSinkError(f"mqtt sink for {self.settings.broker}: delivery task failed: {task.exception()}")

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("mqtt sink stopped by an unexpected error", broker=self.settings.broker,
                      exc_info=task.exception())

    # -- connection loop -------------------------------------------------------------
    async def _run(self) -> None:
        backoff = Backoff(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        restarts = Backoff(RESTART_MIN_S, RESTART_MAX_S)  # not reset by a connect: a crash loop slows down
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                await self._session(backoff)
            except aiomqtt.MqttError as exc:
                self._connected.clear()
                delay = backoff.next()
                self.counters["connect_failures"] += 1
                log_connect_failure(self.settings, exc, delay, role="alert sink")
                if len(self.overflow):  # the disk may have room again before the broker is back
                    await asyncio.to_thread(self._spill)
                await wait_event(self._stop, delay)
            except Exception as exc:  # a bug or an input nobody foresaw: reconnect and go on, visibly
                self._connected.clear()
                self.crashes.failed(exc)
                self.counters["task_restarts"] += 1
                if time.monotonic() - started > RESTART_MAX_S:
                    restarts.reset()  # it had been running well
                delay = restarts.next()
                log.error("mqtt sink session died of an unexpected error; reconnecting", broker=self.settings.broker,
                          restarts=self.crashes.count, retry_in_s=round(delay, 2), exc_info=exc)
                await wait_event(self._stop, delay)

    async def _session(self, backoff: Backoff) -> None:
        will = aiomqtt.Will(self.topics.available, b"offline", qos=1, retain=True)
        client = make_client(self.settings, identifier=self.settings.client_id, will=will)
        client.pending_calls_threshold = 2 * _BATCH + 16
        async with client:
            backoff.reset()
            self.counters["connects"] += 1
            await self._on_connect(client)
            log.info("mqtt connected", broker=self.settings.broker, prefix=self.settings.topic_prefix,
                     tls=self.settings.tls is not None, pending=len(self.outbox))
            self._connected.set()
            try:
                await self._serve(client)
            except aiomqtt.MqttError:
                raise  # the connection is gone: the broker sends the Last Will
            except Exception:
                # A clean disconnect sends no Last Will: say `offline` while the session restarts.
                await self._say_offline(client)
                raise
            finally:
                self._connected.clear()
            await self._say_offline(client)
        log.info("mqtt disconnected", broker=self.settings.broker)

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(self.topics.available, b"offline", qos=1, retain=True, timeout=_GOODBYE_TIMEOUT_S)

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        filters = [(self.topics.monitoring_set_filter, 1), (self.topics.sensitivity_set_filter, 1),
                   (reach.ack_filter(self.topics.prefix), 1)]
        if self.settings.discovery.enabled:
            filters.append((self.discovery.status_topic, 1))
        if self.feedback is not None:
            filters.append((self.topics.feedback, 1))
        await client.subscribe(filters)
        await self._announce(client)
        # Every retained state first, zone states leading: a retained `hazard` of a previous run must be
        # replaced before `online` makes subscribers (Home Assistant) trust the topics again.
        await self._publish_retained(client, sorted(self._retained, key=self._retained_order))
        await client.publish(self.topics.available, b"online", qos=1, retain=True)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Run the session's tasks until the sink is stopped or one of them fails (disconnect)."""
        tasks = [
            asyncio.create_task(self._read(client), name="mqtt-read"),
            asyncio.create_task(self._deliver(client), name="mqtt-deliver"),
            asyncio.create_task(self._publish_state(client), name="mqtt-state"),
            asyncio.create_task(self._publish_stats(client), name="mqtt-stats"),
            asyncio.create_task(self._stop.wait(), name="mqtt-stop"),
        ]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_all(tasks)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    # -- session tasks ---------------------------------------------------------------
    async def _deliver(self, client: aiomqtt.Client) -> None:
        """Send outbox messages in order; remove the acknowledged prefix of each batch."""
        while True:
            self._outbox_wake.clear()
            batch, kept = await asyncio.to_thread(self._next_batch)
            if not batch:
                if not self._outbox_wake.is_set():  # else a put landed during the peek: not empty
                    self._outbox_empty.set()
                await self._outbox_wake.wait()
                continue
            results = await asyncio.gather(*(self._send(client, m) for m in batch), return_exceptions=True)
            acked = next((i for i, r in enumerate(results) if r is not None), len(results))
            if acked and kept:
                self.overflow.remove(batch[:acked])
                self.counters["delivered"] += acked
            elif acked:
                await asyncio.to_thread(self.outbox.remove_through, batch[acked - 1].seq)
                self.counters["delivered"] += acked
            if acked < len(batch):
                error = results[acked]
                raise error if isinstance(error, BaseException) else aiomqtt.MqttError(str(error))

    def _next_batch(self) -> tuple[list[OutboxMessage], bool]:
        """Worker thread: the outbox's oldest messages, else those kept in memory (newer), and whether they are
        the kept ones. Kept messages go into the outbox first if it stores again: durable sooner."""
        with self._order:
            if len(self.overflow) and self.outbox.available:
                self.overflow.spill_into(self.outbox)
            batch = self.outbox.peek(_BATCH)
            if batch:
                return batch, False
            return self.overflow.peek(_BATCH), True

    def _spill(self) -> None:
        """Worker thread: kept messages into the outbox if it stores again (while the broker is away too)."""
        with self._order:
            self.overflow.spill_into(self.outbox)

    async def _send(self, client: aiomqtt.Client, message: OutboxMessage) -> None:
        # For QoS 1, aiomqtt's publish returns only once the broker's PUBACK arrived.
        await client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        """Publish retained state topics that changed, and re-announce discovery when asked."""
        while True:
            self._state_wake.clear()
            if self._announce_due:
                self._announce_due = False
                await self._announce(client)
            while self._dirty:
                await self._publish_retained(client, [self._dirty.pop()])
            await self._state_wake.wait()

    async def _publish_retained(self, client: aiomqtt.Client, topics: Sequence[str]) -> None:
        for topic in topics:
            self._dirty.discard(topic)
            try:
                await client.publish(topic, self._retained[topic], qos=1, retain=True)
            except BaseException:
                self._dirty.add(topic)  # not known to have arrived: the next session sends it
                raise

    def _retained_order(self, topic: str) -> tuple[int, str]:
        return (0 if topic.endswith("/state") and topic.count("/") == self.topics.prefix.count("/") + 2 else 1,
                topic)

    async def _publish_stats(self, client: aiomqtt.Client) -> None:
        while True:
            self._stats_wake.clear()
            await client.publish(self.topics.stats, _dumps(self.stats_payload()), qos=0, retain=True)
            await wait_event(self._stats_wake, self.settings.stats_interval_s)

    def stats_payload(self) -> dict[str, Any]:
        """What the `stats` topic carries: the service's counters plus the sink's own.

        The keys Home Assistant's diagnostic sensors read are always there (from the zone tracker when
        the service passes no counters), so their templates never meet a missing key.
        """
        service = dict(self._stats()) if self._stats is not None else {}
        now = time.time()
        last = self.status.last_success_at()
        return {
            **_stamp("at", now),
            "windows_assessed": 0, "model_errors": {}, "model_errors_total": 0, "sources": {},
            "sources_offline": [], "zones": self.status.to_json(),
            "last_assessment_at": iso_time(last) if last is not None else None,
            **service,
            # The service lists every sink's problems; a sink on its own names its own.
            "problems": service.get("problems", []) if self._stats is not None else self._own_problems(),
            "mqtt": {
                "connected": self.connected,
                "outbox_pending": len(self.outbox),
                "outbox_dropped": self.outbox.dropped,
                "outbox_available": self.outbox.available,
                "memory_pending": len(self.overflow),
                "memory_dropped": self.overflow.dropped,
                **dict(self.counters),
            },
        }

    def _own_problems(self) -> list[str]:
        return [f"sink {self.name}: {problem}"] if (problem := self.problem) is not None else []

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
            if message.retain and self.is_command(topic):
                await self._clear_retained_command(client, topic, payload)
                continue
            try:
                self.handle_command(topic, payload)
            except Exception:  # one message that cannot be handled is one bad message, never a dead session
                self.counters["command_errors"] += 1
                log.exception("mqtt control message could not be handled; ignored", topic=shorten(topic, 200),
                              payload=payload[:64].decode("utf-8", "replace"), payload_bytes=len(payload))

    def is_command(self, topic: str) -> bool:
        """True for the topics that carry commands: controls, acknowledgements, feedback."""
        return (topic == self.topics.feedback or reach.ack_zone(self.topics.prefix, topic) is not None
                or self.topics.control_zone(topic, "monitoring") is not None
                or self.topics.control_zone(topic, "sensitivity") is not None)

    async def _clear_retained_command(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        """A command is an act, not a state: a retained one (replayed by the broker at every connect) is
        ignored and deleted. The controls' state lives in the monitor's own retained `.../state` topics."""
        self.counters["retained_commands_ignored"] += 1
        log.warning("retained mqtt command ignored and cleared; commands must not be retained",
                    topic=shorten(topic, 200), payload=payload[:64].decode("utf-8", "replace"),
                    payload_bytes=len(payload))
        await client.publish(topic, b"", qos=1, retain=True)

    # -- control topics and discovery ---------------------------------------------------
    def handle_command(self, topic: str, payload: bytes) -> None:
        """Apply one message from a subscribed topic; invalid ones are logged and ignored."""
        if topic == self.discovery.status_topic:
            if payload.strip().lower() == b"online":
                log.info("home assistant came online; re-sending discovery", topic=topic)
                self._announce_due = True
                self._dirty.update(self._retained)
                self._state_wake.set()
                self._stats_wake.set()
            return
        if not payload and self.is_command(topic):
            # An empty message is how MQTT deletes a retained one (the monitor does so itself): never a command.
            self.counters["empty_commands_ignored"] += 1
            log.info("empty mqtt message on a command topic ignored (a retained message being cleared)",
                     topic=shorten(topic, 200))
            return
        if topic == self.topics.feedback and self.feedback is not None:
            self._take_feedback(topic, payload)
        elif (zone := self.topics.control_zone(topic, "monitoring")) is not None:
            self._set_monitoring(zone, topic, payload)
        elif (zone := self.topics.control_zone(topic, "sensitivity")) is not None:
            self._set_sensitivity(zone, topic, payload)
        elif (request := reach.parse_ack(self.topics.prefix, topic, payload, self.zones)) is not None:
            self._ack(topic, payload, request)

    def _ack(self, topic: str, payload: bytes, request: AckRequest | str) -> None:
        if isinstance(request, str):
            self._reject(topic, payload, request)
        elif self._acknowledge is None:
            self._reject(topic, payload, "acknowledgement is not wired to this sink")
        else:
            log.info("acknowledgement received", topic=topic, zone=request.zone, alert=request.alert_id,
                     by=request.by)
            self._acknowledge(request)

    def _set_monitoring(self, zone: str, topic: str, payload: bytes) -> None:
        value = payload.decode("utf-8", "replace").strip().upper()
        if zone not in self.zones or value not in ("ON", "OFF"):
            self._reject(topic, payload, "unknown zone" if zone not in self.zones else "expected ON or OFF")
            return
        self.controls.set_monitoring(zone, value == "ON")
        log.info("zone monitoring switched", zone=zone, monitoring=value)

    def _set_sensitivity(self, zone: str, topic: str, payload: bytes) -> None:
        if zone not in self.zones:
            self._reject(topic, payload, "unknown zone")
            return
        try:
            value = float(payload.decode("utf-8", "replace").strip())
            if not math.isfinite(value):
                raise ValueError("not a finite number")
            self.controls.set_sensitivity(zone, value)
        except ValueError as exc:
            self._reject(topic, payload, str(exc))
            return
        log.info("zone sensitivity set", zone=zone, sensitivity=value)

    def _take_feedback(self, topic: str, payload: bytes) -> None:
        assert self.feedback is not None
        result = self.feedback.handle_feedback_message(payload)
        if not result.ok:
            self._reject(topic, payload, result.reason)

    def _reject(self, topic: str, payload: bytes, reason: str) -> None:
        self.counters["invalid_commands"] += 1
        text = payload[:64].decode("utf-8", "replace")
        # The zone part of a topic is anyone's text, up to 64 KiB: the log gets a bounded piece of it.
        log.warning("invalid mqtt control message ignored", topic=shorten(topic, 200), payload=text,
                    payload_bytes=len(payload), reason=shorten(reason, 200))

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Publish discovery configs, and clear retained topics of zones no longer configured."""
        feedback = self.feedback is not None
        configs = self.discovery.messages(self.labels, feedback=feedback) if self.settings.discovery.enabled else {}
        for topic, config in configs.items():
            await client.publish(topic, _dumps(config), qos=1, retain=True)
        owned = (set(configs) | {t for zone in self.zones for t in self._zone_topics(zone)}
                 | {self.topics.stats, reach.escalation_state_topic(self.topics.prefix)})
        previous = await asyncio.to_thread(self._load_published)
        for topic in sorted(previous - owned):
            if not self._own_shape(topic):
                self.counters["foreign_topics_not_cleared"] += 1
                # From a file: it may hold what no terminal can print (a lone surrogate); shown escaped.
                printable = topic.encode("utf-8", "backslashreplace").decode("utf-8")
                log.warning("record of published mqtt topics names a topic the monitor never publishes; "
                            "left alone", topic=shorten(printable, 200), path=str(self.state_dir / _PUBLISHED_RECORD))
                continue
            await client.publish(topic, b"", qos=1, retain=True)
            log.info("cleared retained topic of a removed zone or entity", topic=topic)
        if previous != owned:
            await asyncio.to_thread(self._save_published, owned)

    def _zone_topics(self, zone: str) -> list[str]:
        t = self.topics
        return [t.state(zone), t.last_warning(zone), t.monitoring(zone, "state"), t.sensitivity(zone, "state"),
                reach.escalation_state_topic(t.prefix, zone),
                *([t.evidence(zone)] if zone in self._evidence_zones else [])]

    def _load_published(self) -> set[str]:
        path = self.state_dir / _PUBLISHED_RECORD
        try:
            data = loads_bounded(read_nofollow(path), what="published topics record", max_bytes=_MAX_RECORD_BYTES,
                                 max_depth=_MAX_RECORD_DEPTH)
        except FileNotFoundError:
            return set()
        except UnsafePathError as exc:  # a planted link: not ours, never read or written through
            move_aside(path, exc.problem, what="record of published mqtt topics")
            return set()
        except (OSError, ValueError) as exc:  # ValueError: JsonInputError, named and counted by the reader
            log.warning("record of published mqtt topics unreadable; starting afresh", path=str(path), error=str(exc))
            return set()
        topics = data.get("topics") if isinstance(data, dict) else None
        return {t for t in topics if isinstance(t, str) and t} if isinstance(topics, list) else set()

    def _own_shape(self, topic: str) -> bool:
        """A topic the monitor itself publishes retained: a zone's state topics or the stats under the topic
        prefix, or a discovery config of this monitor's node. The record is a file anyone with access to the
        state dir can edit: nothing else named in it is ever deleted."""
        if topic == self.topics.stats:
            return True
        prefix = f"{self.topics.prefix}/"
        if topic.startswith(prefix):
            zone, _, tail = topic[len(prefix):].partition("/")
            return _NAME.match(zone) is not None and tail in _ZONE_TOPIC_TAILS
        parts = topic.split("/")
        discovery = self.discovery.prefix.split("/")
        if len(parts) != len(discovery) + 4 or parts[:len(discovery)] != discovery:
            return False
        component, node, entity, last = parts[len(discovery):]
        return (_COMPONENT.match(component) is not None and node == self.discovery.node_id
                and _NAME.match(entity) is not None and last == "config")

    def _save_published(self, topics: set[str]) -> None:
        path = self.state_dir / _PUBLISHED_RECORD
        try:
            private_dir(path.parent)
            replace_file(path, json.dumps({"topics": sorted(topics)}, indent=1).encode("utf-8"))
        except OSError as exc:  # a full disk: topics of removed zones are cleared at a later start instead
            log.warning("record of published mqtt topics not saved", path=str(path), error=exc.strerror or str(exc))


# --------------------------------------------------------------------------- payloads


def _alert_payload(event: AlertEvent, seq: int) -> dict[str, Any]:
    """`AlertEvent.to_json()` with its times as ISO 8601 (`at`, `created_at`, `updated_at`, and the escalation's
    `escalated_at`, `acknowledged_at`, `unconfirmed_since` once set) plus `<key>_epoch`, and the event's `event_id`
    and `seq`."""
    body = {**event.to_json(), "event_id": event.message_id, "seq": seq}
    for key in ("at", "created_at", "updated_at", "escalated_at", "acknowledged_at", "unconfirmed_since"):
        if isinstance(body.get(key), int | float):
            body.update(_stamp(key, body[key]))
    return body


def _event_payload(event: AlertEvent, seq: int) -> dict[str, Any]:
    alert = event.alert
    return {"event_type": alert.severity, "alert_id": alert.id, "message_id": event.message_id,
            "event_id": event.message_id, "seq": seq,
            "zone": alert.zone, "zone_name": alert.zone_label, "hazard": alert.hazard, "reason": alert.reason,
            "advice": alert.advice, "confidence": alert.confidence, **_stamp("at", event.at)}


def _last_warning(alert: Alert | None, at: float) -> dict[str, Any]:
    if alert is None:
        return {"text": "", "active": False, "hazard": "", "severity": None, "advice": "", "reason": "",
                "alert_id": None, **_stamp("at", at)}
    text = f"{alert.hazard}: {alert.advice}" if alert.advice else alert.hazard
    return {"text": text, "active": True, "hazard": alert.hazard, "severity": alert.severity,
            "advice": alert.advice, "reason": alert.reason, "alert_id": alert.id, **_stamp("at", alert.updated_at)}
