"""Linear lookups (workflow states, labels) go through a bounded cache with a ttl, and the
events that change them drop the cached copy through a subscription of a real App."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from contexten import Event
from contexten.cache import MemoryCache, MultiLevelCache
from contexten.cache.store import StoreCache
from contexten.exceptions import PlatformRequestError
from contexten.integrations import linear
from contexten.integrations.client import ClientRegistry
from contexten.integrations.linear import LinearClient
from contexten.resilience import RetryPolicy
from contexten.store.sqlite import SqliteEventStore
from contexten.testing import VirtualClock, create_test_app
from contexten.testing.sandbox import Sandbox
from contexten.testing.sandbox.app import SANDBOX_TOKEN


@pytest.fixture
def lin(clients: ClientRegistry) -> LinearClient:
    return clients.get(LinearClient)


async def test_lookups_load_once_then_expire(
    lin: LinearClient, sandbox: Sandbox, clock: VirtualClock
) -> None:
    team = sandbox.linear.team["id"]
    stats = lin.lookup_cache.stats
    states = await asyncio.gather(*(lin.workflow_state(team, "Done") for _ in range(20)))
    assert {s["id"] for s in states} == {sandbox.linear.state_named(team, "Done")["id"]}
    await lin.label_ids(["agent"])
    await lin.label_ids(["bug", "agent"])
    assert stats.loads == 2  # one states read (20 concurrent lookups shared it), one labels
    await clock.advance(lin.lookup_ttl + 1)
    await lin.workflow_state(team, "Done")
    assert stats.loads == 3  # the ttl passed: read again


async def test_an_unknown_name_reads_again_once(lin: LinearClient, sandbox: Sandbox) -> None:
    team = sandbox.linear.team["id"]
    await lin.workflow_state(team, "Done")
    with pytest.raises(PlatformRequestError, match="no workflow state named 'Shipped'"):
        await lin.workflow_state(team, "Shipped")
    assert lin.lookup_cache.stats.loads == 2


async def test_invalidate_drops_only_what_the_event_changes(
    lin: LinearClient, sandbox: Sandbox
) -> None:
    team = sandbox.linear.team["id"]
    await lin.workflow_states(team)
    await lin.label_ids(["agent"])
    assert await lin.invalidate("linear.issue.updated", {"teamId": team}) == 0
    assert await lin.invalidate("linear.workflow_state.updated", {"teamId": "other"}) == 0
    assert await lin.invalidate("linear.workflow_state.updated", {"teamId": team}) == 1
    assert await lin.invalidate("linear.issue_label.created", {}) == 1
    await lin.workflow_states(team)
    assert await lin.invalidate("linear.workflow_state.removed", None) == 1  # no team: all
    assert lin.lookup_cache.stats.loads == 3


async def test_a_state_event_through_the_app_drops_the_stale_state(sandbox: Sandbox) -> None:
    app = create_test_app()
    app.use_agents(sandbox.clients(retry=RetryPolicy.no_retries()))
    app.add_subscription(linear.lookup_invalidation())
    team = sandbox.linear.team["id"]
    async with app:
        lin = app.clients.get(LinearClient)
        before = await lin.workflow_state(team, "In Progress")
        state = sandbox.linear.states[before["id"]]
        state["name"] = "Doing"  # renamed in Linear: the cached copy is now stale
        assert (await lin.workflow_state(team, "In Progress"))["id"] == before["id"]
        await app.publish(
            Event(
                type="linear.workflow_state.updated",
                source="linear",
                data={"type": "WorkflowState", "action": "update", "data": {"teamId": team}},
            )
        )
        async with asyncio.timeout(10):  # only catches a hang
            key = f"linear:workflow_states:{team}"
            while await lin.lookup_cache.get(key) is not None:  # noqa: ASYNC110 - the cache
                await asyncio.sleep(0.01)
        with pytest.raises(PlatformRequestError, match="no workflow state named 'In Progress'"):
            await lin.workflow_state(team, "In Progress")
        assert (await lin.workflow_state(team, "Doing"))["id"] == before["id"]


async def test_two_clients_share_lookups_through_the_store_level(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with SqliteEventStore(url) as one, SqliteEventStore(url) as two:
        clients = [
            LinearClient(
                base_url="http://127.0.0.1/linear",
                token=SANDBOX_TOKEN,
                transport=sandbox.transport(),
                lookup_cache=MultiLevelCache(MemoryCache(64), StoreCache(store)),
            )
            for store in (one, two)
        ]
        team = sandbox.linear.team["id"]
        try:
            for client in clients:  # two processes, one store
                assert (await client.workflow_state(team, "Done"))["name"] == "Done"
            assert [c.lookup_cache.stats.loads for c in clients] == [1, 0]
            await clients[1].invalidate("linear.workflow_state.updated", {"teamId": team})
            assert await StoreCache(one).get(f"linear:workflow_states:{team}") is None
        finally:
            for client in clients:
                await client.aclose()
