"""Which feedback notes a window gets (`assessment.feedback_context`): one rule, live and in a replay.

A window of zone Z at time T gets the newest feedback about Z whose event ended
before T and within `days`: alerts the home marked (by the labels chosen, false
alarms by default) and missed hazards it reported. Only the latest label of an
alert counts, and never one about `exclude` (in a replay, the alert the recorded
window itself belonged to: a note about it would give the answer away). At most
`max_notes` notes, newest first, and at most `max_chars` of JSON together; each
field is cut short. Notes are plain strings: the prompt quotes them as data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Iterable

from monitor.assess.context import Note
from monitor.assess.settings import FeedbackContextSettings
from monitor.core.text import shorten
from monitor.history.feedback import FeedbackEntry, FeedbackError, FeedbackStore
from monitor.history.times import utc_label

SOURCE = "home feedback"
_WHAT = {"false_alarm": "an earlier warning here was a false alarm", "missed": "a hazard here was missed",
         "helpful": "an earlier warning here was helpful", "unclear": "an earlier warning here was unclear"}
_HAZARD_CHARS = 80
_NOTE_CHARS = 200


def select_notes(entries: Iterable[FeedbackEntry], *, zone: str, at: float, settings: FeedbackContextSettings,
                 exclude: Collection[str] = ()) -> tuple[Note, ...]:
    """The notes for a window of `zone` at time `at` (see the module for the rule)."""
    since = at - settings.days * 86400.0
    latest: dict[str, FeedbackEntry] = {}
    for entry in sorted(entries, key=lambda e: (e.given_at, e.id)):  # a later label on an alert replaces one before
        key = entry.alert_id if entry.alert_id is not None else f"missed:{entry.id}"
        latest[key] = entry
    chosen = [e for e in latest.values()
              if e.zone == zone and e.label in settings.labels and since <= e.end < at and e.alert_id not in exclude]
    chosen.sort(key=lambda e: e.end, reverse=True)
    notes: list[Note] = []
    spent = 0
    for entry in chosen[: settings.max_notes]:
        note = render(entry)
        cost = len(json.dumps(note, ensure_ascii=False))  # as the prompt will carry it
        if spent + cost > settings.max_chars:
            break
        notes.append(note)
        spent += cost
    return tuple(notes)


def render(entry: FeedbackEntry) -> Note:
    """One note: what the home said, when, about which hazard, and its own words (cut short)."""
    note: Note = {"source": SOURCE, "feedback": _WHAT[entry.label], "when": utc_label(entry.start)}
    if entry.hazard:
        note["warning"] = shorten(entry.hazard, _HAZARD_CHARS)
    if entry.note:
        note["note"] = shorten(entry.note, _NOTE_CHARS)
    return note


class StoreNotes:
    """Notes from the live feedback store (read off the event loop).

    A lookup the caller gave up on (a store locked for long) still holds a thread until SQLite
    answers; beyond MAX_PENDING of them a lookup fails at once instead of taking one more thread.
    """

    MAX_PENDING = 4

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store
        self.pending = 0

    async def notes(self, zone: str, at: float, settings: FeedbackContextSettings) -> tuple[Note, ...]:
        if self.pending >= self.MAX_PENDING:
            raise FeedbackError(f"feedback store {self.store.path}: {self.pending} earlier lookups have not "
                                "finished")
        since = at - settings.days * 86400.0
        self.pending += 1
        lookup = asyncio.ensure_future(asyncio.to_thread(self.store.entries, zone=zone, since=since))
        lookup.add_done_callback(self._finished)
        entries = await asyncio.shield(lookup)  # a caller's timeout leaves the thread to finish and count down
        return select_notes(entries, zone=zone, at=at, settings=settings)

    def _finished(self, lookup: asyncio.Future[list[FeedbackEntry]]) -> None:
        self.pending -= 1
        if not lookup.cancelled():
            lookup.exception()  # retrieved: the caller who gave up has reported the failure already
