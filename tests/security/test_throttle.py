"""Failure throttling: N failures a window per client, then 429 until the oldest leaves."""

from __future__ import annotations

from datetime import UTC, datetime

from contexten.security import FailureThrottle
from contexten.testing import VirtualClock


async def test_the_limit_blocks_one_client_until_its_oldest_failure_leaves_the_window() -> None:
    clock = VirtualClock(datetime(2030, 1, 1, tzinfo=UTC))
    throttle = FailureThrottle(3, 60.0, clock=clock)
    assert [throttle.failed("a") for _ in range(3)] == [False, False, True]
    assert throttle.retry_after("a") == 60
    assert throttle.retry_after("b") is None  # other clients are not affected
    await clock.advance(59.5)
    assert throttle.retry_after("a") == 1
    await clock.advance(1)
    assert throttle.retry_after("a") is None


def test_zero_disables_it_and_memory_is_bounded() -> None:
    assert FailureThrottle(0).failed("a") is False
    assert FailureThrottle(0).retry_after("a") is None
    throttle = FailureThrottle(1, max_clients=100)
    for i in range(1_000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._failures) == 100
    assert throttle.retry_after("10.0.3.231") == 60  # the most recent are kept
