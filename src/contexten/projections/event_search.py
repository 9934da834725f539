"""Filtered, position-paginated listings of the event log: the one query behind the events
API, its live stream and the dashboard's events pages.

A listing is a range of log positions read newest first (``before``) or oldest first
(``after``), filtered by a type pattern, source, subject, correlation id, causation id, a
time range and an as-of time (all combined with AND). The cursor is a log position, so a
page never shifts when events are appended meanwhile.

How it stays cheap on a large log: the ``events`` read model
(:mod:`contexten.projections.events`) indexes every envelope up to its checkpoint; that part
of the range is read through its indexes (a type pattern becomes one indexed read per
matching type), and only the events past the checkpoint (the read model's lag, normally a
handful) are read from the log and tested one by one. Either way a request looks at no
more than :data:`SCAN_BUDGET` entries; when the budget runs out first, the answer carries
the cursor to continue from, so no request is unbounded and none skips anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from contexten.events.patterns import Pattern, compile_pattern
from contexten.projections.base import Query
from contexten.projections.manager import Projections
from contexten.store.base import EventStore, RecordedEvent

__all__ = [
    "FOLLOW_BATCH",
    "MAX_TYPE_READS",
    "SCAN_BUDGET",
    "EventQuery",
    "EventSlice",
    "Tick",
    "follow_events",
    "search_events",
]

SCAN_BUDGET: Final = 5_000
"""Log entries or index rows one listing looks at, at most."""
MAX_TYPE_READS: Final = 16
"""A type pattern matching more types than this is tested row by row instead of read per
type (a pattern that broad matches much of the log anyway)."""
_MAX_TYPES: Final = 10_000
_CHUNK: Final = 200
FOLLOW_BATCH: Final = 100
"""Log entries :func:`follow_events` reads (and so holds) at once: a live stream's buffer."""
_TICK: Final = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """What a listing keeps (every field optional; combined with AND).

    Attributes:
        type: a type pattern (``github.pull_request.*``, ``linear.**``).
        source: the envelope's source, exactly.
        subject: the envelope's subject, exactly.
        correlation_id: the work item, exactly.
        causation_id: only the events caused by the event with this id.
        since: recorded at or after this time.
        until: recorded before this time.
        as_of: the log as it was at this time: recorded at or before it.
        hidden: prefixes of streams never shown (what the reader may not see; see
            :func:`contexten.security.hidden_streams`).
    """

    type: str | None = None
    source: str | None = None
    subject: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    as_of: datetime | None = None
    hidden: tuple[str, ...] = ()

    @property
    def pattern(self) -> Pattern | None:
        """The compiled type pattern (raises InvalidPattern when it is not one)."""
        return compile_pattern(self.type) if self.type else None

    @property
    def equalities(self) -> dict[str, str]:
        """The exact-match filters, by index column."""
        pairs = {
            "source": self.source,
            "subject": self.subject,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
        }
        return {k: v for k, v in pairs.items() if v is not None}

    @property
    def upper_time(self) -> datetime | None:
        """The exclusive upper time bound of ``until`` and ``as_of`` together."""
        bounds = [t for t in (self.until, self.as_of + _TICK if self.as_of else None) if t]
        return min(bounds) if bounds else None

    def predicate(self) -> Callable[[RecordedEvent], bool]:
        """A test of one stored event against every filter.

        Raises:
            InvalidPattern: ``type`` is not a valid pattern.
        """
        pattern, equal, since, upper = self.pattern, self.equalities, self.since, self.upper_time
        hidden = self.hidden

        def matches(rec: RecordedEvent) -> bool:
            e = rec.event
            return (
                (pattern is None or pattern.matches(e.type))
                and all(getattr(e, k) == v for k, v in equal.items())
                and (since is None or rec.recorded_at >= since)
                and (upper is None or rec.recorded_at < upper)
                and not (hidden and rec.stream.startswith(hidden))
            )

        return matches


@dataclass(frozen=True, slots=True)
class EventSlice:
    """One page of a listing.

    Attributes:
        events: the matching events, in the listing's direction.
        cursor: where the next page continues (exclusive), or None when a newest-first
            listing reached the start of its range. An oldest-first listing always has
            one: the last position looked at, from which to tail.
        head: the log's head when the page was read (where a live stream starts).
    """

    events: list[RecordedEvent]
    cursor: int | None
    head: int


async def search_events(
    store: EventStore,
    query: EventQuery,
    *,
    projections: Projections | None = None,
    before: int | None = None,
    after: int | None = None,
    limit: int = 50,
    budget: int = SCAN_BUDGET,
) -> EventSlice:
    """One page of the events of ``store`` matching ``query``: newest first below
    ``before`` (default: from the head), or oldest first above ``after``.

    ``projections`` holds the ``events`` read model that makes the filters index reads;
    without it (or before it has caught up) the log itself is tested entry by entry, within
    ``budget`` entries per call.

    Raises:
        InvalidPattern: the type filter is not a valid pattern.
        ValueError: both ``before`` and ``after``, or a limit below 1.
    """
    if before is not None and after is not None:
        raise ValueError("give before or after, not both")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return await _Search(store, projections, query, limit, budget).run(before, after)


