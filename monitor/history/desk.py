"""The daemon's side of feedback: messages from MQTT and Home Assistant, the alert index, the counts.

`handle_feedback_message` runs on the event loop for each message on
`<prefix>/feedback` (the MQTT sink calls it): it validates at once, against the
alerts this monitor knows (kept in memory), and hands the write to the recorder's
writer thread. An invalid message returns the reason; the sink logs and counts it
like any invalid control message. `feedback_entities` are the Home Assistant
buttons each zone's device gets: they publish a message about the zone's latest
alert on the same topic (monitor/history/discovery.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from monitor.alerts import AlertEvent
from monitor.history.context import StoreNotes
from monitor.history.feedback import (
    LATEST,
    Feedback,
    FeedbackError,
    FeedbackStore,
    parse_feedback_message,
)
from monitor.history.labels import LABELS

log = structlog.get_logger("monitor.history.feedback")

Submit = Callable[[Callable[[], None]], None]
# Stored counts are read again at most this often (`monitor feedback` writes to the store directly).
_REFRESH_S = 5.0


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What became of one feedback message: taken (with the feedback), or not and why."""

    ok: bool
    reason: str = ""
    feedback: Feedback | None = None


class FeedbackHandler(Protocol):
    """What the MQTT sink calls with the payload of each `<prefix>/feedback` message."""

    def handle_feedback_message(self, payload: bytes) -> FeedbackResult: ...


class FeedbackDesk:
    """Takes feedback in the daemon, keeps the index of published alerts and the stored counts.

    `submit` runs a blocking job on the recorder's writer thread (in order with the
    history records and the alert index).
    """

    def __init__(self, store: FeedbackStore, *, submit: Submit, zones: Sequence[str] = (),
                 clock: Callable[[], float] = time.time, failures: Counter[str] | None = None) -> None:
        self.store = store
        # Writes to the store that failed, under "feedback" (the recorder's `failures`).
        self.failures: Counter[str] = failures if failures is not None else Counter()
        self.submit = submit
        self.zones = set(zones)
        self.clock = clock
        self.notes = StoreNotes(store)
        self.known: set[str] = set()
        self.latest: dict[str, str] = {}
        self._counts: dict[str, int] = dict.fromkeys(LABELS, 0)
        self._counted_at = float("-inf")

    def load(self) -> None:
        """Read the alerts known and the counts (blocking; at start)."""
        self.known = self.store.alert_ids()
        self.latest = {zone: row.id for zone, row in self.store.latest_alerts().items()}
        self._refresh()

    # -- MQTT and Home Assistant ------------------------------------------------------------
    def handle_feedback_message(self, payload: bytes) -> FeedbackResult:
        """Validate one message and queue it for the store; the reason when it is not taken."""
        try:
            feedback = self._resolve(parse_feedback_message(payload, now=self.clock()))
        except FeedbackError as exc:
            return FeedbackResult(False, str(exc))
        self.submit(lambda: self._store(feedback))
        return FeedbackResult(True, feedback=feedback)

    def _resolve(self, feedback: Feedback) -> Feedback:
        if feedback.label == "missed":
            if feedback.zone not in self.zones:
                raise FeedbackError(f"unknown zone '{feedback.zone}'")
            return feedback
        alert_id = feedback.alert_id
        if alert_id == LATEST:
            zone = feedback.zone or ""
            if zone not in self.zones:
                raise FeedbackError(f"unknown zone '{zone}'")
            if zone not in self.latest:
                raise FeedbackError(f"zone '{zone}' has no alert yet")
            alert_id = self.latest[zone]
        if alert_id not in self.known:
            raise FeedbackError(f"unknown alert '{alert_id}'")
        return Feedback(feedback.label, alert_id=alert_id, note=feedback.note, via=feedback.via,
                        given_at=feedback.given_at)

    def _store(self, feedback: Feedback) -> None:
        try:
            entry = self.store.add(feedback)
        except FeedbackError as exc:
            self.failures["feedback"] += 1
            log.error("feedback not stored", label=feedback.label, alert=feedback.alert_id, error=str(exc))
            return
        self._counts = {**self._counts, entry.label: self._counts.get(entry.label, 0) + 1}
        log.info("feedback stored", label=entry.label, alert=entry.alert_id, zone=entry.zone, via=entry.via,
                 windows=len(entry.windows), note_chars=len(entry.note))

    # -- the alert index ------------------------------------------------------------------------
    def alert_published(self, event: AlertEvent) -> None:
        """Index an alert event (on the loop: memory; on the writer thread: the store)."""
        alert = event.alert
        if event.type == "new":
            self.known.add(alert.id)
            self.latest[alert.zone] = alert.id
        self.submit(lambda: self._index(event))

    def _index(self, event: AlertEvent) -> None:
        try:
            self.store.index_alert(event)
        except FeedbackError as exc:
            self.failures["feedback"] += 1
            log.error("alert not indexed for feedback", alert=event.alert.id, error=str(exc))

    # -- counts -------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Stored feedback by label; read again from the store in the background now and then."""
        if self.clock() - self._counted_at >= _REFRESH_S:
            self._counted_at = self.clock()
            self.submit(self._refresh)
        return dict(self._counts)

    def _refresh(self) -> None:
        try:
            self._counts = self.store.counts()
        except FeedbackError as exc:
            log.warning("feedback counts not read", error=str(exc))
        self._counted_at = self.clock()
