"""Everything the dashboard's pages read, in one place.

Pages never touch the store, the engine or the dead-letter queue themselves: they call
:class:`DashboardData`. Listings, counts and timelines come from the read models through
the same :class:`~contexten.projections.ReadSide` functions the REST API (``/api/v1``)
uses, so no page folds streams on a request; one instance's page reads its one stream, and
the events pages run the read side's events query, as the events API does.

Every read is bounded: a listing that filters scans at most :data:`SCAN_BUDGET` log entries
per request and says where to continue, like the events API.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from contexten.bus.dead_letters import (
    DEAD_LETTER_STREAM_PREFIX,
    DeadLetter,
    DeadLetterQueue,
    DeadLetterStatus,
)
from contexten.bus.workers import WorkersReport, workers_report
from contexten.events.envelope import Event
from contexten.exceptions import DeadLetterNotFound, WorkflowError, WorkflowNotFound
from contexten.projections.activity import PerMinute
from contexten.projections.event_search import EventQuery
from contexten.projections.read_side import ReadSide
from contexten.security import AUDIT_STREAM_PREFIX
from contexten.store.base import EventStore, RecordedEvent
from contexten.workflows import admin
from contexten.workflows.history import WorkflowStatus
from contexten.workflows.migration import MigrationPlan
from contexten.workflows.schedules import SCHEDULE_PREFIX, ScheduleState, fold_schedule
from contexten.workflows.state_machine import StateMachine

__all__ = [
    "BLOCKED_PAGE",
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
TIMELINE_PAGE: Final = 200
"""Entries of a work item's timeline shown on one page."""
LETTERS_PAGE: Final = 100
"""Dead letters shown on one page."""
BLOCKED_PAGE: Final = 100
"""Blocked instances listed on the versions page."""
SEARCH_LIMIT: Final = 10_000
"""Instances (the newest updated) an id search on the workflows page looks among."""
_LIST_LIMIT: Final = 10_000
AUDIT_SCAN: Final = 5_000
"""Newest audit events of each day looked at for a workflow's or a letter's actions."""


