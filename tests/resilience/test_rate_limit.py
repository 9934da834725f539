"""Adaptive rate limiter and token bucket, on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from contexten.exceptions import RateLimited
from contexten.resilience.rate_limit import (
    ALL_BUCKETS,
    AdaptiveRateLimiter,
    RateLimitUpdate,
    TokenBucket,
)
from contexten.testing import VirtualClock


@pytest.fixture
async def clock() -> object:
    async with VirtualClock(auto_advance=True) as clock:
        yield clock


async def test_unknown_budget_does_not_wait(clock: VirtualClock) -> None:
    limiter = AdaptiveRateLimiter("github", clock=clock)
    await limiter.acquire("core")
    assert clock.monotonic() == 0


async def test_exhausted_budget_waits_for_the_reset(clock: VirtualClock) -> None:
    limiter = AdaptiveRateLimiter("github", clock=clock)
    limiter.update(RateLimitUpdate("core", remaining=2, limit=5000, reset_after=50))
    await limiter.acquire("core")
    await limiter.acquire("core")
    assert clock.monotonic() == 0
    await limiter.acquire("core")  # the third call waits for the window to refill
    assert clock.monotonic() == pytest.approx(50)
    assert limiter.snapshot()["core"].waits == 1


async def test_concurrent_callers_spend_the_budget_once(clock: VirtualClock) -> None:
    limiter = AdaptiveRateLimiter("github", clock=clock)
    limiter.update(RateLimitUpdate("core", remaining=3, reset_after=30))
    times: list[float] = []

    async def call() -> None:
        await limiter.acquire("core")
        times.append(clock.monotonic())

    await asyncio.gather(*(call() for _ in range(5)))
    assert sorted(times) == [0, 0, 0, pytest.approx(30), pytest.approx(30)]


async def test_retry_after_blocks_one_bucket_and_all_buckets(clock: VirtualClock) -> None:
    limiter = AdaptiveRateLimiter("slack", clock=clock)
    limiter.update(RateLimitUpdate("chat.postMessage", retry_after=30))
    assert limiter.delay("chat.postMessage") == pytest.approx(30)
    assert limiter.delay("chat.update") == 0
    limiter.update(RateLimitUpdate(ALL_BUCKETS, retry_after=60))
    assert limiter.delay("chat.update") == pytest.approx(60)


async def test_out_of_order_responses_keep_the_smallest_count(clock: VirtualClock) -> None:
    limiter = AdaptiveRateLimiter("github", clock=clock)
    limiter.update(RateLimitUpdate("core", remaining=10, reset_after=100))
    limiter.update(RateLimitUpdate("core", remaining=12, reset_after=100))
    assert limiter.snapshot()["core"].remaining == 10
    limiter.update(RateLimitUpdate("core", remaining=5000, reset_after=3600))  # a new window
    assert limiter.snapshot()["core"].remaining == 5000


async def test_deadline_and_max_wait(clock: VirtualClock) -> None:
    limiter = AdaptiveRateLimiter("linear", clock=clock, max_wait=20)
    limiter.update(RateLimitUpdate("requests", retry_after=30))
    with pytest.raises(RateLimited) as raised:
        await limiter.acquire("requests")
    assert raised.value.retry_after == pytest.approx(30)
    with pytest.raises(RateLimited):
        await limiter.acquire("requests", deadline=clock.monotonic() + 10)
    assert clock.monotonic() == 0, "refused at once, without waiting"


async def test_reserve_keeps_a_margin(clock: VirtualClock) -> None:
    limiter = AdaptiveRateLimiter("github", clock=clock, reserve=5)
    limiter.update(RateLimitUpdate("core", remaining=5, reset_after=10))
    await limiter.acquire("core")
    assert clock.monotonic() == pytest.approx(10)


async def test_token_bucket_paces(clock: VirtualClock) -> None:
    bucket = TokenBucket(rate=2.0, burst=2, clock=clock)
    times = []
    for _ in range(5):
        await bucket.acquire()
        times.append(clock.monotonic())
    assert times == [0, 0, pytest.approx(0.5), pytest.approx(1.0), pytest.approx(1.5)]
    with pytest.raises(RateLimited):
        await bucket.acquire(deadline=clock.monotonic())
