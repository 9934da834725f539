"""The ``activity`` read model: events recorded and handler failures parked, per minute.

What the dashboard's overview charts (events per minute and handler failures over the last
hour) read, so drawing them costs one indexed query of at most an hour's rows instead of a
scan of the log. One row per minute that had events, holding:

* ``events``: every event recorded in that minute (``$``-streams too: this is the log's
  traffic, by the store's ``recorded_at``);
* ``errors``: handler failures parked as dead letters (``contexten.dead_letter.parked``);
* ``sources``: events per ``source`` (the first :data:`MAX_SOURCES` sources of the minute
  by name, the rest counted under :data:`OTHER`).

The table is bounded: rows live in a ring of :data:`RETENTION_MINUTES` slots (seven days),
keyed by ``minute index mod slots``; the first event of a minute overwrites whatever that
slot held a week earlier. So the read model never holds more than 10,080 rows, needs no
clock and no deletes, and a rebuild reaches the same rows. Reads bound the ``minute``
column, so a slot not yet overwritten is never mistaken for a recent one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from contexten.bus.dead_letters import PARKED
from contexten.projections.base import Projection, ProjectionBatch, Query, Table
from contexten.projections.manager import Projections
from contexten.store.base import RecordedEvent

__all__ = [
    "ACTIVITY",
    "MAX_SOURCES",
    "OTHER",
    "RETENTION_MINUTES",
    "ActivityProjection",
    "PerMinute",
    "minute_of",
    "per_minute",
]

RETENTION_MINUTES: Final = 7 * 24 * 60
"""Minutes of activity kept (the ring's slots): seven days."""
MAX_SOURCES: Final = 16
"""Distinct sources counted by name in one minute; the others add up under :data:`OTHER`."""
OTHER: Final = "(other)"
"""The ``sources`` key of the events whose source is beyond the first :data:`MAX_SOURCES`."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

ACTIVITY: Final = Table(
    "activity_minutes",
    {"slot": "int", "minute": "time", "events": "int", "errors": "int", "sources": "json"},
    key=("slot",),
    indexes=(("minute",),),
)


def minute_of(moment: datetime) -> datetime:
    """``moment`` (aware) truncated to its minute, in UTC."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _slot(minute: datetime) -> int:
    return int((minute - _EPOCH).total_seconds() // 60) % RETENTION_MINUTES


class ActivityProjection(Projection):
    """Per minute: events recorded, dead letters parked, events per source (a bounded ring).

    Folds into the batch's scratch and writes each touched minute once per batch (in
    :meth:`flush`), so catching up a large log costs one row write per minute, not one per
    event.
    """

    name = "activity"
    tables = (ACTIVITY,)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Count ``record`` in its minute (and as an error if it parks a dead letter)."""
        minute = minute_of(record.recorded_at)
        slot = _slot(minute)
        rows: dict[int, dict[str, Any]] = batch.scratch.setdefault("activity", {})
        row = rows.get(slot)
        if row is None:
            row = await batch.get(ACTIVITY.name, slot)
            if row is not None and row["minute"] < minute:  # a week-old minute: recycle
                row = None
            elif row is not None and row["minute"] > minute:
                return  # older than the retention (a late writer's record): not kept
            if row is None:
                row = {"slot": slot, "minute": minute, "events": 0, "errors": 0, "sources": {}}
            rows[slot] = row
        elif row["minute"] != minute:
            if row["minute"] > minute:
                return
            row.update(minute=minute, events=0, errors=0, sources={})
        row["events"] += 1
        if record.event.type == PARKED:
            row["errors"] += 1
        sources: dict[str, int] = row["sources"]
        source = record.event.source
        if source not in sources and len(sources) >= MAX_SOURCES:
            source = OTHER
        sources[source] = sources.get(source, 0) + 1

    async def flush(self, batch: ProjectionBatch) -> None:
        """Write each minute the batch touched."""
        rows: dict[int, dict[str, Any]] = batch.scratch.get("activity", {})
        for row in rows.values():
            batch.put(ACTIVITY.name, row)


@dataclass(frozen=True, slots=True)
class PerMinute:
    """Counts per minute over a window, oldest first (one entry per minute, zeros included).

    Attributes:
        start: the first minute of the window.
        events: events recorded in each minute.
        errors: handler failures parked as dead letters in each minute.
        sources: events per source over the whole window, most first.
    """

    start: datetime
    events: list[int]
    errors: list[int]
    sources: list[tuple[str, int]]


async def per_minute(
    projections: Projections, *, minutes: int = 60, now: datetime | None = None
) -> PerMinute:
    """The last ``minutes`` minutes up to and including ``now``'s, from the read model.

    One indexed range query of at most ``minutes`` rows.

    Raises:
        ValueError: ``minutes`` is not between 1 and :data:`RETENTION_MINUTES`.
    """
    if not 1 <= minutes <= RETENTION_MINUTES:
        raise ValueError(f"minutes must be between 1 and {RETENTION_MINUTES}, got {minutes}")
    end = minute_of(now or datetime.now(UTC)) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    rows = await projections.query(
        ACTIVITY.name,
        Query(since=("minute", start), until=("minute", end), order=("minute",), limit=minutes),
    )
    events, errors = [0] * minutes, [0] * minutes
    totals: dict[str, int] = {}
    for row in rows:
        i = int((row["minute"] - start).total_seconds() // 60)
        events[i] += row["events"]
        errors[i] += row["errors"]
        by_source: Mapping[str, int] = row["sources"] or {}
        for source, n in by_source.items():
            totals[source] = totals.get(source, 0) + n
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return PerMinute(start, events, errors, ranked)
