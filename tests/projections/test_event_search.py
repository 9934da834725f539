"""The events index and the filtered listings over it, on every backend.

Each listing is checked against the source of truth: the same filter applied to every event
of the log, one by one. The read model is caught up only part of the way in some checks, so
the listings must merge the indexed part with the log past its checkpoint.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from contexten import Event
from contexten.exceptions import InvalidPattern
from contexten.projections import Projections, create_read_models
from contexten.projections.event_search import (
    FOLLOW_BATCH,
    EventQuery,
    follow_events,
    search_events,
)
from contexten.projections.events import EventsProjection
from contexten.store.base import EventStore, RecordedEvent

TYPES = [
    "github.pull_request.opened",
    "github.pull_request.closed",
    "github.push",
    "linear.issue.created",
    "linear.comment.created",
    "contexten.action.slack.post_message",
]


@pytest.fixture
def store(any_store: EventStore) -> EventStore:
    return any_store


async def _projections(store: EventStore) -> Projections:
    projections = Projections(store, create_read_models(store), batch_size=50)
    projections.add(EventsProjection())
    await projections.open()
    return projections


async def _fill(store: EventStore, n: int, seed: int = 7) -> list[RecordedEvent]:
    rng = random.Random(seed)
    ids: list[str] = []
    for i in range(n):
        cause = rng.choice(ids) if ids and rng.random() < 0.3 else None
        event = Event(
            type=rng.choice(TYPES),
            source=rng.choice(["github", "linear", "contexten"]),
            subject=rng.choice(["pr-1", "pr-2", None]),
            correlation_id=rng.choice(["ENG-1", "ENG-2", "ENG-3", None]),
            causation_id=cause,
            data={"i": i},
        )
        stream = "$audit-2026-01-01" if i % 17 == 0 else f"s-{i % 5}"
        await store.append(stream, [event])
        ids.append(event.id)
    return await store.read_all(limit=10_000)


async def _all_pages(
    projections: Projections,
    query: EventQuery,
    *,
    forward: bool,
    limit: int,
    budget: int,
    indexed: bool = True,
) -> list[int]:
    seen: list[int] = []
    cursor: int | None = 0 if forward else None
    for _ in range(10_000):
        if forward:
            page = await search_events(
                projections.store,
                query,
                projections=projections if indexed else None,
                after=cursor,
                limit=limit,
                budget=budget,
            )
        else:
            page = await search_events(
                projections.store,
                query,
                projections=projections if indexed else None,
                before=cursor,
                limit=limit,
                budget=budget,
            )
        seen.extend(r.position for r in page.events)
        if forward and page.cursor == cursor and not page.events:
            return seen
        if not forward and page.cursor is None:
            return seen
        cursor = page.cursor
    raise AssertionError("pagination did not end")


QUERIES = [
    EventQuery(),
    EventQuery(type="github.pull_request.*"),
    EventQuery(type="github.**", correlation_id="ENG-1"),
    EventQuery(type="*.*.created"),
    EventQuery(type="github.push"),
    EventQuery(type="nothing.matches.*"),
    EventQuery(source="linear", subject="pr-2"),
    EventQuery(correlation_id="ENG-3", hidden=("$audit-",)),
    EventQuery(hidden=("$audit-",)),
]


@pytest.mark.parametrize("mode", ["caught-up", "lagging", "no-index"])
async def test_listings_match_a_filter_over_the_whole_log(store: EventStore, mode: str) -> None:
    partial = mode == "lagging"
    records = await _fill(store, 240)
    projections = await _projections(store)
    try:
        runner = projections.runner("events")
        await runner.catch_up(until=150 if partial else None)
        if partial:
            assert 0 < (await projections.models.checkpoint("events")).position < 240
        middle = records[120].recorded_at
        queries = [
            *QUERIES,
            EventQuery(since=middle),
            EventQuery(as_of=middle, type="linear.**"),
            EventQuery(until=middle, source="github"),
            EventQuery(causation_id=records[3].event.id),
        ]
        for query in queries:
            match = query.predicate()
            expected = [r.position for r in records if match(r)]
            for limit, budget in ((7, 5_000), (50, 5_000), (3, 40)):
                backward = await _all_pages(
                    projections,
                    query,
                    forward=False,
                    limit=limit,
                    budget=budget,
                    indexed=mode != "no-index",
                )
                assert backward == expected[::-1], (query, limit, budget)
                forward = await _all_pages(
                    projections,
                    query,
                    forward=True,
                    limit=limit,
                    budget=budget,
                    indexed=mode != "no-index",
                )
                assert forward == expected, (query, limit, budget)
    finally:
        await projections.close()


async def test_pages_are_stable_while_events_are_appended(store: EventStore) -> None:
    await _fill(store, 60)
    projections = await _projections(store)
    try:
        await projections.catch_up()
        query = EventQuery(type="github.**")
        first = await search_events(
            projections.store, projections=projections, query=query, limit=5
        )
        assert first.cursor is not None
        await _fill(store, 30, seed=8)  # new events land above the first page
        rest = await search_events(
            projections.store, projections=projections, query=query, before=first.cursor, limit=1000
        )
        records = await store.read_all(limit=10_000)
        match = query.predicate()
        old = [r.position for r in records if match(r) and r.position <= 60]
        assert [r.position for r in first.events + rest.events] == old[::-1]
    finally:
        await projections.close()


async def test_as_of_sees_the_log_as_it_was(store: EventStore) -> None:
    records = await _fill(store, 30)
    projections = await _projections(store)
    try:
        await projections.catch_up()
        at = records[9].recorded_at
        page = await search_events(
            projections.store, projections=projections, query=EventQuery(as_of=at), limit=100
        )
        assert {r.position for r in page.events} == {
            r.position for r in records if r.recorded_at <= at
        }
        assert max(r.position for r in page.events) >= 10
        before_all = records[0].recorded_at - timedelta(days=1)
        assert (
            await search_events(
                projections.store, projections=projections, query=EventQuery(as_of=before_all)
            )
        ).events == []
    finally:
        await projections.close()


async def test_bad_requests_are_refused(store: EventStore) -> None:
    projections = await _projections(store)
    try:
        with pytest.raises(InvalidPattern):
            await search_events(
                projections.store, projections=projections, query=EventQuery(type="Bad Type")
            )
        with pytest.raises(ValueError, match="not both"):
            await search_events(
                projections.store, projections=projections, query=EventQuery(), before=3, after=1
            )
    finally:
        await projections.close()


async def test_follow_reads_in_bounded_batches_and_beats_when_quiet(store: EventStore) -> None:
    records = await _fill(store, 250)
    query = EventQuery(type="github.**", hidden=("$audit-",))
    match = query.predicate()
    ticks = []
    async for tick in follow_events(store, query, 0, seconds=0.6, heartbeat=0.1):
        ticks.append(tick)
    found = [r.position for t in ticks for r in t.events]
    assert found == [r.position for r in records if match(r)]
    assert all(len(t.events) <= FOLLOW_BATCH for t in ticks)
    assert len([t for t in ticks if t.events]) >= 250 // FOLLOW_BATCH  # one read at a time
    assert ticks[-1].events == []  # a heartbeat once the log went quiet
    assert ticks[-1].position == 250  # and it says how far the stream has looked

    async def gone() -> bool:
        return True

    assert [
        t async for t in follow_events(store, query, 0, seconds=5, heartbeat=0.1, gone=gone)
    ] == []


async def test_a_stream_whose_time_is_up_says_where_it_ended(store: EventStore) -> None:
    """Nothing matched and no heartbeat was due: the last tick still gives the position the
    stream looked up to, so the reconnection (its Last-Event-ID) does not read it again."""
    await _fill(store, 20)
    query = EventQuery(type="nothing.matches.*")
    ticks = [t async for t in follow_events(store, query, 0, seconds=0.3, heartbeat=60)]
    assert [(t.events, t.position) for t in ticks] == [([], 20)]
