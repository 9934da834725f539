"""Bulkhead: bounded concurrency, bounded queue, FIFO, cancellation-safe."""

from __future__ import annotations

import asyncio

import pytest

from contexten.exceptions import BulkheadFull
from contexten.resilience.bulkhead import Bulkhead


async def test_bounds_concurrency_and_refuses_past_the_queue() -> None:
    bulkhead = Bulkhead("codegen", max_concurrent=2, max_queue=1)
    gate = asyncio.Event()
    peak = 0

    async def work() -> None:
        nonlocal peak
        async with bulkhead:
            peak = max(peak, bulkhead.stats().active)
            await gate.wait()

    tasks = [asyncio.create_task(work()) for _ in range(3)]
    await asyncio.sleep(0)
    assert bulkhead.stats().active == 2
    assert bulkhead.stats().queued == 1
    with pytest.raises(BulkheadFull, match="codegen"):
        await bulkhead.acquire()
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    stats = bulkhead.stats()
    assert (peak, stats.active, stats.queued, stats.rejected) == (2, 0, 0, 1)


async def test_waiters_are_served_in_order() -> None:
    bulkhead = Bulkhead("x", max_concurrent=1, max_queue=10)
    order: list[int] = []
    await bulkhead.acquire()

    async def waiter(i: int) -> None:
        async with bulkhead:
            order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
    await asyncio.sleep(0)
    bulkhead.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [0, 1, 2, 3, 4]


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    bulkhead = Bulkhead("x", max_concurrent=1, max_queue=5)
    await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    bulkhead.release()
    assert bulkhead.stats().active == 0
    await asyncio.wait_for(bulkhead.acquire(), 5)
    assert bulkhead.stats().active == 1


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        Bulkhead("x", 0)
