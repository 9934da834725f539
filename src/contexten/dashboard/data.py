"""Everything the dashboard's pages read, in one place.

Pages never touch the store, the engine or the dead-letter queue themselves: they call
:class:`DashboardData`, so that moving a page onto the read models (the projections) is a
change to this module alone. Until those land, the reads here go to what exists: the
store's global log (read in bounded pages, as the events API does), the workflow admin
functions and the dead-letter queue.

Every read is bounded: a listing that filters scans at most :data:`SCAN_BUDGET` log entries
per request and says where to continue, like the events API.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from contexten.bus.dead_letters import (
    DEAD_LETTER_STREAM_PREFIX,
    PARKED,
    DeadLetter,
    DeadLetterQueue,
    DeadLetterStatus,
)
from contexten.events.envelope import Event
from contexten.events.patterns import compile_pattern
from contexten.exceptions import DeadLetterNotFound, WorkflowNotFound
from contexten.security import AUDIT_STREAM_PREFIX
from contexten.store.base import EventStore, RecordedEvent
from contexten.workflows import admin
from contexten.workflows.history import STREAM_PREFIX as WORKFLOW_STREAM_PREFIX
from contexten.workflows.history import WorkflowStatus
from contexten.workflows.schedules import SCHEDULE_PREFIX, ScheduleState, fold_schedule
from contexten.workflows.state_machine import StateMachine

__all__ = [
    "SCAN_BUDGET",
    "DashboardData",
    "DashboardHost",
    "EventFilter",
    "EventPage",
    "Page",
    "WorkItem",
]

SCAN_BUDGET: Final = 5_000
"""Log entries one filtered listing reads at most (then it offers to continue)."""
WORK_ITEM_SCAN: Final = 20_000
"""Newest log entries a work item's timeline is looked for in."""
_LIST_LIMIT: Final = 10_000
AUDIT_SCAN: Final = 5_000
"""Newest audit events of each day looked at for a workflow's or a letter's actions."""


