"""A Hypothesis state machine for the dispatcher: random publishes, failures and restarts.

The model: every published event is either ``ok`` (its handler succeeds), ``flaky`` (the first
attempt of each delivery fails, the retry succeeds) or ``poison`` (it always fails). Whatever
the interleaving of publishes, partial progress and abrupt restarts (no grace period: in-flight
handlers are cancelled), once the dispatcher drains:

* every ``ok`` and ``flaky`` event was handled at least once and never dead-lettered;
* every ``poison`` event has exactly one dead letter and was never handled;
* within one run of the app, each key's events were handled in log order;
* the checkpoint is at the head of the log.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from contexten import App, Event, HandlerContext, RetryPolicy
from contexten.bus.partitions import subscription_checkpoint
from contexten.store.memory import MemoryEventStore

from ._support import HANG_GUARD, StepClock

OUTCOMES = st.sampled_from(["ok", "ok", "ok", "flaky", "poison"])
KEYS = st.sampled_from([None, "a", "b", "c"])
BATCHES = st.lists(
    st.tuples(OUTCOMES, KEYS, st.integers(min_value=0, max_value=6)), min_size=1, max_size=6
)


class DispatcherMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = MemoryEventStore()
        self.outcome: dict[str, str] = {}
        self.key: dict[str, str | None] = {}
        self.position: dict[str, int] = {}
        self.handled: set[str] = set()
        self.runs: list[list[str]] = []
        self.app: App | None = None
        self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, HANG_GUARD))

    async def _start(self) -> None:
        app = App(self.store, clock=StepClock(), shutdown_grace=0.0, checkpoint_interval=0.001)
        run: list[str] = []
        self.runs.append(run)

        async def handler(event: Event, ctx: HandlerContext) -> None:
            for _ in range(event.data["work"]):
                await asyncio.sleep(0)  # points where a restart can cut in
            outcome = event.data["outcome"]
            if outcome == "poison" or (outcome == "flaky" and ctx.attempt == 1):
                raise RuntimeError(outcome)
            run.append(event.id)
            self.handled.add(event.id)

        app.on(
            "model.*",
            name="model",
            concurrency=3,
            retry=RetryPolicy(maximum_attempts=2, initial_interval=0.5),
        )(handler)
        await app.start()
        self.app = app

    @rule(batch=BATCHES)
    def publish(self, batch: list[tuple[str, str | None, int]]) -> None:
        assert self.app is not None
        for outcome, key, work in batch:
            data = {"outcome": outcome, "work": work}
            event = Event(type="model.happened", subject=key, data=data)
            result = self._run(self.app.publish(event))
            self.outcome[event.id] = outcome
            self.key[event.id] = key
            self.position[event.id] = result.last_position

    @rule(steps=st.integers(min_value=1, max_value=12))
    def let_it_run(self, steps: int) -> None:
        async def spin() -> None:
            for _ in range(steps):
                await asyncio.sleep(0)

        self._run(spin())

    @rule()
    def restart_abruptly(self) -> None:
        assert self.app is not None
        self._run(self.app.stop())
        self._run(self._start())

    @precondition(lambda self: self.outcome)
    @rule()
    def drain(self) -> None:
        assert self.app is not None
        self._run(self.app.drain())
        self._check_settled()

    @invariant()
    def each_run_keeps_key_order(self) -> None:
        for run in self.runs:
            by_key: dict[str, list[int]] = defaultdict(list)
            for event_id in run:
                key = self.key[event_id]
                if key is not None:
                    by_key[key].append(self.position[event_id])
            for positions in by_key.values():
                assert positions == sorted(positions)

    def _check_settled(self) -> None:
        assert self.app is not None
        letters = self._run(self.app.dead_letters.list())
        poison = {i for i, o in self.outcome.items() if o == "poison"}
        assert sorted(x.event_id for x in letters) == sorted(poison)
        assert self.handled == set(self.outcome) - poison
        head = self._run(self.store.head())
        assert self._run(subscription_checkpoint(self.store, "model")) == head

    def teardown(self) -> None:
        try:
            if self.app is not None:
                if self.outcome:
                    self._run(self.app.drain())
                    self._check_settled()
                self._run(self.app.stop())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


DispatcherMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
TestDispatcherModel = DispatcherMachine.TestCase