class _Search:
    """One listing request: its bounds, what it found, and what it has looked at."""

    def __init__(
        self,
        store: EventStore,
        projections: Projections | None,
        query: EventQuery,
        limit: int,
        budget: int,
    ) -> None:
        self.store = store
        self._projections = projections
        self.query = query
        self.pattern = query.pattern
        self.matches = query.predicate()
        self.limit = limit
        self.budget = budget
        self.found: list[RecordedEvent] = []
        self.looked = 0
        self.types: list[str] | None = None
        self.types_known = False

    async def run(self, before: int | None, after: int | None) -> EventSlice:
        head = await self.store.head()
        indexed = await self._indexed_position()
        if after is not None:
            cursor = await self._forward(after, head, indexed)
            return EventSlice(self.found, cursor, head)
        top = head if before is None else min(before - 1, head)
        return EventSlice(self.found, await self._backward(top, indexed), head)

    async def _indexed_position(self) -> int:
        """How far the index covers the log (0: read the log itself, as for a listing with
        no filter the index could narrow: the newest entries are the answer)."""
        query = self.query
        narrows = self.pattern is not None or query.equalities or query.since or query.upper_time
        if not narrows or self._projections is None or "events" not in self._projections.names:
            return 0
        return (await self._projections.models.checkpoint("events")).position

    @property
    def projections(self) -> Projections:
        # Only the indexed part reads it, and there is one only when it is registered.
        assert self._projections is not None
        return self._projections

    @property
    def full(self) -> bool:
        return len(self.found) >= self.limit

    # -- directions --------------------------------------------------------------------------

    async def _backward(self, top: int, indexed: int) -> int | None:
        """Newest first from ``top`` down; the cursor to continue below, or None at the end."""
        position = top
        if position > indexed:
            position = await self._scan_log_backward(position, indexed)
            if position > indexed:
                return position + 1  # full, or out of budget, inside the tail
        if indexed == 0:
            return None
        low, high = await self._time_positions(indexed)
        position = min(position, high)
        while position > low and not self.full and self.looked < self.budget:
            position = await self._read_index(low, position, descending=True)
        return position + 1 if position > low else None

    async def _forward(self, after: int, head: int, indexed: int) -> int:
        """Oldest first above ``after``; the last position looked at."""
        position = after
        if position < indexed:
            low, high = await self._time_positions(indexed)
            position = max(position, low)
            while position < high and not self.full and self.looked < self.budget:
                position = await self._read_index(position, high, descending=False)
            if position < high:
                return position  # full, or out of budget
            position = indexed  # past ``high`` no indexed event is in the time range
        if self.full or self.looked >= self.budget:
            return position
        return await self._scan_log_forward(position, head)

    # -- the log past the read model's checkpoint ---------------------------------------------

    async def _scan_log_backward(self, top: int, floor: int) -> int:
        """Test log entries from ``top`` down to ``floor`` (exclusive); return the highest
        position still to look at."""
        position = top
        while position > floor and not self.full and self.looked < self.budget:
            want = min(_CHUNK, position - floor, self.budget - self.looked)
            page = await self.store.read_all_backwards(before=position + 1, limit=want)
            if not page:
                return floor
            for rec in page:
                self.looked += 1
                position = rec.position - 1
                if self.matches(rec):
                    self.found.append(rec)
                    if len(self.found) >= self.limit:
                        return position
        return position

    async def _scan_log_forward(self, after: int, head: int) -> int:
        position = after
        while position < head and not self.full and self.looked < self.budget:
            want = min(_CHUNK, self.budget - self.looked)
            page = await self.store.read_all(after=position, limit=want)
            if not page:
                break
            for rec in page:
                self.looked += 1
                position = rec.position
                if self.matches(rec):
                    self.found.append(rec)
                    if len(self.found) >= self.limit:
                        return position
        return position

    # -- the indexed part ----------------------------------------------------------------------

    async def _time_positions(self, indexed: int) -> tuple[int, int]:
        """The indexed positions ``(low, high]`` the time filters leave (recorded_at grows
        along the log, so a time range is a position range)."""
        low, high = 0, indexed
        if self.query.since is not None:
            rows = await self.projections.query(
                "event_index",
                Query(since=("recorded_at", self.query.since), order=("recorded_at",), limit=1),
            )
            low = rows[0]["position"] - 1 if rows else indexed
        upper = self.query.upper_time
        if upper is not None:
            rows = await self.projections.query(
                "event_index",
                Query(until=("recorded_at", upper), order=("-recorded_at",), limit=1),
            )
            high = min(high, rows[0]["position"]) if rows else 0
        return low, max(low, high)

    async def _types(self) -> list[str] | None:
        """The types a pattern matches, when few enough to read one by one (None: no pattern,
        or too many: test each row)."""
        pattern = self.pattern
        if pattern is None:
            return None
        if pattern.is_exact:
            return [pattern.text]
        rows = await self.projections.query("event_types", Query(order=("type",), limit=_MAX_TYPES))
        types = [r["type"] for r in rows if pattern.matches(r["type"])]
        return types if len(types) <= MAX_TYPE_READS else None

    async def _read_index(self, low: int, high: int, *, descending: bool) -> int:
        """Read one chunk of index rows in ``(low, high]`` (newest or oldest first), keep the
        matching events; return the position still to look at (the new high when
        descending, the new low when ascending)."""
        if not self.types_known:
            self.types, self.types_known = await self._types(), True
        types = self.types
        need = min(max(self.limit - len(self.found), 1) * 2, _CHUNK)
        need = max(1, min(need, self.budget - self.looked))
        equal: Mapping[str, Any] = self.query.equalities
        since, until = ("position", low + 1), ("position", high + 1)
        order = ("-position",) if descending else ("position",)
        if types is not None:
            if not types:
                return low if descending else high
            reads = [
                self.projections.query(
                    "event_index",
                    Query(
                        where={**equal, "type": t},
                        since=since,
                        until=until,
                        order=order,
                        limit=need,
                    ),
                )
                for t in types
            ]
            rows = [r for chunk in await asyncio.gather(*reads) for r in chunk]
        else:
            rows = await self.projections.query(
                "event_index",
                Query(where=dict(equal), since=since, until=until, order=order, limit=need),
            )
        rows.sort(key=lambda r: r["position"], reverse=descending)
        rows = rows[:need]
        if len(rows) < need:
            # The range holds no more candidates than these.
            end = low if descending else high
        else:
            end = rows[-1]["position"] - 1 if descending else rows[-1]["position"]
        kept = [r for r in rows if self._row_matches(r)]
        self.looked += len(rows)
        records = await self._load(kept)
        for rec in records:
            self.found.append(rec)
            if self.full:
                return rec.position - 1 if descending else rec.position
        return end

    def _row_matches(self, row: dict[str, Any]) -> bool:
        hidden = self.query.hidden
        if hidden and str(row["stream"]).startswith(hidden):
            return False
        return self.pattern is None or self.pattern.matches(row["type"])

    async def _load(self, rows: list[dict[str, Any]]) -> list[RecordedEvent]:
        """The stored events of index rows (by id), in the rows' order."""
        if not rows:
            return []
        by_id = {
            rec.event.id: rec for rec in await self.store.get_events([r["event_id"] for r in rows])
        }
        loaded = [by_id.get(r["event_id"]) for r in rows]
        return [rec for rec in loaded if rec is not None and self.matches(rec)]


