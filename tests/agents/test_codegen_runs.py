"""The App follows the Codegen runs its actions started, by polling, across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from contexten import App, Event
from contexten.agents.codegen_runs import LEASE_GROUP, AgentRunWatcher, run_stream
from contexten.exceptions import PlatformUnavailable
from contexten.integrations import codegen
from contexten.integrations.action import ActionRecord
from contexten.resilience import RetryPolicy
from contexten.store import create_store
from contexten.store.base import EventStore
from contexten.testing.sandbox import Sandbox

HANG_GUARD = 20.0


async def run_events(store: EventStore) -> list[Event]:
    return [
        r.event
        for r in await store.read_all(limit=10_000)
        if r.event.type.startswith("codegen.agent_run.")
    ]


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not await check():  # noqa: ASYNC110 - the store is what we watch
            await asyncio.sleep(0.02)


def _app(store: EventStore, sandbox: Sandbox) -> App:
    app = App(store=store)
    app.use_agents(sandbox.clients(retry=RetryPolicy.no_retries()))
    return app


async def test_runs_started_through_the_app_become_events_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    sandbox = Sandbox()
    store = create_store(f"sqlite:///{tmp_path / 'runs.db'}")
    await store.open()
    try:
        app = _app(store, sandbox)
        async with app:
            cause = Event(type="linear.issue.updated", source="linear", correlation_id="ENG-9")
            with app.acting(cause):
                run = await codegen.create_agent_run("ENG-9 Add SSO", repo="acme/api")

            async def created() -> bool:
                return [e.type for e in await run_events(store)] == ["codegen.agent_run.created"]

            await until(created)
        # The app is down while the run moves on; a new app resumes from the store.
        sandbox.codegen.advance(force=True)
        sandbox.codegen.advance(force=True)
        assert sandbox.codegen.runs[run["id"]]["status"] == "completed"
        async with _app(store, sandbox):

            async def completed() -> bool:
                return any(e.type.endswith(".completed") for e in await run_events(store))

            await until(completed)
            await asyncio.sleep(0.5)  # a few more rounds: nothing more may be stored
        events = await run_events(store)
    finally:
        await store.close()
    # The restarted watcher knew "created" was stored: it went straight to what changed.
    assert [e.type for e in events] == ["codegen.agent_run.created", "codegen.agent_run.completed"]
    assert {e.correlation_id for e in events} == {"ENG-9"}
    assert {e.subject for e in events} == {f"agent_run/{run['id']}"}


def _create_action(run_id: int, correlation_id: str) -> Event:
    record = ActionRecord("codegen", "create_agent_run", result={"id": run_id})
    return record.to_event().replace(correlation_id=correlation_id)


async def test_watcher_reads_its_work_from_the_store_and_stores_each_change_once() -> None:
    sandbox = Sandbox()
    store = create_store("memory://")
    await store.open()
    async with sandbox.clients(retry=RetryPolicy.no_retries()) as clients:
        run = sandbox.codegen.start_run("ENG-2 Fix", {})
        await store.append("actions-codegen", [_create_action(run["id"], "ENG-2")])
        first, second = AgentRunWatcher(store, clients), AgentRunWatcher(store, clients)
        assert await first.poll_once() == 1
        # A second worker reads the status the first stored: nothing new to store.
        assert await second.poll_once() == 0
        assert second.watching == {str(run["id"]): "queued"}
        assert len(await run_events(store)) == 1
        assert first.watching == {str(run["id"]): "queued"}
        sandbox.codegen.finish_all()
        assert await first.poll_once() == 1
        assert first.watching == {}  # finished: no longer polled
        assert await first.poll_once() == 0
        third = AgentRunWatcher(store, clients)
        assert await third.poll_once() == 0  # a finished run is not resumed
    events = await store.read_stream(run_stream(str(run["id"])))
    assert [r.event.type for r in events] == [
        "codegen.agent_run.created",
        "codegen.agent_run.completed",
    ]
    await store.close()


async def test_a_round_whose_reads_all_fail_raises_for_backoff() -> None:
    sandbox = Sandbox()
    store = create_store("memory://")
    await store.open()
    async with sandbox.clients(retry=RetryPolicy.no_retries()) as clients:
        run = sandbox.codegen.start_run("ENG-3 Fix", {})
        await store.append("actions-codegen", [_create_action(run["id"], "ENG-3")])
        watcher = AgentRunWatcher(store, clients)
        sandbox.inject("status", platform="codegen", method="GET", status=503)
        with pytest.raises(PlatformUnavailable):
            await watcher.poll_once()
        assert await run_events(store) == []
        assert watcher.watching == {str(run["id"]): ""}  # still watched
        watcher._failures = 3
        assert watcher._interval() == pytest.approx(sandbox.config.codegen_poll_interval * 8)
    await store.close()


async def test_an_app_that_starts_no_run_opens_no_codegen_client() -> None:
    sandbox = Sandbox()
    store = create_store("memory://")
    app = App(store=store)
    app.use_agents(sandbox.clients())
    async with app:
        await asyncio.sleep(0.05)
        assert app.clients.clients() == {}


async def test_one_watcher_polls_at_a_time_by_lease(tmp_path: Path) -> None:
    """Every dispatching process starts a watcher; only the lease holder reads the runs, and
    another takes over (reading the statuses from the store) once the holder is gone."""
    sandbox = Sandbox()
    store = create_store(f"sqlite:///{tmp_path / 'lease.db'}")
    await store.open()
    async with sandbox.clients(retry=RetryPolicy.no_retries()) as clients:
        run = sandbox.codegen.start_run("ENG-4 Fix", {})
        await store.append("actions-codegen", [_create_action(run["id"], "ENG-4")])
        one = AgentRunWatcher(store, clients, owner="host/1/a", lease_ttl=60)
        two = AgentRunWatcher(store, clients, owner="host/2/b", lease_ttl=60)
        assert await one.poll_once() == 1
        assert await two.poll_once() == 0
        assert two.watching == {}  # it read nothing: the lease is held
        [lease] = await store.partitions(LEASE_GROUP)
        assert (lease.owner, lease.held) == ("host/1/a", True)
        sandbox.codegen.finish_all()
        await store.remove_worker("host/1/a")  # the holder stopped: its lease is freed
        assert await two.poll_once() == 1  # "completed", after reading "queued" as stored
        assert await one.poll_once() == 0  # the lease is the other's now
    events = await store.read_stream(run_stream(str(run["id"])))
    assert [r.event.type for r in events] == [
        "codegen.agent_run.created",
        "codegen.agent_run.completed",
    ]
    await store.close()
