"""The ``activity`` read model (events and parked handler failures per minute) on every
backend: counts against the log itself, the bounded ring, rebuilds, restarts.

The store is real (memory, SQLite, PostgreSQL); the minute arithmetic is checked by folding
records with chosen ``recorded_at`` times through a real batch and a real commit, because a
store stamps its own clock and a test cannot wait a week.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contexten import Event
from contexten.bus.dead_letters import PARKED, park
from contexten.projections import (
    ProjectionBatch,
    ProjectionRunner,
    Projections,
    Put,
    Query,
    create_read_models,
)
from contexten.projections.activity import (
    ACTIVITY,
    MAX_SOURCES,
    OTHER,
    RETENTION_MINUTES,
    ActivityProjection,
    minute_of,
    per_minute,
)
from contexten.store import EventStore
from contexten.store.base import RecordedEvent
from contexten.store.sqlite import SqliteEventStore

HANG_GUARD = 60
T0 = datetime(2026, 3, 2, 9, 30, 0, tzinfo=UTC)


@pytest.fixture
def store(any_store: EventStore) -> EventStore:
    return any_store


@pytest.fixture
async def projections(store: EventStore) -> AsyncIterator[Projections]:
    registry = Projections(store, create_read_models(store), batch_size=7)
    registry.add(ActivityProjection())
    await registry.open()
    try:
        yield registry
    finally:
        await registry.close()


def _record(
    position: int, at: datetime, *, type_: str = "test.thing", source: str = "x"
) -> RecordedEvent:
    return RecordedEvent(position, f"s-{position}", 1, at, Event(type=type_, source=source))


async def _fold(projections: Projections, records: list[RecordedEvent]) -> None:
    """Fold ``records`` as one batch and commit it with the checkpoint (what a runner does)."""
    projection = ActivityProjection()
    models = projections.models
    checkpoint = await models.checkpoint(projection.name)
    batch = ProjectionBatch(models, {ACTIVITY.name: ACTIVITY}, shadow=False)
    for record in records:
        await projection.apply(record, batch)
    await projection.flush(batch)
    await models.commit(
        projection, batch.writes, expected=checkpoint.position, position=records[-1].position
    )


async def test_counts_match_the_log_and_parked_letters_are_errors(
    store: EventStore, projections: Projections
) -> None:
    for n in range(23):
        source = "github" if n % 3 == 0 else "linear"
        await store.append(f"s-{n % 4}", [Event(type="test.thing", source=source)])
    for n in range(2):
        now = datetime.now(UTC)
        await park(
            store,
            subscription="handler",
            event=Event(type="test.thing", subject=f"x-{n}"),
            position=n + 1,
            error=RuntimeError("boom"),
            attempts=3,
            first_failure_at=now,
            last_failure_at=now,
            now=now,
        )
    async with asyncio.timeout(HANG_GUARD):
        await projections.catch_up()
    log = await store.read_all(after=0, limit=1000)
    window = await per_minute(projections, minutes=60)
    assert sum(window.events) == len(log) == 25
    assert sum(window.errors) == sum(1 for r in log if r.event.type == PARKED) == 2
    by_source = dict(window.sources)
    assert by_source["github"] == 8
    assert by_source["linear"] == 15
    assert sum(by_source.values()) == 25
    # every count sits in the minute its event was recorded in
    expected = [0] * 60
    for r in log:
        expected[int((minute_of(r.recorded_at) - window.start).total_seconds() // 60)] += 1
    assert window.events == expected


async def test_minutes_are_bucketed_oldest_first_with_gaps_as_zero(
    projections: Projections,
) -> None:
    records = [
        _record(1, T0 + timedelta(seconds=5)),
        _record(2, T0 + timedelta(seconds=59, microseconds=999_999)),
        _record(3, T0 + timedelta(minutes=1)),
        _record(4, T0 + timedelta(minutes=3, seconds=1), type_=PARKED),
        _record(5, T0 + timedelta(minutes=3, seconds=2)),
    ]
    await _fold(projections, records[:3])
    await _fold(projections, records[3:])  # a second batch adds to the rows of the first
    window = await per_minute(projections, minutes=5, now=T0 + timedelta(minutes=4, seconds=30))
    assert window.start == T0
    assert window.events == [2, 1, 0, 2, 0]
    assert window.errors == [0, 0, 0, 1, 0]
    later = await per_minute(projections, minutes=2, now=T0 + timedelta(minutes=3))
    assert later.events == [0, 2]  # the window ends with the current minute, inclusive
    with pytest.raises(ValueError, match="minutes"):
        await per_minute(projections, minutes=0)


async def test_the_ring_is_bounded_and_recycles_week_old_minutes(
    projections: Projections,
) -> None:
    week = timedelta(minutes=RETENTION_MINUTES)
    await _fold(projections, [_record(1, T0), _record(2, T0 + timedelta(seconds=1))])
    # the same slot a week later: the old minute is replaced, not added to
    await _fold(projections, [_record(3, T0 + week, source="later")])
    # a late record older than the retention changes nothing
    await _fold(projections, [_record(4, T0 + timedelta(seconds=30))])
    assert await projections.count(ACTIVITY.name) == 1
    row = await projections.get(ACTIVITY.name, *ACTIVITY.key_of(
        (await projections.query(ACTIVITY.name, Query()))[0]))  # fmt: skip
    assert row is not None
    assert (row["minute"], row["events"], row["sources"]) == (T0 + week, 1, {"later": 1})
    old = await per_minute(projections, minutes=10, now=T0 + timedelta(minutes=5))
    assert sum(old.events) == 0  # the recycled slot no longer answers for a week ago
    # a whole week of minutes, one event each, then more: never more rows than slots
    start = T0 + 2 * week
    records = [_record(10 + i, start + timedelta(minutes=i)) for i in range(RETENTION_MINUTES + 50)]
    for i in range(0, len(records), 2_000):
        await _fold(projections, records[i : i + 2_000])
    assert await projections.count(ACTIVITY.name) == RETENTION_MINUTES
    newest = await per_minute(
        projections, minutes=60, now=start + timedelta(minutes=RETENTION_MINUTES + 49)
    )
    assert newest.events == [1] * 60


async def test_sources_beyond_the_cap_count_as_other(projections: Projections) -> None:
    records = [
        _record(i + 1, T0 + timedelta(seconds=i % 50), source=f"src-{i:02d}")
        for i in range(MAX_SOURCES + 5)
    ]
    await _fold(projections, records)
    window = await per_minute(projections, minutes=1, now=T0)
    by_source = dict(window.sources)
    assert len(by_source) == MAX_SOURCES + 1
    assert by_source[OTHER] == 5
    assert sum(by_source.values()) == window.events[0] == MAX_SOURCES + 5


async def test_a_rebuild_reaches_the_rows_the_live_fold_wrote(
    store: EventStore, projections: Projections
) -> None:
    for n in range(40):
        await store.append("s", [Event(type="test.thing", source=f"s{n % 3}")])
    async with asyncio.timeout(HANG_GUARD):
        await projections.catch_up()
    live = await projections.query(ACTIVITY.name, Query(order=("slot",), limit=1000))
    # damage the table: a rebuild from the log must put it right
    bogus = {**live[0], "events": 999, "errors": 7}
    head = await store.head()
    await projections.models.commit(
        ActivityProjection(), [Put(ACTIVITY.name, bogus)], expected=head, position=head
    )
    assert await projections.query(ACTIVITY.name, Query(order=("slot",), limit=1000)) != live
    async with asyncio.timeout(HANG_GUARD):
        assert await projections.rebuild("activity") == await store.head()
    rebuilt = await projections.query(ACTIVITY.name, Query(order=("slot",), limit=1000))
    assert rebuilt == live
    assert sum(r["events"] for r in rebuilt) == 40


async def test_rows_and_checkpoint_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    for round_ in range(2):
        async with SqliteEventStore(url) as store:
            for _ in range(5):
                await store.append("s", [Event(type="test.thing", source="x")])
            models = create_read_models(store)
            await models.open()
            try:
                runner = ProjectionRunner(store, models, ActivityProjection(), batch_size=3)
                async with asyncio.timeout(HANG_GUARD):
                    assert await runner.catch_up() == 5 * (round_ + 1)
                rows = await models.query(ACTIVITY, Query(limit=100))
                assert sum(r["events"] for r in rows) == 5 * (round_ + 1)  # none twice
            finally:
                await models.close()