@dataclass(frozen=True, slots=True)
class Tick:
    """What :func:`follow_events` yields: new matching events (possibly none: a heartbeat)
    and the last log position looked at (where a reconnect continues)."""

    events: list[RecordedEvent]
    position: int


async def follow_events(
    store: EventStore,
    query: EventQuery,
    after: int,
    *,
    seconds: float,
    heartbeat: float,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[Tick]:
    """The events above ``after`` matching ``query``, oldest first, as they are committed,
    for ``seconds`` at most (then the caller's client reconnects).

    Yields a :class:`Tick` for each read that found matches, and an empty one after
    ``heartbeat`` seconds without any (a keep-alive that also moves the position past
    entries that did not match), and a last empty one when the time is up, so a client
    reconnects from where the stream ended even when nothing matched meanwhile. At most
    :data:`FOLLOW_BATCH` entries are read at a time, and the next read waits until the
    caller has taken the previous tick, so a slow reader falls behind the log (and catches
    up later) instead of making the server buffer.
    ``gone()`` is asked after each wait: a closed connection stops the generator.

    Raises:
        InvalidPattern: the type filter is not a valid pattern.
    """
    matches = query.predicate()
    loop = asyncio.get_running_loop()
    ends = loop.time() + seconds
    quiet_since = loop.time()
    while (left := ends - loop.time()) > 0:
        try:
            head = await store.wait_for_new(after, timeout=min(heartbeat, left))
        except TimeoutError:
            head = after
        if gone is not None and await gone():
            return
        found: list[RecordedEvent] = []
        if head > after:
            page = await store.read_all(after=after, limit=FOLLOW_BATCH)
            if page:
                after = page[-1].position
                found = [r for r in page if matches(r)]
        if found:
            quiet_since = loop.time()
            yield Tick(found, after)
        elif loop.time() - quiet_since >= heartbeat:
            quiet_since = loop.time()
            yield Tick([], after)
    yield Tick([], after)  # time is up: where the reconnection goes on from
