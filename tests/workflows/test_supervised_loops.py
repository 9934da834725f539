"""The engine's background loops run under the App's supervisor: a crash restarts the loop
(with backoff), is logged with its reason and shows in ``app.health()``; triggers go on."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from contexten import App, Event, Workflow
from contexten.clock import WallClock
from contexten.store.base import RecordedEvent
from contexten.store.memory import MemoryEventStore
from contexten.workflows import WorkflowEngine
from contexten.workflows.engine import HEARTBEAT_LOOP, TAIL_LOOP

from .conftest import HANG_GUARD, until


class TailBreakingStore(MemoryEventStore):
    """A memory store whose log reads from the engine's tail raise while ``broken`` is set
    (a decoding bug, say: not a ``StoreError``, which the tail retries by itself)."""

    broken = False
    failures = 0

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        task = asyncio.current_task()
        if self.broken and task is not None and task.get_name() == TAIL_LOOP:
            self.failures += 1
            raise RuntimeError("cannot decode the log page")
        return await super().read_all(after=after, limit=limit)


async def test_a_crashed_tail_restarts_shows_in_health_and_later_triggers_start() -> None:
    store = TailBreakingStore()
    app = App(store, clock=WallClock())

    @app.workflow("greet", on="demo.hello", key=lambda e: e.subject)
    async def greet(wf: Workflow, event: Event) -> str:
        return f"hello {event.subject}"

    async with app:
        report = await app.health()
        assert report.ok
        assert {loop.name: loop.state for loop in report.workflow_loops} == {
            TAIL_LOOP: "running",
            HEARTBEAT_LOOP: "running",
        }
        with capture_logs() as logs:
            store.broken = True
            await app.publish(Event(type="demo.hello", source="demo", subject="ada"))

            async def tail_down() -> bool:
                loops = {loop.name: loop for loop in (await app.health()).workflow_loops}
                return loops[TAIL_LOOP].state == "backing_off"

            await until(tail_down)
            down = await app.health()
            assert not down.ok
            assert not down.to_dict()["ok"]
            tail = {loop.name: loop for loop in down.workflow_loops}[TAIL_LOOP]
            assert tail.restarts >= 1
            assert tail.last_error == "RuntimeError: cannot decode the log page"
            assert down.supervisor_restarts[TAIL_LOOP] >= 1
        crashes = [e for e in logs if e["event"] == "supervised task crashed; restarting"]
        assert crashes
        assert crashes[0]["task"] == TAIL_LOOP
        assert crashes[0]["exc_info"].args == ("cannot decode the log page",)

        store.broken = False  # the fault goes away: the restarted tail carries on
        assert await app.workflows.get_handle("greet:ada").result(HANG_GUARD) == "hello ada"
        await app.publish(Event(type="demo.hello", source="demo", subject="bob"))
        assert await app.workflows.get_handle("greet:bob").result(HANG_GUARD) == "hello bob"
        up = await app.health()
        assert up.ok
        tail = {loop.name: loop for loop in up.workflow_loops}[TAIL_LOOP]
        assert tail.state == "running"
        assert tail.restarts == store.failures >= 1
        loops: Any = up.to_dict()["workflow_loops"]
        assert {entry["name"]: entry["restarts"] for entry in loops}[TAIL_LOOP] == tail.restarts
        # each id started once, the crashed batch's trigger included
        started = await app.workflows.list_workflows()
        assert sorted(i.workflow_id for i in started) == ["greet:ada", "greet:bob"]
        await store.close()


async def test_a_standalone_engine_supervises_its_own_loops() -> None:
    store = TailBreakingStore()
    async with store:
        engine = WorkflowEngine(store)

        @engine.workflow("echo", on="demo.ping", key=lambda e: e.subject)
        async def echo(wf: Workflow, event: Event) -> str:
            return str(event.subject)

        async with engine:
            store.broken = True
            await store.append("demo", [Event(type="demo.ping", source="demo", subject="x")])
            await until(lambda: store.failures >= 2)
            store.broken = False
            assert await engine.get_handle("echo:x").result(HANG_GUARD) == "x"
            assert engine.supervisor.status(TAIL_LOOP).restarts == store.failures
