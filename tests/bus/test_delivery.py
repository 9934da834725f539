"""Delivery: every matching event at least once, filters, ordering, concurrency, emit."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from pathlib import Path

import pytest

from contexten import Event, HandlerContext, RetryPolicy
from contexten.routing import data_equals
from contexten.store import StreamState

from ._support import HANG_GUARD, Backend


def tick(n: int, *, key: str | None = None, type: str = "test.ticked") -> Event:
    return Event(type=type, source="tests", subject=key, data={"n": n})


async def test_every_matching_event_is_delivered(backend: Backend) -> None:
    app = backend.test_app()
    got: list[int] = []
    other: list[str] = []

    @app.on("test.ticked", name="ticks")
    async def on_tick(event: Event, ctx: HandlerContext) -> None:
        got.append(event.data["n"])

    @app.on(["test.*", "other.**"], name="wide")
    async def on_any(event: Event, ctx: HandlerContext) -> None:
        other.append(event.type)

    async with app:
        for n in range(50):
            await app.publish(tick(n))
        await app.publish(tick(0, type="other.thing.happened"))
        await app.publish(tick(0, type="unrelated.thing"))
        await app.drain(timeout=HANG_GUARD)
        assert sorted(got) == list(range(50))
        assert other.count("test.ticked") == 50
        assert other.count("other.thing.happened") == 1
        assert "unrelated.thing" not in other
        for status in app.dispatcher.statuses():
            assert status.position == await app.store.head()


async def test_events_stored_before_start_are_delivered(backend: Backend) -> None:
    async with backend.store() as store:
        for n in range(5):
            await store.append("s", [tick(n)])
    app = backend.test_app()
    got: list[int] = []

    @app.on("test.ticked", name="late-subscriber")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        got.append(event.data["n"])

    async with app:
        await app.drain(timeout=HANG_GUARD)
    assert sorted(got) == [0, 1, 2, 3, 4]


async def test_where_predicate_filters(backend: Backend) -> None:
    app = backend.test_app()
    got: list[int] = []

    @app.on("test.ticked", where=data_equals("n", 3), name="only-three")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        got.append(event.data["n"])

    async with app:
        for n in range(6):
            await app.publish(tick(n))
        await app.drain(timeout=HANG_GUARD)
    assert got == [3]


async def test_where_predicate_that_raises_is_retried_then_parked(backend: Backend) -> None:
    app = backend.test_app()
    got: list[int] = []

    def picky(event: Event) -> bool:
        if event.data["n"] == 1:
            raise KeyError("no such field")
        return True

    @app.on("test.ticked", where=picky, retry=RetryPolicy(maximum_attempts=2), name="picky")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        got.append(event.data["n"])

    async with app:
        for n in range(3):
            await app.publish(tick(n))
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
    assert sorted(got) == [0, 2]
    assert (letter.error_type, letter.attempts) == ("KeyError", 2)


async def test_order_per_key_under_concurrency(backend: Backend) -> None:
    app = backend.test_app()
    seen: dict[str, list[int]] = defaultdict(list)
    running = 0
    most = 0
    rng = random.Random(7)

    @app.on("test.ticked", concurrency=8, name="ordered")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(rng.random() / 1000)
        seen[event.subject or ""].append(event.data["n"])
        running -= 1

    keys = [f"key-{k}" for k in range(12)]
    published: dict[str, list[int]] = defaultdict(list)
    async with app:
        for n in range(240):
            key = rng.choice(keys)
            published[key].append(n)
            await app.publish(tick(n, key=key))
        await app.drain(timeout=HANG_GUARD)
    assert dict(seen) == dict(published)
    assert most <= 8


async def test_keys_run_in_parallel(backend: Backend) -> None:
    app = backend.test_app()
    running = 0
    all_in = asyncio.Event()

    @app.on("test.ticked", concurrency=5, name="parallel")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        nonlocal running
        running += 1
        if running == 5:
            all_in.set()
        await all_in.wait()  # only returns if 5 different keys run at the same time

    async with app:
        for n in range(5):
            await app.publish(tick(n, key=f"k{n}"))
        await app.drain(timeout=HANG_GUARD)
    assert all_in.is_set()


async def test_same_key_runs_one_at_a_time(backend: Backend) -> None:
    app = backend.test_app()
    running = 0
    most = 0

    @app.on("test.ticked", concurrency=10, name="serial")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)
        running -= 1

    async with app:
        for n in range(10):
            await app.publish(Event(type="test.ticked", correlation_id="work-1", data={"n": n}))
        await app.drain(timeout=HANG_GUARD)
    assert most == 1


async def test_concurrency_bound_holds(backend: Backend) -> None:
    app = backend.test_app()
    running = 0
    most = 0
    gate = asyncio.Event()
    full = asyncio.Event()

    @app.on("test.ticked", concurrency=3, name="bounded")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running == 3:
            full.set()
        await gate.wait()
        running -= 1

    async with app:
        for n in range(20):
            await app.publish(tick(n))  # no key: no ordering constraint at all
        await asyncio.wait_for(full.wait(), HANG_GUARD)
        for _ in range(50):
            await asyncio.sleep(0)
        assert running == 3
        gate.set()
        await app.drain(timeout=HANG_GUARD)
    assert most == 3


async def test_system_streams_are_not_delivered_unless_asked(backend: Backend) -> None:
    app = backend.test_app()
    plain: list[str] = []
    system: list[str] = []

    @app.on("**", name="plain")
    async def on_plain(event: Event, ctx: HandlerContext) -> None:
        plain.append(event.type)

    @app.on("internal.**", name="system", include_system=True)
    async def on_system(event: Event, ctx: HandlerContext) -> None:
        system.append(event.type)

    async with app:
        await app.store.append("$internal-1", [tick(0, type="internal.recorded")])
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
    assert plain == ["test.ticked"]
    assert system == ["internal.recorded"]
    assert all(e.type != "internal.recorded" for e in app.capture.events)


async def test_emit_inherits_correlation_and_is_stored_once(backend: Backend) -> None:
    app = backend.test_app()
    attempts: list[int] = []
    keys: set[str] = set()

    @app.on("test.ticked", retry=RetryPolicy(maximum_attempts=3), name="emitter")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        attempts.append(ctx.attempt)
        keys.add(ctx.idempotency_key)
        await ctx.emit("test.first", {"from": event.data["n"]})
        await ctx.emit(Event(type="test.second", source="tests"))
        if ctx.attempt < 3:
            raise RuntimeError("flaky")

    cause = Event(type="test.ticked", correlation_id="LIN-7", data={"n": 1})
    async with app:
        await app.publish(cause)
        await app.drain(timeout=HANG_GUARD)
        emitted = app.capture.of_type("test.first") + app.capture.of_type("test.second")
    assert attempts == [1, 2, 3]
    assert keys == {f"emitter:{cause.id}"}
    assert [e.type for e in emitted] == ["test.first", "test.second"]
    for e in emitted:
        assert e.correlation_id == "LIN-7"
        assert e.causation_id == cause.id
    assert emitted[0].data == {"from": 1}


async def test_start_now_skips_history_but_not_what_comes_while_stopped(
    backend: Backend,
) -> None:
    async with backend.store() as store:
        await store.append("s", [tick(0), tick(1)])
    got: list[int] = []

    async def handler(event: Event, ctx: HandlerContext) -> None:
        got.append(event.data["n"])

    app = backend.test_app()
    app.on("test.ticked", start="now", name="fresh")(handler)
    async with app:
        await app.publish(tick(2))
        await app.drain(timeout=HANG_GUARD)
    async with backend.store() as store:
        await store.append("s", [tick(3)])  # while no app runs
    again = backend.test_app()
    again.on("test.ticked", start="now", name="fresh")(handler)
    async with again:
        await again.drain(timeout=HANG_GUARD)
    assert got == [2, 3]


async def test_ordering_key_function(backend: Backend) -> None:
    app = backend.test_app()
    seen: list[int] = []

    @app.on("test.ticked", concurrency=10, key=lambda e: "all", name="one-lane")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(random.random() / 1000)
        seen.append(event.data["n"])

    async with app:
        for n in range(30):
            await app.publish(tick(n, key=f"k{n}"))
        await app.drain(timeout=HANG_GUARD)
    assert seen == list(range(30))


async def test_publish_returns_where_it_was_stored(backend: Backend) -> None:
    app = backend.test_app()
    async with app:
        first = await app.publish(tick(1, key="octo/repo#1"), dedup_key="delivery-1")
        again = await app.publish(tick(1, key="octo/repo#1"), dedup_key="delivery-1")
        named = await app.publish(tick(2), stream="custom", expected_version=StreamState.NO_STREAM)
        stored = await app.store.read_stream(first.stream)
    assert first.stream == "tests-octo/repo#1"
    assert (again.deduplicated, again.last_position) == (True, first.last_position)
    assert named.stream == "custom"
    assert [r.event.data["n"] for r in stored] == [1]


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_many_events_small_concurrency(backend: Backend, concurrency: int) -> None:
    app = backend.test_app()
    count = 0

    @app.on("test.ticked", concurrency=concurrency, name="small")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        nonlocal count
        count += 1

    async with app:
        for n in range(300):
            await app.publish(tick(n, key=f"k{n % 7}" if n % 2 else None))
        await app.drain(timeout=HANG_GUARD)
    assert count == 300


async def test_the_reader_does_not_run_unboundedly_ahead() -> None:
    backend = Backend("memory", Path("."))
    app = backend.test_app(capture=False)
    gate = asyncio.Event()
    started = asyncio.Event()

    @app.on("test.ticked", concurrency=1, name="stuck")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        started.set()
        await gate.wait()

    async with app:
        for n in range(3000):
            await app.publish(tick(n))
        await asyncio.wait_for(started.wait(), HANG_GUARD)
        for _ in range(100):
            await asyncio.sleep(0)
        [status] = app.dispatcher.statuses()
        assert 1000 <= status.fetched < 1500  # max_buffered (1,000) + at most one batch
        gate.set()
        await app.drain(timeout=HANG_GUARD)


async def test_key_none_means_no_ordering(backend: Backend) -> None:
    app = backend.test_app()
    running = 0
    all_in = asyncio.Event()

    @app.on("test.ticked", concurrency=3, key=None, name="unordered")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        nonlocal running
        running += 1
        if running == 3:
            all_in.set()
        await all_in.wait()  # three events of the same subject run at once

    async with app:
        for n in range(3):
            await app.publish(tick(n, key="same"))
        await app.drain(timeout=HANG_GUARD)