class DashboardHost(Protocol):
    """What the dashboard needs of the application it shows (``App`` fits)."""

    @property
    def store(self) -> EventStore:
        """The event store (the source of truth)."""

    @property
    def read(self) -> ReadSide:
        """The read models' queries (what the REST API reads)."""

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

    def query(self) -> EventQuery:
        """These filters as the read side's events query (what the REST API runs too)."""
        return EventQuery(
            type=self.type,
            source=self.source,
            correlation_id=self.correlation_id,
            subject=self.subject,
            since=self.since,
            hidden=self.hidden,
        )

    def predicate(self) -> Callable[[RecordedEvent], bool]:
        """A test for one stored event.

        Raises:
            InvalidPattern: ``type`` is not a valid pattern.
        """
        return self.query().predicate()


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
    next_cursor: str | None = None
    """The read model's cursor of the next page (then ``number`` is not used)."""

    @property
    def pages(self) -> int:
        """How many pages there are (at least 1)."""
        return max(1, -(-self.total // self.size))

    @property
    def has_next(self) -> bool:
        """Whether a later page exists."""
        return self.next_cursor is not None or self.number < self.pages


@dataclass(slots=True)
class WorkItem:
    """One page of everything that touched one correlation id, oldest first.

    Attributes:
        key: the correlation id (``ENG-123``).
        entries: the events of this page, in log order (including workflow history).
        workflows: the workflow instances that belong to it (those on this page).
        summary: the read model's row (first and last time, entries, sources), or None.
        after: the position this page starts after (0: the first page).
        next_after: the position the next page starts after, or None on the last page.
    """

    key: str
    entries: list[RecordedEvent] = field(default_factory=list)
    workflows: list[admin.WorkflowInfo] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    after: int = 0
    next_after: int | None = None


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
        """How many workflow instances are in each status (every status listed; exact
        counts from the ``workflows`` read model)."""
        return await self.host.read.workflow_counts()

    async def dead_letter_counts(self) -> dict[str, int]:
        """How many dead letters are in each status (the read model's exact counts, what
        ``GET /api/v1/dead-letters/counts`` answers, summed over subscriptions)."""
        counts: Counter[str] = Counter()
        for by_status in (await self.host.read.dead_letter_counts()).values():
            counts.update(by_status)
        return {str(s): counts.get(str(s), 0) for s in DeadLetterStatus}

    async def workers(self) -> WorkersReport:
        """The live workers, the partitions each holds and every subscription's partitions
        (what ``contexten workers`` shows)."""
        return await workers_report(self.store)

    async def platforms(self, health: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Per platform: traffic and errors from the ``platform_health`` read model, merged
        with the running agents' breaker and rate-limit state (``live``), by name; what
        ``GET /api/v1/platforms`` answers.

        Args:
            health: the report :meth:`health` already answered for this request: its
                agents are used instead of building the health report a second time (the
                overview shows both).
        """
        rows = {r["platform"]: dict(r) for r in await self.host.read.platforms()}
        agents: Mapping[str, Any] = (
            health["agents"] if health is not None else (await self.host.health()).agents
        )
        for name, live in agents.items():
            rows.setdefault(name, {"platform": name})["live"] = dict(live)
        return [rows[k] for k in sorted(rows)]

    async def per_minute(self, minutes: int = 60) -> PerMinute:
        """Events recorded, handler failures parked as dead letters, and events per source,
        in each of the last ``minutes`` minutes up to now, oldest first: one read of the
        ``activity`` read model (at most ``minutes`` rows, however long the log)."""
        return await self.host.read.per_minute(minutes=minutes)

    # -- events ------------------------------------------------------------------------

    async def head(self) -> int:
        """The log's head position."""
        return await self.store.head()

    async def events(
        self, filters: EventFilter, *, before: int | None = None, limit: int = 50
    ) -> EventPage:
        """The newest events matching ``filters`` below ``before``: the read side's events
        query (the events index, then the log past its checkpoint; bounded per request).

        Raises:
            InvalidPattern: the type filter is not a valid pattern.
        """
        page = await self.host.read.events(filters.query(), before=before, limit=limit)
        return EventPage(page.events, page.cursor, page.head)

    async def event(self, event_id: str) -> RecordedEvent | None:
        """One stored event by id, or None."""
        return await self.store.get_event(event_id)

    async def caused_by(
        self, rec: RecordedEvent, *, hidden: tuple[str, ...] = (), limit: int = 50
    ) -> list[RecordedEvent]:
        """The events whose ``causation_id`` is ``rec``'s id (the events index), but for
        streams starting with ``hidden``."""
        query = EventQuery(causation_id=rec.event.id, hidden=hidden)
        return (await self.host.read.events(query, after=rec.position, limit=limit)).events

    # -- workflows ---------------------------------------------------------------------

    async def workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        search: str | None = None,
        page: int = 1,
        cursor: str | None = None,
        size: int = 25,
    ) -> Page:
        """Workflow instances from the ``workflows`` read model, most recently updated
        first, filtered and paginated.

        Without ``search`` this is one keyset page (``GET /api/v1/workflows``: ``cursor``
        continues) and the total is an exact count. An id search (the read model has no
        substring index) looks among the :data:`SEARCH_LIMIT` most recently updated
        matching rows, paginated by ``page``.

        Args:
            status: only this status.
            name: only this workflow.
            search: only ids containing this text (case-insensitive): an id or a key.
            page: the page number, from 1 (with ``search``).
            cursor: the read model's cursor of the page (without ``search``).
            size: instances per page.

        Raises:
            ValueError: ``status`` is not a status word, or ``cursor`` is not a cursor.
        """
        wanted = WorkflowStatus(status).value if status else None
        read = self.host.read
        if not search:
            found = await read.workflow_info_page(
                status=wanted, name=name or None, cursor=cursor, limit=size
            )
            total = await read.workflow_count(status=wanted, name=name or None)
            return Page(found.items, 1, size, total, found.next_cursor)
        needle = search.lower()
        rows = [
            w
            for w in await read.workflow_infos(wanted, name=name or None, limit=SEARCH_LIMIT)
            if needle in w.workflow_id.lower()
        ]
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

    def workflow_versions(self, name: str) -> list[str]:
        """The registered versions of workflow ``name``, oldest first (none when the host
        runs no workflow engine)."""
        versions = getattr(getattr(self.host, "workflows", None), "versions", None)
        return [str(v) for v in versions(name)] if versions is not None else []

    async def plan_migration(self, workflow_id: str, to_version: str) -> MigrationPlan:
        """How a blocked instance would move to ``to_version`` (records nothing;
        ``App.plan_migration``).

        Raises:
            WorkflowError: the host cannot migrate, or the instance cannot move (see
                :meth:`~contexten.workflows.WorkflowEngine.plan_migration`).
        """
        plan: MigrationPlan = await self._host_call("plan_migration")(workflow_id, to_version)
        return plan

    async def migrate(self, workflow_id: str, to_version: str, *, force: bool) -> MigrationPlan:
        """Move a blocked instance to ``to_version`` (``App.migrate``: refused with
        :class:`~contexten.exceptions.MigrationRefused` unless it may)."""
        plan: MigrationPlan = await self._host_call("migrate")(workflow_id, to_version, force=force)
        return plan

    async def fork_workflow(self, workflow_id: str, *, cancel_old: bool) -> str:
        """Start a new instance from an instance's input, linked to it; its id."""
        handle = await self._host_call("fork_workflow")(workflow_id, cancel_old=cancel_old)
        return str(handle.workflow_id)

    def _host_call(self, name: str) -> Any:
        call = getattr(self.host, name, None)
        if call is None:
            raise WorkflowError("this application runs no workflow engine")
        return call

    # -- versions ----------------------------------------------------------------------

    async def versions(self) -> list[dict[str, Any]]:
        """Per (workflow, version): its open instances and how many are blocked, from the
        ``workflows`` read model; what ``GET /api/v1/workflow-versions`` answers."""
        return await self.host.read.workflow_versions()

    async def blocked(
        self, *, name: str | None = None, version: str | None = None
    ) -> tuple[list[admin.WorkflowInfo], bool]:
        """Blocked instances with their reasons, most recently blocked first (at most
        :data:`BLOCKED_PAGE`), of workflow ``name`` and ``version`` when given; and whether
        more exist than are shown. Read from the read model's blocked rows (at most
        :data:`SEARCH_LIMIT` looked at when a version is asked for)."""
        read = self.host.read
        blocked = WorkflowStatus.BLOCKED.value
        if name is None:
            rows = await read.workflow_infos(blocked, limit=BLOCKED_PAGE + 1)
        else:  # by status (its index; few rows), then the name and version here
            rows = [
                w
                for w in await read.workflow_infos(blocked, limit=SEARCH_LIMIT)
                if w.name == name and (version is None or (w.version or "1") == version)
            ]
        return rows[:BLOCKED_PAGE], len(rows) > BLOCKED_PAGE

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

    async def work_item(self, key: str, *, after: int = 0, audit: bool = False) -> WorkItem:
        """One page of the cross-platform timeline of correlation id ``key``.

        The page is the ``work_items`` read model's timeline (``GET /api/v1/work-items/{id}``:
        webhooks from every platform, our own actions, workflow history and outcomes, dead
        letters), at most :data:`TIMELINE_PAGE` entries after position ``after``; the entries'
        envelopes are then read by id in one store query (for their summaries and links).
        With ``audit`` (for those who may read the audit trail) the audit events of what
        people did to the page's workflows and dead letters are added.
        """
        read = self.host.read
        item = WorkItem(key, summary=await read.work_item(key), after=after)
        if item.summary is None:
            return item
        page = await read.timeline(key, after=after, limit=TIMELINE_PAGE)
        item.next_after = int(page.next_cursor) if page.next_cursor else None
        # The entries' envelopes (for each one's summary and link) in one read, not one per id.
        records = await self.store.get_events([row["event_id"] for row in page.items])
        seen: dict[int, RecordedEvent] = {rec.position: rec for rec in records}
        workflow_ids = {row["workflow_id"] for row in page.items if row.get("workflow_id")}
        letters = {r.stream[len(DEAD_LETTER_STREAM_PREFIX) :] for r in seen.values()
                   if r.stream.startswith(DEAD_LETTER_STREAM_PREFIX)}  # fmt: skip
        if audit:
            for rec in await self._audit_records(workflow_ids | letters):
                seen[rec.position] = rec  # what people did about it, from the dashboard or CLI
        for wid in sorted(workflow_ids):
            info = await read.workflow_info(wid)
            if info is not None:
                item.workflows.append(info)
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
        cursor: str | None = None,
    ) -> Page:
        """One page of dead letters (at most :data:`LETTERS_PAGE`), oldest first, from the
        ``dead_letters`` read model (``GET /api/v1/dead-letters``), filtered; ``total`` is
        the read model's exact count (without ``error_type``: that filter applies to the
        page's letters only).

        Raises:
            ValueError: ``status`` is not a dead-letter status, or a bad cursor.
        """
        if status is not None:
            DeadLetterStatus(status)
        read = self.host.read
        page = await read.dead_letters(
            subscription=subscription or None, status=status, cursor=cursor, limit=LETTERS_PAGE
        )
        letters: list[DeadLetter] = page.items
        if error_type:
            letters = [x for x in letters if x.error_type == error_type]
            total = len(letters)
        else:
            counts = await read.dead_letter_counts()
            chosen = [c for s, c in counts.items() if not subscription or s == subscription]
            total = sum(n for c in chosen for st, n in c.items() if status is None or st == status)
        return Page(letters, 1, LETTERS_PAGE, total, page.next_cursor)

    async def all_letters(
        self,
        *,
        status: str | None = "parked",
        subscription: str | None = None,
        error_type: str | None = None,
    ) -> list[DeadLetter]:
        """Every dead letter that matches (for "all matching" actions), oldest first, read
        page by page from the read model, as the API's bulk redrive does."""
        letters = await self.host.read.all_dead_letters(subscription or None, status)
        return [x for x in letters if not error_type or x.error_type == error_type]

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
