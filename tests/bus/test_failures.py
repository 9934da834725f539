"""Failing handlers: retries with backoff, timeouts, cancellation, parking in the DLQ."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from contexten import Event, HandlerContext, NonRetryableError, RetryPolicy
from contexten.bus import DeadLetterStatus
from contexten.bus.partitions import subscription_checkpoint
from contexten.exceptions import StoreUnavailable
from contexten.store import Append, AppendResult
from contexten.store.memory import MemoryEventStore
from contexten.testing import TestApp

from ._support import HANG_GUARD, Backend, StepClock

NO_JITTER = RetryPolicy(initial_interval=1.0, backoff_coefficient=2.0, jitter=0.0)


def tick(n: int, *, key: str | None = None) -> Event:
    return Event(type="test.ticked", source="tests", subject=key, data={"n": n})


async def test_retries_with_backoff_then_dead_letter(backend: Backend, clock: StepClock) -> None:
    app = backend.test_app(clock=clock)
    attempts: list[int] = []
    policy = RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=3.0, maximum_attempts=4, jitter=0
    )

    @app.on("test.ticked", retry=policy, name="always-fails")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        attempts.append(ctx.attempt)
        raise ValueError(f"cannot handle {event.data['n']}")

    event = tick(7)
    async with app:
        start = clock.now()  # only the retries' sleeps move it; they may begin at once
        result = await app.publish(event)
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
        health = await app.health()
    assert attempts == [1, 2, 3, 4]
    assert clock.sleeps == [1.0, 2.0, 3.0]  # doubling, capped at maximum_interval
    assert letter.subscription == "always-fails"
    assert (letter.event_id, letter.position, letter.event_type) == (
        event.id,
        result.last_position,
        "test.ticked",
    )
    assert (letter.error_type, letter.error_message, letter.attempts) == (
        "ValueError",
        "cannot handle 7",
        4,
    )
    assert letter.first_failure_at == start
    assert letter.last_failure_at == start + timedelta(seconds=6)
    assert letter.status is DeadLetterStatus.PARKED
    assert health.dead_letters == 1
    [sub] = [s for s in health.subscriptions if s.name == "always-fails"]
    assert (sub.parked, sub.failed_attempts, sub.lag) == (1, 4, 0)


async def test_success_after_retries_is_not_parked(backend: Backend) -> None:
    app = backend.test_app()
    attempts = 0

    @app.on("test.ticked", retry=NO_JITTER, name="flaky")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("try later")

    async with app:
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        assert await app.dead_letters.list() == []
    assert attempts == 3


async def test_non_retryable_errors_go_straight_to_the_dlq(backend: Backend) -> None:
    app = backend.test_app()
    calls: list[str] = []

    class Rejected(NonRetryableError):
        pass

    @app.on("test.ticked", retry=NO_JITTER, name="rejects")
    async def rejects(event: Event, ctx: HandlerContext) -> None:
        calls.append("rejects")
        raise Rejected("bad input")

    policy = RetryPolicy(non_retryable_error_types=["KeyError"])

    @app.on("test.ticked", retry=policy, name="configured")
    async def configured(event: Event, ctx: HandlerContext) -> None:
        calls.append("configured")
        raise KeyError("missing")

    async with app:
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        letters = await app.dead_letters.list()
    assert sorted(calls) == ["configured", "rejects"]
    assert sorted((x.subscription, x.error_type, x.attempts) for x in letters) == [
        ("configured", "KeyError", 1),
        ("rejects", "Rejected", 1),
    ]


async def test_handler_timeout(backend: Backend) -> None:
    app = backend.test_app()
    finished: list[int] = []

    @app.on("test.ticked", timeout=0.05, retry=RetryPolicy(maximum_attempts=2), name="slow")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        if event.data["n"] == 0:
            await asyncio.sleep(HANG_GUARD * 2)
        finished.append(event.data["n"])

    async with app:
        await app.publish(tick(0))
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
    assert finished == [1]
    assert (letter.error_type, letter.attempts) == ("HandlerTimeout", 2)


async def test_handler_that_swallows_the_timeout_and_finishes_counts_as_done(
    backend: Backend,
) -> None:
    app = backend.test_app()
    finished: list[int] = []

    @app.on("test.ticked", timeout=0.02, name="stubborn")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(HANG_GUARD * 2)
        finished.append(event.data["n"])
        await asyncio.sleep(0)  # the worker must not be cancelled again afterwards

    async with app:
        await app.publish(tick(0))
        await app.drain(timeout=HANG_GUARD)
        assert await app.dead_letters.list() == []
    assert finished == [0]


async def test_cancelled_handler_is_a_failure_and_the_app_keeps_running(
    backend: Backend,
) -> None:
    app = backend.test_app()
    handled: list[int] = []

    @app.on("test.ticked", retry=RetryPolicy(maximum_attempts=2), name="cancelled")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        if event.data["n"] == 0:
            inner = asyncio.get_running_loop().create_future()
            inner.cancel()
            await inner  # raises CancelledError, not from shutdown
        handled.append(event.data["n"])

    async with app:
        await app.publish(tick(0))
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
        assert app.running
    assert handled == [1]
    assert (letter.error_type, letter.attempts) == ("HandlerCancelled", 2)


async def test_a_parked_event_does_not_block_its_key(backend: Backend) -> None:
    app = backend.test_app()
    handled: list[int] = []

    @app.on("test.ticked", retry=RetryPolicy.no_retries(), name="blocked?")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        if event.data["n"] == 1:
            raise RuntimeError("poison")
        handled.append(event.data["n"])

    async with app:
        for n in range(4):
            await app.publish(tick(n, key="same-key"))
        await app.drain(timeout=HANG_GUARD)
        [status] = [s for s in app.dispatcher.statuses() if s.name == "blocked?"]
        head = await app.store.head()
        letters = await app.dead_letters.list()
    assert handled == [0, 2, 3]
    assert len(letters) == 1
    assert status.position == head  # the checkpoint moved past the parked event
    async with backend.store() as store:
        assert await subscription_checkpoint(store, "blocked?") == head


async def test_a_retrying_event_holds_back_only_its_own_key(backend: Backend) -> None:
    app = backend.test_app()
    release = asyncio.Event()
    order: list[str] = []

    async def slow_clock_sleep(seconds: float) -> None:
        await release.wait()

    app.clock.sleep = slow_clock_sleep  # type: ignore[method-assign]

    @app.on("test.ticked", retry=NO_JITTER, name="partial")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        label = f"{event.subject}{event.data['n']}"
        if label == "a0" and ctx.attempt == 1:
            order.append("a0-failed")
            raise RuntimeError("first try fails")
        order.append(label)
        if label == "b1":
            release.set()

    async with app:
        await app.publish(tick(0, key="a"))
        await app.publish(tick(1, key="a"))
        await app.publish(tick(1, key="b"))
        await app.drain(timeout=HANG_GUARD)
    assert order.index("b1") < order.index("a0")  # b went on while a waited to retry
    assert order.index("a0") < order.index("a1")  # a kept its order


class _ParkingFails(MemoryEventStore):
    """A memory store whose first two dead-letter appends fail (the disk is full)."""

    failures = 2

    async def commit(self, appends: Sequence[Append], **kwargs: Any) -> list[AppendResult]:
        if self.failures and any(a.stream.startswith("$dlq-") for a in appends):
            self.failures -= 1
            raise StoreUnavailable("disk full")
        return await super().commit(appends, **kwargs)


async def test_parking_is_retried_until_the_store_takes_it(clock: StepClock) -> None:
    store = _ParkingFails()
    app = TestApp(store, clock=clock)

    @app.on("test.ticked", retry=RetryPolicy.no_retries(), name="poisoned")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        raise RuntimeError("poison")

    async with app:
        await app.publish(tick(1))
        await app.drain(timeout=HANG_GUARD)
        [letter] = await app.dead_letters.list()
    assert store.failures == 0
    assert letter.error_type == "RuntimeError"
    assert clock.sleeps == [0.05, 0.1]
