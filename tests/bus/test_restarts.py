"""Stops, crashes and restarts: nothing lost, only unfinished work redelivered."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from contexten import App, Event, HandlerContext
from contexten.bus.partitions import subscription_checkpoint
from contexten.exceptions import AppNotRunning, StoreUnavailable
from contexten.store import EventStore, RecordedEvent
from contexten.store.memory import MemoryEventStore
from contexten.store.sqlite import SqliteEventStore
from contexten.testing import TestApp

from ._support import HANG_GUARD, Backend, StepClock

CONSUMER = Path(__file__).with_name("_consumer_process.py")


def tick(n: int, key: str | None = None) -> Event:
    return Event(type="test.ticked", source="tests", subject=key, data={"n": n})


async def test_clean_stop_mid_stream_redelivers_only_unfinished_events(
    backend: Backend,
) -> None:
    blocked = {6, 9}
    first_run: list[int] = []
    enough = asyncio.Event()
    can_finish = 20 - 7  # 6 and 9 hang; 10, 14, 18 and 13, 17 wait behind them (same keys)

    async def stuck(event: Event, ctx: HandlerContext) -> None:
        if event.data["n"] in blocked:
            await asyncio.Event().wait()
        first_run.append(event.data["n"])
        if len(first_run) == can_finish:
            enough.set()

    app = backend.app(shutdown_grace=0.05)
    app.on("test.ticked", name="worker", concurrency=8)(stuck)
    positions: dict[int, int] = {}
    async with app:
        for n in range(20):
            positions[n] = (await app.publish(tick(n, key=f"k{n % 4}"))).last_position
        await asyncio.wait_for(enough.wait(), HANG_GUARD)
    async with backend.store() as store:
        checkpoint = await subscription_checkpoint(store, "worker")
    assert checkpoint == positions[5]  # the contiguous done prefix: 0..5

    second_run: list[int] = []

    async def fine(event: Event, ctx: HandlerContext) -> None:
        second_run.append(event.data["n"])

    again = backend.app()
    again.on("test.ticked", name="worker", concurrency=8)(fine)
    async with again:
        await again.drain(timeout=HANG_GUARD)
    unfinished = set(range(20)) - set(first_run)
    assert unfinished == {6, 9, 10, 13, 14, 17, 18}
    # Each key's partition keeps its own checkpoint: only the unfinished events come again.
    assert set(second_run) == unfinished
    assert set(first_run) | set(second_run) == set(range(20))


async def test_in_flight_handlers_finish_within_the_grace_period(backend: Backend) -> None:
    started = asyncio.Event()
    done: list[int] = []

    async def slow(event: Event, ctx: HandlerContext) -> None:
        started.set()
        await asyncio.sleep(0.05)
        done.append(event.data["n"])

    app = backend.app(shutdown_grace=HANG_GUARD)
    app.on("test.ticked", name="graceful")(slow)
    async with app:
        result = await app.publish(tick(1))
        await asyncio.wait_for(started.wait(), HANG_GUARD)
    assert done == [1]
    async with backend.store() as store:
        assert await subscription_checkpoint(store, "graceful") == result.last_position


async def test_abandoned_worker_process_then_a_new_app_on_the_same_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    total = 300
    async with SqliteEventStore(url) as store:
        for n in range(0, total, 10):
            for k in range(10):
                await store.append(f"s{k}", [tick(n + k, key=f"k{k}")])
        positions = {r.event.data["n"]: r.position for r in await store.read_all(limit=total)}
    async with asyncio.timeout(HANG_GUARD):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CONSUMER),
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert await proc.stdout.readline() == b"ready\n", await proc.stderr.read()
        lines = [await proc.stdout.readline() for _ in range(total // 3)]
        os.kill(proc.pid, signal.SIGKILL)  # no clean stop: in-flight work and unsaved progress
        lines += (await proc.stdout.read()).splitlines(keepends=True)
        await proc.stderr.read()
        assert await proc.wait() == -signal.SIGKILL
    first_run = {int(x) for x in lines if x.endswith(b"\n")}
    async with SqliteEventStore(url) as store:
        checkpoint = await subscription_checkpoint(store, "killed")
    assert checkpoint is not None
    # Whatever the checkpoint covers was handled before the kill.
    assert {n for n, p in positions.items() if p <= checkpoint} <= first_run

    second_run: list[int] = []
    app = App(url)

    @app.on("test.ticked", name="killed")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        second_run.append(event.data["n"])

    async with app:
        await app.drain(timeout=HANG_GUARD)
    assert set(second_run) == {n for n, p in positions.items() if p > checkpoint}
    assert len(second_run) == len(set(second_run))
    assert first_run | set(second_run) == set(range(total))


def _flaky(base: type[EventStore], **fail: int) -> type[EventStore]:
    """``base`` with its methods named in ``fail`` raising StoreUnavailable that many times."""

    class Flaky(base):  # type: ignore[valid-type, misc]
        failures = dict(fail)

        def _maybe_fail(self, name: str) -> None:
            task = asyncio.current_task()
            if task is not None and task.get_name().startswith("projection:"):
                return  # the faults are aimed at the dispatcher, not the read models
            if self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                raise StoreUnavailable(f"{name}: the disk went away")

        async def read_all(self, **kwargs: Any) -> list[RecordedEvent]:
            self._maybe_fail("read_all")
            return await super().read_all(**kwargs)  # type: ignore[no-any-return]

        async def save_checkpoint(self, name: str, position: int) -> None:
            self._maybe_fail("save_checkpoint")
            await super().save_checkpoint(name, position)

        async def save_checkpoints(self, leases: Any) -> Any:
            self._maybe_fail("save_checkpoint")  # a consumer saving its partition checkpoints
            return await super().save_checkpoints(leases)

        async def commit(self, *args: Any, **kwargs: Any) -> Any:
            self._maybe_fail("commit")
            return await super().commit(*args, **kwargs)

    return Flaky


def _open_flaky(backend: Backend, **fail: int) -> EventStore:
    if backend.kind == "memory":
        return _flaky(MemoryEventStore, **fail)()
    if backend.kind == "postgres":
        from contexten.store.postgres import PostgresEventStore

        return _flaky(PostgresEventStore, **fail)(backend.url)
    return _flaky(SqliteEventStore, **fail)(backend.url)


async def test_crashed_reader_is_restarted_and_delivery_continues(backend: Backend) -> None:
    store = _open_flaky(backend, read_all=2, save_checkpoint=1)
    app = TestApp(store, clock=StepClock(), capture=False)
    got: list[int] = []

    @app.on("test.ticked", name="resilient")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        got.append(event.data["n"])

    try:
        with capture_logs() as logs:
            async with app:
                for n in range(5):
                    await app.publish(tick(n))
                await app.drain(timeout=HANG_GUARD)
                health = await app.health()
                checkpoint = await subscription_checkpoint(store, "resilient")
    finally:
        await store.close()
    assert sorted(got) == [0, 1, 2, 3, 4]
    [sub] = health.subscriptions
    assert sub.restarts == 3
    assert sub.state == "running"
    assert health.supervisor_restarts["dispatch:resilient:reader"] == 2
    assert health.supervisor_restarts["dispatch:resilient:checkpoint"] == 1
    assert checkpoint == health.store.head
    crashes = [e for e in logs if e["event"] == "supervised task crashed; restarting"]
    assert len(crashes) == 3
    assert all(isinstance(e["exc_info"], StoreUnavailable) for e in crashes)


async def test_publish_failure_reaches_the_caller_and_stores_nothing(backend: Backend) -> None:
    store = _open_flaky(backend, commit=1)
    app = App(store)
    got: list[int] = []

    @app.on("test.ticked", name="never")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        got.append(event.data["n"])

    try:
        async with app:
            with pytest.raises(StoreUnavailable):
                await app.publish(tick(1))
            assert await store.head() == 0
            await app.publish(tick(2))
            await app.drain(timeout=HANG_GUARD)
    finally:
        await store.close()
    assert got == [2]


async def test_publish_needs_a_running_app(backend: Backend) -> None:
    app = backend.app()
    with pytest.raises(AppNotRunning):
        await app.publish(tick(1))
    async with app:
        pass
    with pytest.raises(AppNotRunning):
        await app.publish(tick(1))
    with pytest.raises(AppNotRunning):
        await app.drain()


async def test_the_same_app_can_start_again(backend: Backend) -> None:
    app = backend.app()
    got: list[int] = []

    @app.on("test.ticked", name="twice")
    async def handler(event: Event, ctx: HandlerContext) -> None:
        got.append(event.data["n"])

    for n in range(2):
        async with app:
            await app.publish(tick(n))
            await app.drain(timeout=HANG_GUARD)
    assert got == [0, 1]


async def test_emits_of_a_redelivered_handler_are_stored_once(backend: Backend) -> None:
    emitted = asyncio.Event()
    runs = 0

    async def emit_then_hang(event: Event, ctx: HandlerContext) -> None:
        nonlocal runs
        runs += 1
        await ctx.emit("test.followed", {"run": runs})
        if runs == 1:
            emitted.set()
            await asyncio.Event().wait()  # cut short by the stop: never acknowledged

    first = backend.app(shutdown_grace=0.01)
    first.on("test.ticked", name="emitter")(emit_then_hang)
    async with first:
        cause = tick(1)
        await first.publish(cause)
        await asyncio.wait_for(emitted.wait(), HANG_GUARD)
    second = backend.app()
    second.on("test.ticked", name="emitter")(emit_then_hang)
    async with second:
        await second.drain(timeout=HANG_GUARD)
        followed = [
            r.event for r in await second.store.read_all() if r.event.type == "test.followed"
        ]
    assert runs == 2
    assert [e.data for e in followed] == [{"run": 1}]
    assert followed[0].causation_id == cause.id
