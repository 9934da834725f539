"""The supervisor restarts crashed background loops with backoff, counts and logs crashes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from contexten.clock import Clock
from contexten.resilience.retry import RetryPolicy
from contexten.resilience.supervisor import Supervisor, TaskState

HANG_GUARD = 30.0


class SkippingClock(Clock):
    """Sleeps return at once (after a yield); the time moves on and sleeps are recorded."""

    def __init__(self) -> None:
        self._now = datetime(2030, 1, 1, tzinfo=UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._now.timestamp()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


BACKOFF = RetryPolicy(
    initial_interval=0.1, backoff_coefficient=2, maximum_interval=0.5, maximum_attempts=0, jitter=0
)


async def test_a_crashing_task_is_restarted_with_capped_backoff() -> None:
    clock = SkippingClock()
    supervisor = Supervisor(clock=clock, backoff=BACKOFF)
    runs = 0
    steady = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs <= 5:
            raise OSError(f"crash {runs}")
        steady.set()
        await asyncio.Event().wait()

    with capture_logs() as logs:
        supervisor.start("loop", loop)
        await asyncio.wait_for(steady.wait(), HANG_GUARD)
    status = supervisor.status("loop")
    assert (status.state, status.restarts, status.last_error) == (
        TaskState.RUNNING,
        5,
        "OSError: crash 5",
    )
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert supervisor.restarts == {"loop": 5}
    crashes = [e for e in logs if e["event"] == "supervised task crashed; restarting"]
    assert [e["restarts"] for e in crashes] == [1, 2, 3, 4, 5]
    assert all(e["log_level"] == "error" and e["task"] == "loop" for e in crashes)
    assert isinstance(crashes[0]["exc_info"], OSError)
    await supervisor.stop()
    assert supervisor.status("loop").state is TaskState.STOPPED


async def test_backoff_starts_over_after_a_healthy_run() -> None:
    clock = SkippingClock()
    supervisor = Supervisor(clock=clock, backoff=BACKOFF, healthy_after=10.0)
    runs = 0
    done = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            await clock.sleep(60)  # a long, healthy run before the next crash
        if runs == 5:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError("again")

    supervisor.start("loop", loop)
    await asyncio.wait_for(done.wait(), HANG_GUARD)
    await supervisor.stop()
    assert clock.sleeps == [0.1, 0.2, 60, 0.1, 0.2]


async def test_a_task_that_returns_is_finished_not_restarted() -> None:
    supervisor = Supervisor(clock=SkippingClock())
    runs = 0
    ran = asyncio.Event()

    async def once() -> None:
        nonlocal runs
        runs += 1
        ran.set()

    supervisor.start("once", once)
    await asyncio.wait_for(ran.wait(), HANG_GUARD)
    for _ in range(3):
        await asyncio.sleep(0)
    assert runs == 1
    assert supervisor.status("once").state is TaskState.FINISHED
    ran.clear()
    supervisor.start("once", once)  # a finished name can be started again
    await asyncio.wait_for(ran.wait(), HANG_GUARD)
    await supervisor.stop()
    assert runs == 2


async def test_stop_cancels_everything_and_names_are_unique() -> None:
    supervisor = Supervisor(clock=SkippingClock())
    cancelled: list[str] = []

    def forever(name: str) -> object:
        async def run() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(name)
                raise

        return run

    supervisor.start("a", forever("a"))  # type: ignore[arg-type]
    supervisor.start("b", forever("b"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already running"):
        supervisor.start("a", forever("a"))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert "a" in supervisor
    await supervisor.stop()
    assert sorted(cancelled) == ["a", "b"]
    assert [s.state for s in supervisor.statuses()] == [TaskState.STOPPED, TaskState.STOPPED]


async def test_a_task_may_have_its_own_backoff() -> None:
    clock = SkippingClock()
    supervisor = Supervisor(clock=clock, backoff=BACKOFF)
    short = RetryPolicy(
        initial_interval=0.01,
        backoff_coefficient=3,
        maximum_interval=0.05,
        maximum_attempts=0,
        jitter=0,
    )
    runs = 0
    done = asyncio.Event()

    async def crashes_three_times() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise OSError(f"crash {runs}")
        done.set()

    supervisor.start("own", crashes_three_times, backoff=short)
    await asyncio.wait_for(done.wait(), HANG_GUARD)
    assert clock.sleeps == pytest.approx([0.01, 0.03, 0.05])
    assert supervisor.status("own").restarts == 3
