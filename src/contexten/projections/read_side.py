"""The built-in read models and the reads the API, the CLI, health and the engine make.

:func:`builtin_projections` is what every App registers; :class:`ReadSide` answers the
questions that used to fold streams (list workflows, list and count dead letters, find
unfinished instances) from the read models, plus the work-item timelines. Listings are
bounded and paginated by opaque cursors (keyset: stable while rows are added).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from contexten.bus.dead_letters import DeadLetter, DeadLetterStatus
from contexten.projections import activity as _activity
from contexten.projections import dead_letters as _dl
from contexten.projections import work_items as _wi
from contexten.projections import workflows as _wf
from contexten.projections.base import Projection, Query
from contexten.projections.event_search import EventQuery, EventSlice, search_events
from contexten.projections.events import EventsProjection
from contexten.projections.manager import Projections
from contexten.projections.platform_health import PlatformHealthProjection
from contexten.projections.platform_health import row_to_dict as _platform_dict
from contexten.store.base import EventStore
from contexten.store.retention import Protected
from contexten.workflows.admin import WorkflowInfo
from contexten.workflows.history import TERMINAL_STATUSES, WorkflowStatus

__all__ = [
    "Page",
    "ReadSide",
    "builtin_projections",
    "decode_cursor",
    "encode_cursor",
    "in_flight_by_version",
    "info_from_row",
    "open_read_side",
]

_MAX_PAGE: Final = 1000


def builtin_projections() -> list[Projection]:
    """Fresh instances of the built-in projections (workflows, dead letters, work items,
    platform health, activity per minute, the events index)."""
    return [
        _wf.WorkflowsProjection(),
        _dl.DeadLettersProjection(),
        _wi.WorkItemsProjection(),
        PlatformHealthProjection(),
        _activity.ActivityProjection(),
        EventsProjection(),
    ]


def encode_cursor(values: Sequence[Any]) -> str:
    """An opaque cursor for a row's sort values."""
    parts = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(msgspec.json.encode(parts)).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    """The sort values of a cursor from :func:`encode_cursor`.

    Raises:
        ValueError: not a cursor this module made.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = msgspec.json.decode(raw)
    except (binascii.Error, msgspec.DecodeError, ValueError) as e:
        raise ValueError("invalid cursor") from e
    if not isinstance(parts, list):
        raise ValueError("invalid cursor")
    out: list[Any] = []
    for p in parts:
        if isinstance(p, dict):
            t = p.get("t")
            if not isinstance(t, str):
                raise ValueError("invalid cursor")
            try:
                out.append(datetime.fromisoformat(t))
            except ValueError as e:
                raise ValueError("invalid cursor") from e
        elif p is None or isinstance(p, (str, int, float)):
            out.append(p)
        else:
            raise ValueError("invalid cursor")
    return out


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing: the rows and the cursor of the next page (None: last)."""

    items: list[Any]
    next_cursor: str | None


def _page(rows: list[dict[str, Any]], limit: int, sort: Sequence[str]) -> str | None:
    if len(rows) < limit or not rows:
        return None
    return encode_cursor([rows[-1][c] for c in sort])


def _limit(limit: int) -> int:
    if not 1 <= limit <= _MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {_MAX_PAGE}, got {limit}")
    return limit


