"""Hypothesis stateful test: random event sequences through the engine, against a model.

The model is a plain table lookup of what each event must do to each key's instance; the
system under test is the engine on the memory store, restarted at random moments. After
every step the stored instances (folded from their streams) must agree with the model:
same state, same status, same number of taken and rejected transitions, one action per
finishing transition.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from contexten.events import Event
from contexten.store.memory import MemoryEventStore
from contexten.testing import VirtualClock
from contexten.workflows import StateMachine, Transition, WorkflowEngine, WorkflowStatus
from contexten.workflows.admin import load_state

KEYS = ["a", "b", "c"]
TYPES = ["job.started", "job.paused", "job.resumed", "job.finished", "job.noise"]
TERMINAL = {"done", "failed"}

# The model's table: (source, event type, guard on data["ok"] or None) -> target, in order.
TABLE: list[tuple[set[str], str, bool | None, str]] = [
    ({"idle"}, "job.started", None, "running"),
    ({"running"}, "job.paused", None, "paused"),
    ({"paused"}, "job.resumed", None, "running"),
    ({"running", "paused"}, "job.finished", True, "done"),
    ({"running", "paused"}, "job.finished", None, "failed"),
]


def model_next(state: str, event_type: str, ok: bool) -> str | None:
    for sources, etype, guard, target in TABLE:
        if state in sources and etype == event_type and (guard is None or guard == ok):
            return target
    return None


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = MemoryEventStore()
        self.clock = VirtualClock()
        self.actions: Counter[str] = Counter()
        self.model: dict[str, dict[str, Any]] = {}
        self.engine = self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _machine(self) -> StateMachine:
        actions = self.actions

        async def on_finished(event: Event) -> None:
            actions[event.subject or ""] += 1

        return StateMachine(
            "job",
            initial="idle",
            key=lambda e: e.subject,
            terminal=TERMINAL,
            transitions=[
                Transition("idle", on="job.started", to="running"),
                Transition("running", on="job.paused", to="paused"),
                Transition("paused", on="job.resumed", to="running"),
                Transition(
                    ["running", "paused"],
                    on="job.finished",
                    to="done",
                    when=lambda e: bool(e.data["ok"]),
                    action=on_finished,
                ),
                Transition(
                    ["running", "paused"], on="job.finished", to="failed", action=on_finished
                ),
            ],
        )

    async def _start(self) -> WorkflowEngine:
        await self.store.open()
        engine = WorkflowEngine(self.store, clock=self.clock)
        engine.add(self._machine())
        await engine.start()
        return engine

    async def _settle(self) -> None:
        head = await self.store.head()
        async with asyncio.timeout(30):
            while True:
                checkpoint = await self.store.get_checkpoint("wf-engine") or 0
                busy = any(not m.idle for m in self.engine._sm_live.values())
                if checkpoint >= head and not busy:
                    return
                await asyncio.sleep(0.001)

    @rule(key=st.sampled_from(KEYS), event_type=st.sampled_from(TYPES), ok=st.booleans())
    def send(self, key: str, event_type: str, ok: bool) -> None:
        event = Event(type=event_type, subject=key, data={"ok": ok})
        self._run(self.store.append(f"jobs-{key}", [event]))
        self._run(self._settle())
        entry = self.model.get(key)
        if event_type == "job.noise":
            return
        if entry is None:
            target = model_next("idle", event_type, ok)
            if target is not None:
                self.model[key] = {"state": target, "taken": 1, "rejected": 0, "finished": 0}
            return
        if entry["state"] in TERMINAL:
            return
        target = model_next(entry["state"], event_type, ok)
        if target is None:
            entry["rejected"] += 1
            return
        entry["state"] = target
        entry["taken"] += 1
        if event_type == "job.finished":
            entry["finished"] += 1

    @rule()
    def restart(self) -> None:
        async def again() -> WorkflowEngine:
            await self.engine.stop()
            engine = WorkflowEngine(self.store, clock=self.clock)
            engine.add(self._machine())
            await engine.start()
            return engine

        self.engine = self._run(again())
        self._run(self._settle())

    @invariant()
    def instances_agree_with_the_model(self) -> None:
        for key in KEYS:
            state = self._run(load_state(self.store, f"job:{key}"))
            entry = self.model.get(key)
            if entry is None:
                assert state is None
                continue
            assert state is not None
            assert state.sm_state == entry["state"]
            kinds = Counter(h.kind for h in state.entries)
            assert kinds["transitioned"] == entry["taken"]
            assert kinds["transition_rejected"] == entry["rejected"]
            assert self.actions[key] == entry["finished"]
            expected = (
                WorkflowStatus.COMPLETED if entry["state"] in TERMINAL else WorkflowStatus.WAITING
            )
            assert state.status is expected

    def teardown(self) -> None:
        async def close() -> None:
            await self.engine.stop()
            await self.clock.aclose()
            await self.store.close()

        self._run(close())
        self.loop.close()


TestJobMachine = JobMachine.TestCase
TestJobMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
