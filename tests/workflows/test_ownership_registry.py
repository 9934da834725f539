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