def info_from_row(row: dict[str, Any]) -> WorkflowInfo:
    """A :class:`WorkflowInfo` (without result or history) from a ``workflows`` row."""
    return WorkflowInfo(
        workflow_id=row["workflow_id"],
        name=row["name"],
        version=row["version"],
        kind=row["kind"],
        status=WorkflowStatus(row["status"]),
        error=row["error"],
        current_step=row["current_step"],
        parked=bool(row["parked"]),
        state=row["state"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        run=int(row["run"] or 1),
        blocked_reason=row["blocked_reason"],
    )


class ReadSide:
    """Reads of the built-in read models.

    Args:
        projections: the registry the built-ins are registered in (opened by its owner).
        fresh: catch a read model up to the log's head before each read (the CLI and tests:
            read-your-writes). A serving app leaves it False: its runners keep the models
            current, and a request never folds.
    """

    def __init__(self, projections: Projections, *, fresh: bool = False) -> None:
        self.projections = projections
        self.fresh = fresh

    async def _ready(self, name: str) -> None:
        if self.fresh:
            await self.projections.catch_up(name)

    # -- workflows ---------------------------------------------------------------------------

    async def workflows(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """A page of instance rows (dicts, no fold), most recently updated first.

        Raises:
            ValueError: an unknown status, a bad cursor or limit.
        """
        rows, next_cursor = await self._workflow_rows(status, name, since, until, cursor, limit)
        return Page([_wf.row_to_dict(r) for r in rows], next_cursor)

    async def workflow_info_page(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """:meth:`workflows` with each row as a :class:`WorkflowInfo` (what the dashboard
        renders); the same query and cursor.

        Raises:
            ValueError: an unknown status, a bad cursor or limit.
        """
        rows, next_cursor = await self._workflow_rows(status, name, None, None, cursor, limit)
        return Page([info_from_row(r) for r in rows], next_cursor)

    async def _workflow_rows(
        self,
        status: str | None,
        name: str | None,
        since: datetime | None,
        until: datetime | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of workflow rows, most recently updated first, and the next cursor."""
        await self._ready("workflows")
        query = _wf.list_page(
            status=status,
            name=name,
            since=since,
            until=until,
            after=decode_cursor(cursor) if cursor else None,
            limit=_limit(limit),
        )
        rows = await self.projections.query("workflows", query)
        return rows, _page(rows, limit, ("updated_at", "workflow_id"))

    async def workflow_count(self, *, status: str | None = None, name: str | None = None) -> int:
        """How many instances match (exact).

        Raises:
            ValueError: an unknown status.
        """
        await self._ready("workflows")
        where: dict[str, Any] = {}
        if status is not None:
            where["status"] = WorkflowStatus(status).value
        if name is not None:
            where["name"] = name
        return await self.projections.count("workflows", where)

    async def workflow_counts(self) -> dict[str, int]:
        """How many instances are in each status (every status listed; exact), summed from
        the ``workflow_version_counts`` counters: one small read, whatever the number of
        instances (a count per status reads every row of that status)."""
        counts = {s.value: 0 for s in WorkflowStatus}
        for row in await self.workflow_version_counts():
            counts[row["status"]] = counts.get(row["status"], 0) + row["n"]
        return counts

    async def workflow_info(self, workflow_id: str) -> WorkflowInfo | None:
        """One instance's row as a :class:`WorkflowInfo` (no history), or None."""
        await self._ready("workflows")
        row = await self.projections.get("workflows", workflow_id)
        return info_from_row(row) if row else None

    async def workflow_infos(
        self, status: str | None = None, *, name: str | None = None, limit: int = 10_000
    ) -> list[WorkflowInfo]:
        """Instances as :class:`WorkflowInfo` (no history), most recently updated first."""
        await self._ready("workflows")
        query = _wf.list_page(status=status, name=name, limit=limit)
        return [info_from_row(r) for r in await self.projections.query("workflows", query)]

    async def workflow(self, workflow_id: str) -> dict[str, Any] | None:
        """One instance's row, or None."""
        await self._ready("workflows")
        row = await self.projections.get("workflows", workflow_id)
        return _wf.row_to_dict(row) if row else None

    async def open_workflow_infos(self) -> list[WorkflowInfo]:
        """Every instance that has not ended, as :class:`WorkflowInfo` (no history)."""
        await self._ready("workflows")
        infos: list[WorkflowInfo] = []
        for status in _wf.ACTIVE_STATUSES:
            after: list[Any] | None = None
            while True:
                rows = await self.projections.query(
                    "workflows",
                    Query(
                        where={"status": status}, order=("workflow_id",), after=after, limit=5000
                    ),
                )
                infos.extend(info_from_row(r) for r in rows)
                if len(rows) < 5000:
                    break
                after = [rows[-1]["workflow_id"]]
        return infos

    async def workflow_version_counts(self) -> list[dict[str, Any]]:
        """Instances per (workflow, version, kind, status), exact: one read of the small
        ``workflow_version_counts`` table (its size is versions times statuses, whatever
        the number of instances)."""
        await self._ready("workflows")
        rows = await self.projections.query("workflow_version_counts", Query(limit=10_000))
        return [dict(r) for r in rows]

    async def workflow_versions(self) -> list[dict[str, Any]]:
        """Per (workflow, version), its open instances (``in_flight``) and how many of them
        are ``blocked``, from the read model's counters: an old version may be deleted once
        its ``in_flight`` is zero (a version with none is absent). State machines are not
        versioned and not listed."""
        in_flight: dict[tuple[str, str], int] = {}
        blocked: dict[tuple[str, str], int] = {}
        for row in await self.workflow_version_counts():
            if row["kind"] != "function" or row["status"] not in _wf.ACTIVE_STATUSES:
                continue
            key = (row["name"], row["version"])
            in_flight[key] = in_flight.get(key, 0) + row["n"]
            if row["status"] == WorkflowStatus.BLOCKED.value:
                blocked[key] = blocked.get(key, 0) + row["n"]
        return [
            {
                "name": name,
                "version": version,
                "in_flight": n,
                "blocked": blocked.get((name, version), 0),
            }
            for (name, version), n in sorted(in_flight.items())
        ]

    async def count_workflows(self, status: str) -> int:
        """How many instances have ``status`` (exact; one count on the read model)."""
        await self._ready("workflows")
        return await self.projections.count("workflows", {"status": WorkflowStatus(status).value})

    async def unfinished_workflow_ids(self) -> list[str]:
        """Ids of every instance that has not ended (what the engine resumes at start)."""
        await self._ready("workflows")
        ids: list[str] = []
        for status in _wf.ACTIVE_STATUSES:
            after: list[Any] | None = None
            while True:
                rows = await self.projections.query(
                    "workflows",
                    Query(
                        where={"status": status}, order=("workflow_id",), after=after, limit=5000
                    ),
                )
                ids.extend(r["workflow_id"] for r in rows)
                if len(rows) < 5000:
                    break
                after = [rows[-1]["workflow_id"]]
        return ids

    # -- dead letters ------------------------------------------------------------------------

    async def dead_letters(
        self,
        *,
        subscription: str | None = None,
        status: str | None = DeadLetterStatus.PARKED.value,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """A page of letters (:class:`DeadLetter`), oldest first."""
        await self._ready("dead_letters")
        query = _dl.list_page(
            subscription=subscription,
            status=status,
            after=decode_cursor(cursor) if cursor else None,
            limit=_limit(limit),
        )
        rows = await self.projections.query("dead_letters", query)
        letters = [_dl.letter_from_row(r) for r in rows]
        return Page(letters, _page(rows, limit, ("parked_at", "id")))

    async def all_dead_letters(
        self, subscription: str | None = None, status: str | None = DeadLetterStatus.PARKED.value
    ) -> list[DeadLetter]:
        """Every letter that matches, oldest first, page by page."""
        out: list[DeadLetter] = []
        cursor: str | None = None
        while True:
            page = await self.dead_letters(
                subscription=subscription, status=status, cursor=cursor, limit=_MAX_PAGE
            )
            out.extend(page.items)
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor

    async def dead_letter_counts(self) -> dict[str, dict[str, int]]:
        """Letters per subscription and status (exact; one small table read)."""
        await self._ready("dead_letters")
        rows = await self.projections.query("dead_letter_counts", Query(limit=10_000))
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["subscription"], {})[r["status"]] = r["n"]
        return out

    async def open_dead_letters(self) -> int:
        """How many letters are parked, waiting for a decision (exact)."""
        counts = await self.dead_letter_counts()
        return sum(c.get(DeadLetterStatus.PARKED.value, 0) for c in counts.values())

    async def retention_protected(self) -> Protected:
        """What retention must leave whole: the events of open (parked) dead letters, and
        every stream one of them is in, so that a redrive delivers them as they were.

        (Open workflows' histories are system streams, which retention never touches.)
        """
        letters = await self.all_dead_letters(status=DeadLetterStatus.PARKED.value)
        store = self.projections.store
        streams: set[str] = set()
        for letter in letters:
            record = await store.get_event(letter.event_id)
            if record is not None:
                streams.add(record.stream)
        return Protected(
            streams=frozenset(streams), positions=frozenset(x.position for x in letters)
        )

    # -- work items --------------------------------------------------------------------------

    async def timeline(
        self,
        correlation_id: str,
        *,
        after: int = 0,
        limit: int = 200,
        as_of: datetime | None = None,
    ) -> Page:
        """A page of one work item's timeline, in log order (cursor: the last position);
        with ``as_of``, only what had been recorded by then."""
        await self._ready("work_items")
        query = _wi.timeline_page(correlation_id, after=after, limit=_limit(limit))
        if as_of is not None:
            query = dataclasses.replace(
                query, until=("recorded_at", as_of + timedelta(microseconds=1))
            )
        rows = await self.projections.query("work_item_entries", query)
        nxt = str(rows[-1]["position"]) if len(rows) == limit else None
        return Page([_wi.entry_to_dict(r) for r in rows], nxt)

    async def work_item(self, correlation_id: str) -> dict[str, Any] | None:
        """A work item's summary row, or None."""
        await self._ready("work_items")
        row = await self.projections.get("work_items", correlation_id)
        return _wi.entry_to_dict(row) if row else None

    async def search_work_items(self, prefix: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """Work items whose correlation id starts with ``prefix``, in id order."""
        await self._ready("work_items")
        rows = await self.projections.query(
            "work_items", Query(prefix=("correlation_id", prefix), limit=_limit(limit))
        )
        return [_wi.entry_to_dict(r) for r in rows]

    # -- events ------------------------------------------------------------------------------

    async def events(
        self,
        query: EventQuery,
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> EventSlice:
        """One page of the log's events matching ``query``, newest first below ``before``
        (default: from the head) or oldest first above ``after``; the cursor is a log
        position (see :mod:`contexten.projections.event_search`).

        Raises:
            InvalidPattern: the type filter is not a valid pattern.
            ValueError: both ``before`` and ``after``, or a bad limit.
        """
        await self._ready("events")
        return await search_events(
            self.projections.store,
            query,
            projections=self.projections,
            before=before,
            after=after,
            limit=_limit(limit),
        )

    # -- platforms ---------------------------------------------------------------------------

    async def platforms(self) -> list[dict[str, Any]]:
        """Per platform: webhooks, actions, errors (from the log)."""
        await self._ready("platform_health")
        rows = await self.projections.query("platform_health", Query(limit=100))
        return [_platform_dict(r) for r in rows]

    # -- activity ----------------------------------------------------------------------------

    async def per_minute(
        self, *, minutes: int = 60, now: datetime | None = None
    ) -> _activity.PerMinute:
        """Events recorded and handler failures parked in each of the last ``minutes``
        minutes up to ``now``'s (default: the current minute), oldest first; one indexed
        read of at most ``minutes`` rows of the ``activity`` read model.

        Raises:
            ValueError: ``minutes`` is out of the read model's retention.
        """
        await self._ready("activity")
        return await _activity.per_minute(self.projections, minutes=minutes, now=now)


def in_flight_by_version(infos: list[WorkflowInfo]) -> dict[tuple[str, str], int]:
    """Open (not ended) function instances per (workflow, version) among ``infos``."""
    counts: dict[tuple[str, str], int] = {}
    for info in infos:
        if info.status not in TERMINAL_STATUSES and info.kind == "function":
            key = (info.name, info.version or "1")
            counts[key] = counts.get(key, 0) + 1
    return counts


@asynccontextmanager
async def open_read_side(store: EventStore) -> AsyncIterator[ReadSide]:
    """The built-in read models beside an open ``store``, caught up before each read.

    For processes that do not run the projections themselves (the CLI): each read first
    folds what the log gained since the read model's checkpoint, so it sees everything
    stored so far; a serving app on the same store and this reader never fold an event
    twice (the checkpoint compare-and-swap).
    """
    from contexten.projections import create_read_models

    projections = Projections(store, create_read_models(store))
    for projection in builtin_projections():
        projections.add(projection)
    await projections.open()
    try:
        yield ReadSide(projections, fresh=True)
    finally:
        await projections.close()
