"""Durable timers and waits: time skipping, due order, restarts, early events, timeouts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from contexten.events import Event
from contexten.exceptions import WorkflowTimeoutError
from contexten.testing import VirtualClock
from contexten.workflows import WorkflowEngine, WorkflowStatus

from .conftest import HANG_GUARD, Env, until, until_status


async def test_a_24_hour_sleep_completes_instantly_on_the_virtual_clock(env: Env) -> None:
    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("nap")
        async def nap(wf: Any, _: Any) -> list[str]:
            before = wf.now()
            await wf.sleep(timedelta(hours=24))
            return [before.isoformat(), wf.now().isoformat()]

    clock = env.clock(auto=True)
    engine = await env.engine(setup, clock=clock)
    loop = asyncio.get_running_loop()
    real_start = loop.time()
    before, after = await (await engine.start_workflow("nap", None)).result(timeout=HANG_GUARD)
    assert (clock.now() - clock.now().replace(year=2030, month=1, day=1)).days >= 1
    from datetime import datetime

    assert datetime.fromisoformat(after) - datetime.fromisoformat(before) == timedelta(hours=24)
    assert loop.time() - real_start < HANG_GUARD


async def test_timers_fire_in_due_order(env: Env) -> None:
    finished: list[str] = []

    async def note(name: str) -> None:
        finished.append(name)

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("sleeper")
        async def sleeper(wf: Any, hours: int) -> None:
            await wf.sleep(timedelta(hours=hours))
            await wf.step(note, f"{hours}h")

    clock = env.clock(auto=False)
    engine = await env.engine(setup, clock=clock)
    for hours in (3, 1, 2):
        await engine.start_workflow("sleeper", hours, workflow_id=f"sleep-{hours}")
    for hours in (3, 1, 2):
        await until_status(engine, f"sleep-{hours}", WorkflowStatus.SLEEPING)
    info = await engine.get_workflow("sleep-1")
    assert info.current_step == "sleep"
    await clock.advance(timedelta(minutes=90))
    await until_status(engine, "sleep-1", WorkflowStatus.COMPLETED)
    assert finished == ["1h"]
    await clock.advance(timedelta(hours=5))
    for hours in (2, 3):
        await engine.get_handle(f"sleep-{hours}").result(timeout=HANG_GUARD)
    assert finished == ["1h", "2h", "3h"]


async def test_timers_survive_a_restart_and_fire_at_once_when_overdue(env: Env) -> None:
    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("alarm")
        async def alarm(wf: Any, _: Any) -> str:
            await wf.sleep(3600)
            return wf.now().isoformat()

    clock = env.clock(auto=False)
    engine = await env.engine(setup, clock=clock)
    await engine.start_workflow("alarm", None, workflow_id="a1")
    await until_status(engine, "a1", WorkflowStatus.SLEEPING)
    await engine.stop()
    later = env.clock(auto=False)  # the next process starts two hours later
    await later.advance(timedelta(hours=2))
    engine = await env.restart(engine, setup, clock=later)
    result = await engine.get_handle("a1").result(timeout=HANG_GUARD)
    assert result == later.now().isoformat()


async def test_a_restarted_timer_that_is_not_due_waits_for_its_time(env: Env) -> None:
    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("alarm")
        async def alarm(wf: Any, _: Any) -> None:
            await wf.sleep(3600)

    clock = env.clock(auto=False)
    engine = await env.engine(setup, clock=clock)
    await engine.start_workflow("alarm", None, workflow_id="a2")
    await until_status(engine, "a2", WorkflowStatus.SLEEPING)
    engine = await env.restart(engine, setup, clock=clock)
    await clock.advance(1800)
    assert (await engine.get_workflow("a2")).status is WorkflowStatus.SLEEPING
    await clock.advance(1800)
    await engine.get_handle("a2").result(timeout=HANG_GUARD)


def _waiter(engine: WorkflowEngine, gate: asyncio.Event | None = None) -> None:
    async def hold() -> None:
        if gate is not None:
            await gate.wait()

    @engine.workflow("waiter")
    async def waiter(wf: Any, order: str) -> dict[str, Any]:
        await wf.step(hold)
        paid = await wf.wait_for("shop.payment.*", correlation_id=order)
        shipped = await wf.wait_for(
            "shop.shipped", match=lambda e: e.data.get("order") == order, timeout=3600
        )
        return {"paid": paid.data, "shipped": shipped.data["carrier"]}


async def test_wait_for_matches_events_by_pattern_correlation_and_predicate(env: Env) -> None:
    engine = await env.engine(_waiter, clock=env.clock(auto=False))
    handle = await engine.start_workflow("waiter", "o1", workflow_id="w1")
    await until_status(engine, "w1", WorkflowStatus.WAITING)
    store = engine.store
    await store.append(
        "shop", [Event(type="shop.payment.made", correlation_id="o2", data={"n": 0})]
    )
    await store.append("shop", [Event(type="shop.refund.made", correlation_id="o1")])
    await store.append(
        "shop", [Event(type="shop.payment.made", correlation_id="o1", data={"n": 1})]
    )
    await store.append("shop", [Event(type="shop.shipped", data={"order": "o2", "carrier": "x"})])
    await store.append("shop", [Event(type="shop.shipped", data={"order": "o1", "carrier": "ups"})])
    assert await handle.result(timeout=HANG_GUARD) == {"paid": {"n": 1}, "shipped": "ups"}


async def test_an_event_that_arrived_before_the_wait_is_not_missed(env: Env) -> None:
    gate = asyncio.Event()
    engine = await env.engine(lambda e: _waiter(e, gate), clock=env.clock(auto=False))
    handle = await engine.start_workflow("waiter", "o1", workflow_id="w2")
    store = engine.store
    # Both events arrive while the workflow is still in its first step, before any wait.
    await store.append(
        "shop", [Event(type="shop.payment.made", correlation_id="o1", data={"n": 1})]
    )
    await store.append("shop", [Event(type="shop.shipped", data={"order": "o1", "carrier": "dhl"})])
    head = await store.head()
    await until(lambda: engine.waits.tail >= head)  # the engine has seen them go by
    gate.set()
    assert await handle.result(timeout=HANG_GUARD) == {"paid": {"n": 1}, "shipped": "dhl"}


async def test_events_before_the_start_do_not_count(env: Env) -> None:
    engine = await env.engine(_waiter, clock=env.clock(auto=False))
    old = Event(type="shop.payment.made", correlation_id="o1", data={"n": "old"})
    await engine.store.append("shop", [old])
    handle = await engine.start_workflow("waiter", "o1", workflow_id="w3")
    await until_status(engine, "w3", WorkflowStatus.WAITING)
    await engine.store.append("shop", [old.replace(id="new-id", data={"n": "new"})])
    await engine.store.append(
        "shop", [Event(type="shop.shipped", data={"order": "o1", "carrier": "c"})]
    )
    assert (await handle.result(timeout=HANG_GUARD))["paid"] == {"n": "new"}


async def test_a_wait_survives_a_restart_and_sees_events_from_while_it_was_down(env: Env) -> None:
    engine = await env.engine(_waiter, clock=env.clock(auto=False))
    await engine.start_workflow("waiter", "o1", workflow_id="w4")
    await until_status(engine, "w4", WorkflowStatus.WAITING)
    await engine.stop()
    store = await env.open_store()
    await store.append(
        "shop", [Event(type="shop.payment.made", correlation_id="o1", data={"n": 4})]
    )
    await store.append("shop", [Event(type="shop.shipped", data={"order": "o1", "carrier": "fx"})])
    engine = await env.restart(engine, _waiter)
    result = await engine.get_handle("w4").result(timeout=HANG_GUARD)
    assert result == {"paid": {"n": 4}, "shipped": "fx"}


async def test_a_wait_timeout_raises_an_error_the_workflow_can_catch(env: Env) -> None:
    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("patient")
        async def patient(wf: Any, _: Any) -> str:
            try:
                await wf.wait_for("never.happens", timeout=timedelta(hours=4))
            except WorkflowTimeoutError as e:
                return f"gave up: {type(e).__name__}"
            return "got it"

    clock = env.clock(auto=False)
    engine = await env.engine(setup, clock=clock)
    handle = await engine.start_workflow("patient", None, workflow_id="p1")
    await until_status(engine, "p1", WorkflowStatus.WAITING)
    await clock.advance(timedelta(hours=3))
    assert (await engine.get_workflow("p1")).status is WorkflowStatus.WAITING
    await clock.advance(timedelta(hours=1))
    assert await handle.result(timeout=HANG_GUARD) == "gave up: WorkflowTimeoutError"
    assert issubclass(WorkflowTimeoutError, TimeoutError)
    kinds = [h.kind for h in (await engine.get_workflow("p1")).history]
    assert kinds == ["started", "wait_started", "wait_timed_out", "completed"]


async def test_a_wait_deadline_that_passed_while_down_times_out_on_restart(env: Env) -> None:
    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("patient")
        async def patient(wf: Any, _: Any) -> str:
            with pytest.raises(WorkflowTimeoutError):
                await wf.wait_for("never.happens", timeout=60)
            return "timed out"

    clock = env.clock(auto=False)
    engine = await env.engine(setup, clock=clock)
    await engine.start_workflow("patient", None, workflow_id="p2")
    await until_status(engine, "p2", WorkflowStatus.WAITING)
    later = VirtualClock(start=clock.now() + timedelta(minutes=5))
    engine = await env.restart(engine, setup, clock=later)
    await later.settle()
    await later.run_timers()
    assert await engine.get_handle("p2").result(timeout=HANG_GUARD) == "timed out"
