"""Workflow instance ownership rides on the store's worker registry (store clock, leases)."""

from __future__ import annotations

import asyncio

from contexten.store.memory import MemoryEventStore
from contexten.workflows._ownership import Ownership, new_owner_id


async def test_an_engine_on_another_host_is_gone_once_its_registration_lapses() -> None:
    async with MemoryEventStore() as store:
        other = Ownership(store, "elsewhere/4242/abcd", lease=0.2)
        await other.beat()
        assert [w.worker_id for w in await store.workers()] == ["elsewhere/4242/abcd"]
        me = Ownership(store, new_owner_id(), lease=10.0)
        assert not await me.gone("elsewhere/4242/abcd")
        await asyncio.sleep(0.3)  # no heartbeat for longer than its lease
        assert await Ownership(store, new_owner_id(), lease=10.0).gone("elsewhere/4242/abcd")


async def test_a_released_engine_is_gone_at_once() -> None:
    async with MemoryEventStore() as store:
        other = Ownership(store, "elsewhere/7/beef", lease=30.0)
        await other.beat()
        me = Ownership(store, new_owner_id(), lease=30.0)
        assert not await me.gone("elsewhere/7/beef")
        await other.release()
        assert await Ownership(store, new_owner_id(), lease=30.0).gone("elsewhere/7/beef")
        assert await store.workers() == []


async def test_an_engine_of_this_process_is_gone_once_stopped() -> None:
    async with MemoryEventStore() as store:
        mine = Ownership(store, new_owner_id(), lease=30.0)
        await mine.beat()
        judge = Ownership(store, new_owner_id(), lease=30.0)
        assert not await judge.gone(mine.owner)
        await mine.release()
        assert await Ownership(store, new_owner_id(), lease=30.0).gone(mine.owner)


async def test_a_running_engine_adopts_an_instance_whose_owner_never_ran_at_its_heartbeat() -> None:
    """An instance started through an engine that does not run (a web process that only
    stores, say) has an owner that never registered: the running engine's tail sees whose it
    is, and its next heartbeat adopts it (no periodic scan here: ``adopt_interval=0``)."""
    from typing import Any

    from contexten.workflows import WorkflowEngine

    def define(engine: WorkflowEngine) -> None:
        @engine.workflow("hello")
        async def hello(wf: Any, name: str) -> str:
            return f"hello {name}"

    async with MemoryEventStore() as store:
        runner = WorkflowEngine(store, lease=1.0, heartbeat=0.05, adopt_interval=0)
        define(runner)
        storer = WorkflowEngine(store)  # never started
        define(storer)
        async with runner:
            handle = await storer.start_workflow("hello", "ada", workflow_id="h1")
            assert await asyncio.wait_for(handle.result(), 30) == "hello ada"
            assert (await runner.get_workflow("h1")).history[1].kind == "claimed"
