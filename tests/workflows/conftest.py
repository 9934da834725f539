"""Fixtures for the workflow tests: every scenario runs on the memory and the SQLite store."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from contexten.clock import Clock
from contexten.exceptions import WorkflowNotFound
from contexten.store import EventStore
from contexten.store.memory import MemoryEventStore
from contexten.store.sqlite import SqliteEventStore
from contexten.testing import VirtualClock
from contexten.workflows import WorkflowEngine

HANG_GUARD = 30.0
"""Seconds after which a test waiting for a workflow is considered hung."""

Setup = Callable[[WorkflowEngine], None]


async def until(predicate: Callable[[], bool | Awaitable[bool]]) -> None:
    """Poll ``predicate`` until it holds (failing after :data:`HANG_GUARD` seconds)."""
    async with asyncio.timeout(HANG_GUARD):
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.002)


async def until_status(engine: WorkflowEngine, workflow_id: str, status: str) -> None:
    """Wait until instance ``workflow_id`` exists and has ``status``."""

    async def check() -> bool:
        try:
            return (await engine.get_workflow(workflow_id)).status == status
        except WorkflowNotFound:
            return False

    await until(check)


class Env:
    """A store (memory, or a SQLite file) on which engines can be started and restarted.

    Restarting on SQLite closes the store handle and opens a new one on the same file, as a
    new process would; on memory the one store object lives on.
    """

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.url = "memory://" if kind == "memory" else f"sqlite:///{directory / 'events.db'}"
        self._memory = MemoryEventStore() if kind == "memory" else None
        self._stores: list[EventStore] = []
        self._engines: list[WorkflowEngine] = []
        self._clocks: list[VirtualClock] = []

    async def open_store(self) -> EventStore:
        """Another open handle on the store."""
        store: EventStore = self._memory or SqliteEventStore(self.url)
        await store.open()
        if self._memory is None:
            self._stores.append(store)
        return store

    def clock(self, *, auto: bool = True) -> VirtualClock:
        """A virtual clock closed at teardown (auto-advancing by default)."""
        clock = VirtualClock(auto_advance=auto)
        self._clocks.append(clock)
        return clock

    async def engine(
        self, setup: Setup, *, clock: Clock | None = None, start: bool = True, **options: Any
    ) -> WorkflowEngine:
        """A new engine on a new store handle, with ``setup`` registering its workflows."""
        store = await self.open_store()
        engine = WorkflowEngine(store, clock=clock or self.clock(), **options)
        setup(engine)
        self._engines.append(engine)
        if start:
            await engine.start()
        return engine

    async def restart(
        self, engine: WorkflowEngine, setup: Setup, *, clock: Clock | None = None, **options: Any
    ) -> WorkflowEngine:
        """Stop ``engine`` (as if its process died) and start a new one on the same store."""
        await engine.stop()
        if self._memory is None:
            await engine.store.close()
        return await self.engine(setup, clock=clock or engine.clock, **options)

    async def close(self) -> None:
        for engine in self._engines:
            await engine.stop()
        for clock in self._clocks:
            await clock.aclose()
        for store in self._stores:
            await store.close()
        if self._memory is not None:
            await self._memory.close()


@pytest.fixture(params=["memory", "sqlite"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    """The store the test runs on: each test runs once per backend."""
    environment = Env(request.param, tmp_path)
    try:
        yield environment
    finally:
        await environment.close()


@pytest.fixture
async def memory_env(tmp_path: Path) -> AsyncIterator[Env]:
    """Only the memory store (for tests about logic, not storage)."""
    environment = Env("memory", tmp_path)
    try:
        yield environment
    finally:
        await environment.close()
