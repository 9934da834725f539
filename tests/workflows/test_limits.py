"""Concurrency limits: per workflow and per key; parked instances give their slot back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contexten.events import Event
from contexten.workflows import WorkflowEngine, WorkflowStatus

from .conftest import HANG_GUARD, Env, until, until_status


class Gauge:
    """Counts steps running at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.gate = asyncio.Event()

    async def work(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await self.gate.wait()
        finally:
            self.now -= 1


async def test_at_most_max_concurrent_instances_run_at_once(memory_env: Env) -> None:
    gauge = Gauge()

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("limited", max_concurrent=2)
        async def limited(wf: Any, _: Any) -> None:
            await wf.step(gauge.work)

    engine = await memory_env.engine(setup)
    handles = [await engine.start_workflow("limited", None) for _ in range(6)]
    await until(lambda: gauge.now == 2)
    await asyncio.sleep(0.01)
    assert gauge.now == 2
    gauge.gate.set()
    await asyncio.gather(*(h.result(timeout=HANG_GUARD) for h in handles))
    assert gauge.peak == 2


async def test_the_per_key_limit_serialises_instances_of_one_key(memory_env: Env) -> None:
    gauge = Gauge()
    running: dict[str, int] = {}
    peaks: dict[str, int] = {}

    async def per_key(issue: str) -> None:
        running[issue] = running.get(issue, 0) + 1
        peaks[issue] = max(peaks.get(issue, 0), running[issue])
        try:
            await gauge.work()
        finally:
            running[issue] -= 1

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("agent", max_per_key=1, concurrency_key=lambda e: e.correlation_id)
        async def agent(wf: Any, event: Event) -> None:
            await wf.step(per_key, event.correlation_id)

    engine = await memory_env.engine(setup)
    handles = []
    for i in range(6):
        event = Event(type="linear.issue.updated", correlation_id=f"LIN-{i % 2}")
        handles.append(await engine.start_workflow("agent", event))
    await until(lambda: gauge.now == 2)
    await asyncio.sleep(0.01)
    assert sorted(running.values()) == [1, 1]
    gauge.gate.set()
    await asyncio.gather(*(h.result(timeout=HANG_GUARD) for h in handles))
    assert peaks == {"LIN-0": 1, "LIN-1": 1}


async def test_waiting_instances_do_not_hold_a_slot(env: Env) -> None:
    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("one-at-a-time", max_concurrent=1)
        async def one(wf: Any, n: int) -> int:
            await wf.wait_for("go.ahead", correlation_id=str(n))
            return n

    engine = await env.engine(setup)
    handles = [await engine.start_workflow("one-at-a-time", n, f"n{n}") for n in range(3)]
    for n in range(3):  # all three reach their wait although only one may run at a time
        await until_status(engine, f"n{n}", WorkflowStatus.WAITING)
    for n in range(3):
        await engine.store.append("go", [Event(type="go.ahead", correlation_id=str(n))])
    assert [await h.result(timeout=HANG_GUARD) for h in handles] == [0, 1, 2]


def test_limits_must_be_positive() -> None:
    from contexten.store.memory import MemoryEventStore

    engine = WorkflowEngine(MemoryEventStore())
    with pytest.raises(ValueError, match="at least 1"):
        engine.register(lambda wf, _: asyncio.sleep(0), name="bad", max_concurrent=0)


def test_a_per_key_limit_needs_its_key_function() -> None:
    from contexten import App
    from contexten.exceptions import ConfigurationError

    app = App("memory://")
    with pytest.raises(ConfigurationError, match="max_per_key needs concurrency_key"):
        app.workflow("bad", on="x.y", max_per_key=1)(lambda wf, e: asyncio.sleep(0))


async def test_app_workflow_honours_max_per_key() -> None:
    from contexten import App, Workflow
    from contexten.clock import WallClock

    app = App("memory://", clock=WallClock())
    running: dict[str, int] = {}
    peaks: dict[str, int] = {}

    async def work(repo: str) -> None:
        running[repo] = running.get(repo, 0) + 1
        peaks[repo] = max(peaks.get(repo, 0), running[repo])
        try:
            await asyncio.sleep(0.02)
        finally:
            running[repo] -= 1

    @app.workflow(
        "review", on="github.push", max_per_key=1, concurrency_key=lambda e: e.data["repo"]
    )
    async def review(wf: Workflow, event: Event) -> None:
        await wf.step(work, event.data["repo"])

    async with app:
        for i in range(8):
            await app.publish(Event(type="github.push", source="t", data={"repo": f"r{i % 2}"}))

        async def all_done() -> bool:
            return len(await app.workflows.list_workflows("completed")) == 8

        await until(all_done)
    assert peaks == {"r0": 1, "r1": 1}


async def test_a_slot_the_store_would_not_take_back_is_given_back_before_the_next() -> None:
    from contexten.exceptions import StoreUnavailable
    from contexten.store.memory import MemoryEventStore
    from contexten.workflows._limits import Limiter

    class ReleaseFails(MemoryEventStore):
        failures = 0

        async def release_slot(self, group: str, holder: str) -> None:
            if self.failures:
                self.failures -= 1
                raise StoreUnavailable("the store is down")
            await super().release_slot(group, holder)

    async with ReleaseFails() as store:
        await store.heartbeat("me", ttl=30)
        limiter = Limiter(max_concurrent=1, name="w")
        first = limiter.slot(None, holder="a", store=store, owner="me")
        second = limiter.slot(None, holder="b", store=store, owner="me")
        await first.acquire()
        store.failures = 3
        await first.release()  # gives up after its tries: the store still counts the slot
        assert not await store.acquire_slot("wf:w", "probe", "me", limit=1)
        await asyncio.wait_for(second.acquire(), HANG_GUARD)  # gives the leaked one back first
        assert second.held
        assert not await store.acquire_slot("wf:w", "probe", "me", limit=1)
