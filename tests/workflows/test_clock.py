"""The virtual clock: manual advance, due order, auto-advance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from contexten.clock import Clock
from contexten.testing import VirtualClock


async def test_advance_fires_due_timers_in_due_order() -> None:
    clock = VirtualClock(start=datetime(2030, 1, 1, tzinfo=UTC))
    fired: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        fired.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("c", 30), ("a", 10), ("b", 20))]
    await clock.settle()
    assert clock.pending_timers == 3
    assert clock.next_due == 10
    await clock.advance(15)
    assert fired == [("a", 10.0)]
    assert clock.now() == datetime(2030, 1, 1, 0, 0, 15, tzinfo=UTC)
    await clock.advance(timedelta(seconds=100))
    assert fired == [("a", 10.0), ("b", 20.0), ("c", 30.0)]
    assert clock.monotonic() == 115
    await asyncio.gather(*tasks)
    with pytest.raises(ValueError, match="backwards"):
        await clock.advance(-1)


async def test_timers_registered_by_woken_tasks_fire_within_the_same_advance() -> None:
    clock = VirtualClock()
    seen: list[float] = []

    async def chain() -> None:
        for _ in range(3):
            await clock.sleep(10)
            seen.append(clock.monotonic())

    task = asyncio.create_task(chain())
    await clock.advance(25)
    assert seen == [10.0, 20.0]
    await clock.advance(5)
    assert seen == [10.0, 20.0, 30.0]
    await task


async def test_auto_advance_skips_time_while_everyone_waits_on_the_clock() -> None:
    async with VirtualClock(auto_advance=True) as clock:
        order: list[int] = []

        async def sleeper(hours: int) -> None:
            await clock.sleep(hours * 3600)
            order.append(hours)

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(asyncio.gather(*(sleeper(h) for h in (24, 1, 12))), 30)
        assert order == [1, 12, 24]
        assert clock.monotonic() == 24 * 3600
        assert loop.time() - started < 30


async def test_cancelled_sleeps_leave_no_timer_behind() -> None:
    clock = VirtualClock()
    task = asyncio.create_task(clock.sleep(10))
    await clock.settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending_timers == 0
    assert await clock.run_timers() == 0


async def test_sleep_until_and_the_clock_port() -> None:
    clock = VirtualClock()
    assert isinstance(clock, Clock)
    target = clock.now() + timedelta(minutes=5)
    task = asyncio.create_task(clock.sleep_until(target))
    await clock.advance_to(target)
    await task
    assert clock.now() == target
    await clock.sleep(0)  # zero and negative sleeps return at once
    with pytest.raises(ValueError, match="timezone"):
        VirtualClock(start=datetime(2030, 1, 1))