class DashboardHost(Protocol):
    """What the dashboard needs of the application it shows (``App`` fits)."""

    @property
    def store(self) -> EventStore:
        """The event store (the source of truth)."""

    async def health(self) -> Any:
        """The health report: something with ``ok`` and ``to_dict()``."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """The filters of the events page (all optional; combined with AND)."""

    type: str | None = None
    source: str | None = None
    correlation_id: str | None = None
    subject: str | None = None
    since: datetime | None = None
    hidden: tuple[str, ...] = ()
    """Prefixes of streams never shown (what the visitor's role may not read)."""

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return any(
            v is not None
            for v in (self.type, self.source, self.correlation_id, self.subject, self.since)
        )

    def predicate(self) -> Callable[[RecordedEvent], bool]:
        """A test for one stored event.

        Raises:
            InvalidPattern: ``type`` is not a valid pattern.
        """
        pattern = compile_pattern(self.type) if self.type else None

        def matches(rec: RecordedEvent) -> bool:
            e = rec.event
            return (
                (pattern is None or pattern.matches(e.type))
                and (self.source is None or e.source == self.source)
                and (self.correlation_id is None or e.correlation_id == self.correlation_id)
                and (self.subject is None or e.subject == self.subject)
                and (self.since is None or rec.recorded_at >= self.since)
                and not (self.hidden and rec.stream.startswith(self.hidden))
            )

        return matches


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of the log, newest first.

    Attributes:
        events: the matching events.
        before: the position to continue from (older), or None at the log's start.
        head: the log's head when the page was read (where a live stream starts).
    """

    events: list[RecordedEvent]
    before: int | None
    head: int


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing that is paginated by number."""

    items: list[Any]
    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        """How many pages there are (at least 1)."""
        return max(1, -(-self.total // self.size))

    @property
    def has_next(self) -> bool:
        """Whether a later page exists."""
        return self.number < self.pages


@dataclass(slots=True)
class WorkItem:
    """Everything that touched one correlation id, oldest first.

    Attributes:
        key: the correlation id (``ENG-123``).
        entries: the events, in log order (including workflow history).
        workflows: the workflow instances that belong to it.
        scanned: how many log entries were looked at (the timeline looks at the newest
            :data:`WORK_ITEM_SCAN`).
        complete: whether the whole log was looked at.
    """

    key: str
    entries: list[RecordedEvent] = field(default_factory=list)
    workflows: list[admin.WorkflowInfo] = field(default_factory=list)
    scanned: int = 0
    complete: bool = True


class DashboardData:
    """The reads (and the few writes) behind the dashboard's pages.

    Args:
        host: the application (its store and its health).
        machines: the state machines by name (for their diagrams).
        names: the registered workflows' names (for the list's filter).
    """

    def __init__(
        self,
        host: DashboardHost,
        machines: Mapping[str, StateMachine] | None = None,
        names: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.machines: Mapping[str, StateMachine] = machines or {}
        self.names = sorted(set(names) | set(self.machines))

    @property
    def store(self) -> EventStore:
        """The store everything is read from."""
        return self.host.store

    @property
    def dead_letters(self) -> DeadLetterQueue:
        """The dead-letter queue over the store."""
        return DeadLetterQueue(self.store)

    # -- overview ----------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """The application's health report, JSON-ready (``ok`` plus every part)."""
        report = await self.host.health()
        details: dict[str, Any] = report.to_dict()
        details["ok"] = bool(report.ok)
        return details

    async def workflow_counts(self) -> dict[str, int]:
        """How many workflow instances are in each status (every status listed)."""
        counts = Counter(str(w.status) for w in await self._all_workflows())
        return {str(s): counts.get(str(s), 0) for s in WorkflowStatus}

    async def dead_letter_counts(self) -> dict[str, int]:
        """How many dead letters are in each status."""
        letters = await self.dead_letters.list(status=None, limit=_LIST_LIMIT)
        counts = Counter(str(letter.status) for letter in letters)
        return {str(s): counts.get(str(s), 0) for s in DeadLetterStatus}

    async def per_minute(self, minutes: int = 60) -> tuple[list[int], list[int]]:
        """Events recorded, and handler failures parked as dead letters, in each of the last
        ``minutes`` minutes before the newest event, oldest first (from the newest
        :data:`SCAN_BUDGET` events at most)."""
        events, errors = [0] * minutes, [0] * minutes
        recent = await self.store.read_all_backwards(limit=SCAN_BUDGET)
        if not recent:
            return events, errors
        newest = recent[0].recorded_at
        for rec in recent:
            age = int((newest - rec.recorded_at).total_seconds() // 60)
            if age >= minutes:
                break
            events[minutes - 1 - age] += 1
            if rec.event.type == PARKED:
                errors[minutes - 1 - age] += 1
        return events, errors

    # -- events ------------------------------------------------------------------------

    async def head(self) -> int:
        """The log's head position."""
        return await self.store.head()

    async def events(
        self, filters: EventFilter, *, before: int | None = None, limit: int = 50
    ) -> EventPage:
        """The newest events matching ``filters`` below ``before`` (bounded scan).

        Raises:
            InvalidPattern: the type filter is not a valid pattern.
        """
        matches = filters.predicate()
        head = await self.store.head()
        found: list[RecordedEvent] = []
        cursor = before
        scanned = 0
        want = limit if not filters.active else max(limit, 200)
        while scanned < SCAN_BUDGET:
            page = await self.store.read_all_backwards(before=cursor, limit=want)
            for rec in page:
                scanned += 1
                cursor = rec.position
                if matches(rec):
                    found.append(rec)
                    if len(found) == limit:
                        return EventPage(found, cursor if cursor > 1 else None, head)
            if len(page) < want or (cursor is not None and cursor <= 1):
                return EventPage(found, None, head)
        return EventPage(found, cursor, head)

    async def events_after(
        self, after: int, filters: EventFilter, *, limit: int = 100
    ) -> tuple[list[RecordedEvent], int]:
        """Events above ``after`` matching ``filters``, oldest first, and the last position
        looked at (what the live stream sends, and where it continues)."""
        matches = filters.predicate()
        page = await self.store.read_all(after=after, limit=limit)
        last = page[-1].position if page else after
        return [r for r in page if matches(r)], last

    async def event(self, event_id: str) -> RecordedEvent | None:
        """One stored event by id, or None."""
        return await self.store.get_event(event_id)

    async def caused_by(
        self, rec: RecordedEvent, *, hidden: tuple[str, ...] = (), limit: int = 50
    ) -> list[RecordedEvent]:
        """The events whose ``causation_id`` is ``rec``'s id (looked for in the
        :data:`SCAN_BUDGET` entries after it), but for streams starting with ``hidden``."""
        found: list[RecordedEvent] = []
        after, scanned = rec.position, 0
        while scanned < SCAN_BUDGET and len(found) < limit:
            page = await self.store.read_all(after=after, limit=500)
            if not page:
                break
            scanned += len(page)
            after = page[-1].position
            found.extend(
                r
                for r in page
                if r.event.causation_id == rec.event.id
                and not (hidden and r.stream.startswith(hidden))
            )
        return found[:limit]

    # -- workflows ---------------------------------------------------------------------

    async def _all_workflows(self) -> list[admin.WorkflowInfo]:
        listing = getattr(self.host, "list_workflows", None)  # App: its read model, once any
        if listing is not None:
            infos: list[admin.WorkflowInfo] = await listing()
            return infos
        return await admin.list_workflows(self.store, limit=_LIST_LIMIT)

    async def workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        search: str | None = None,
        page: int = 1,
        size: int = 25,
    ) -> Page:
        """Workflow instances, most recently updated first, filtered and paginated.

        Args:
            status: only this status.
            name: only this workflow.
            search: only ids containing this text (case-insensitive): an id or a key.
            page: the page number, from 1.
            size: instances per page.

        Raises:
            ValueError: ``status`` is not a status word.
        """
        wanted = WorkflowStatus(status) if status else None
        rows = [
            w
            for w in await self._all_workflows()
            if (wanted is None or w.status is wanted)
            and (not name or w.name == name)
            and (not search or search.lower() in w.workflow_id.lower())
        ]
        rows.sort(key=lambda w: w.updated_at or w.created_at or datetime.min, reverse=True)
        start = (page - 1) * size
        return Page(rows[start : start + size], page, size, len(rows))

    def workflow_names(self) -> list[str]:
        """The names of the registered workflows and state machines."""
        return self.names

    async def workflow(self, workflow_id: str) -> admin.WorkflowInfo | None:
        """One instance with its history, or None."""
        try:
            return await admin.get_workflow_info(self.store, workflow_id)
        except WorkflowNotFound:
            return None

    async def workflow_input(self, workflow_id: str) -> Any:
        """The input an instance was started with (an event's envelope when an event
        started it), or None."""
        state = await admin.load_state(self.store, workflow_id)
        return None if state is None else state.input

    def machine(self, name: str) -> StateMachine | None:
        """The state machine called ``name``, if one is registered."""
        return self.machines.get(name)

    async def cancel_workflow(self, workflow_id: str, reason: str) -> bool:
        """Cancel an instance (False: it had already ended).

        Through the host's engine when it has one (``App.cancel_workflow``: a state machine
        is only ended by its engine), else by a request in the instance's stream.
        """
        cancel = getattr(self.host, "cancel_workflow", None)
        if cancel is not None:
            try:
                return bool(await cancel(workflow_id))
            except WorkflowNotFound:
                return False
        return await admin.request_cancel(self.store, workflow_id, reason)

    async def redrive_workflow(self, workflow_id: str) -> bool:
        """Ask for a failed instance to run again (False: it is not failed)."""
        return await admin.request_redrive(self.store, workflow_id)

    # -- schedules ---------------------------------------------------------------------

    async def schedules(self) -> list[tuple[str, ScheduleState]]:
        """Every schedule that has a stream in the store (it ticked or was asked to), with
        its folded state, by name."""
        found = await self.store.list_streams(SCHEDULE_PREFIX, limit=_LIST_LIMIT)
        return [
            (
                info.stream.removeprefix(SCHEDULE_PREFIX),
                fold_schedule(await self.store.read_stream(info.stream)),
            )
            for info in found
        ]

    # -- work items --------------------------------------------------------------------

    async def work_item(self, key: str, *, audit: bool = False) -> WorkItem:
        """The cross-platform timeline of correlation id ``key``.

        Looks at the newest :data:`WORK_ITEM_SCAN` log entries for events carrying the id
        (webhooks from every platform, our own actions, workflow outcomes, dead letters),
        then adds the whole history of every workflow instance among them, and (with
        ``audit``, for those who may read the audit trail) the audit events of what people did
        to those workflows and dead letters.
        """
        item = WorkItem(key)
        seen: dict[int, RecordedEvent] = {}
        workflow_ids: set[str] = set()
        before: int | None = None
        while item.scanned < WORK_ITEM_SCAN:
            page = await self.store.read_all_backwards(before=before, limit=1000)
            if not page:
                break
            item.scanned += len(page)
            before = page[-1].position
            for rec in page:
                if rec.event.correlation_id != key:
                    continue
                seen[rec.position] = rec
                wid = _workflow_id_of(rec.event)
                if wid is not None:
                    workflow_ids.add(wid)
            if before <= 1:
                break
        else:
            item.complete = False
        letters = {r.stream[len(DEAD_LETTER_STREAM_PREFIX) :] for r in seen.values()
                   if r.stream.startswith(DEAD_LETTER_STREAM_PREFIX)}  # fmt: skip
        if audit:
            for rec in await self._audit_records(workflow_ids | letters):
                seen[rec.position] = rec  # what people did about it, from the dashboard or CLI
        for wid in sorted(workflow_ids):
            records = await self.store.read_stream(WORKFLOW_STREAM_PREFIX + wid)
            for rec in records:
                seen[rec.position] = rec
            with contextlib.suppress(WorkflowNotFound):
                item.workflows.append(await admin.get_workflow_info(self.store, wid))
        item.entries = [seen[p] for p in sorted(seen)]
        return item

    # -- audit -------------------------------------------------------------------------

    async def audit_for(self, target: str, *, limit: int = 50) -> list[Event]:
        """The audit events about ``target`` (a workflow or dead-letter id), newest last."""
        return [r.event for r in await self._audit_records({target})][-limit:]

    async def _audit_records(self, targets: set[str], days: int = 7) -> list[RecordedEvent]:
        """Audit events about any of ``targets`` among the newest :data:`AUDIT_SCAN` of each
        of the last ``days`` days that have any."""
        if not targets:
            return []
        streams = await self.store.list_streams(AUDIT_STREAM_PREFIX, limit=100_000)
        found: list[RecordedEvent] = []
        for info in streams[-days:]:
            start = max(1, info.version - AUDIT_SCAN + 1)
            for rec in await self.store.read_stream(info.stream, from_version=start):
                if rec.event.subject in targets:
                    found.append(rec)
        return found

    # -- dead letters ------------------------------------------------------------------

    async def letters(
        self,
        *,
        status: str | None = "parked",
        subscription: str | None = None,
        error_type: str | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, newest first, filtered.

        Raises:
            ValueError: ``status`` is not a dead-letter status.
        """
        letters = await self.dead_letters.list(
            subscription or None, status or None, limit=_LIST_LIMIT
        )
        if error_type:
            letters = [x for x in letters if x.error_type == error_type]
        letters.reverse()
        return letters

    async def letter(self, letter_id: str) -> DeadLetter | None:
        """One dead letter, or None."""
        if not letter_id or len(letter_id) > 200:
            return None
        try:
            return await self.dead_letters.get(letter_id)
        except DeadLetterNotFound:
            return None

    async def letter_history(self, letter: DeadLetter) -> list[RecordedEvent]:
        """The letter's own stream: parked, then redriven/discarded/resolved."""
        return await self.store.read_stream(DEAD_LETTER_STREAM_PREFIX + letter.id)

    async def redrive_letters(self, ids: Sequence[str]) -> dict[str, bool]:
        """Redrive each letter; for each id, whether this call redrove it."""
        return {i: await self._decide(i, self.dead_letters.redrive) for i in ids}

    async def discard_letters(self, ids: Sequence[str]) -> dict[str, bool]:
        """Discard each letter; for each id, whether this call discarded it."""
        return {i: await self._decide(i, self.dead_letters.discard) for i in ids}

    @staticmethod
    async def _decide(letter_id: str, act: Callable[[str], Any]) -> bool:
        try:
            return bool(await act(letter_id))
        except DeadLetterNotFound:
            return False


def _workflow_id_of(event: Event) -> str | None:
    """The workflow instance an event belongs to, if it says."""
    wid = event.data.get("workflow_id") if isinstance(event.data, dict) else None
    if isinstance(wid, str) and wid:
        return wid
    if event.type.startswith("contexten.workflow.") and event.subject:
        return event.subject
    return None
