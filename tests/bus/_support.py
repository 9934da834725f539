"""Test support for the bus tests: a stepping clock and a store shared by successive apps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contexten.app import App
from contexten.clock import Clock
from contexten.store import EventStore, create_store
from contexten.store.memory import MemoryEventStore
from contexten.testing import TestApp

HANG_GUARD = 30.0
"""Seconds after which a test that waits for something is considered hung."""


class StepClock(Clock):
    """A clock whose sleeps return at once but move its time forward and are recorded."""

    def __init__(self) -> None:
        self._now = datetime(2030, 1, 1, tzinfo=UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return (self._now - datetime(2030, 1, 1, tzinfo=UTC)).total_seconds()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += timedelta(seconds=max(seconds, 0.0))
        await asyncio.sleep(0)


class Backend:
    """One store (memory or a SQLite file) that several apps can be started on in turn."""

    def __init__(self, kind: str, directory: Path, url: str | None = None) -> None:
        self.kind = kind
        if url is None:
            url = "memory://" if kind == "memory" else f"sqlite:///{directory / 'events.db'}"
        self.url = url
        self._memory = MemoryEventStore() if kind == "memory" else None

    def target(self) -> str | EventStore:
        """What to give App(): the shared memory store, or the URL."""
        return self._memory if self._memory is not None else self.url

    def app(self, **options: Any) -> App:
        """A new App on this store (like a new process, for SQLite)."""
        options.setdefault("checkpoint_interval", 0.01)
        return App(self.target(), **options)

    def test_app(self, **options: Any) -> TestApp:
        """A new TestApp (with event capture) on this store."""
        options.setdefault("clock", StepClock())
        return TestApp(self.target(), **options)

    @asynccontextmanager
    async def store(self) -> AsyncIterator[EventStore]:
        """Another open handle onto the store (a separate connection for SQLite)."""
        if self._memory is not None:
            await self._memory.open()
            yield self._memory
            return
        store = create_store(self.url)
        await store.open()
        try:
            yield store
        finally:
            await store.close()
