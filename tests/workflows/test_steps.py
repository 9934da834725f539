"""Function workflows: steps run once, are replayed from history, retry, and start idempotently."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from contexten.clock import WallClock
from contexten.events import Event
from contexten.exceptions import (
    NonRetryableError,
    StepFailedError,
    StepTimeout,
    WorkflowAlreadyStarted,
    WorkflowFailedError,
    WorkflowNotFound,
    WorkflowNotRegistered,
)
from contexten.resilience.retry import RetryPolicy
from contexten.workflows import WorkflowEngine, WorkflowStatus, current_step
from contexten.workflows.steps import StepInfo, execute_step

from .conftest import HANG_GUARD, Env, until


class Ledger:
    """Effects keyed by idempotency key, the way a platform would keep them."""

    def __init__(self) -> None:
        self.effects: dict[str, Any] = {}
        self.calls: Counter[str] = Counter()

    def record(self, key: str, value: Any) -> Any:
        self.calls[key] += 1
        return self.effects.setdefault(key, value)


async def test_a_step_runs_once_and_its_result_is_recorded(env: Env) -> None:
    ledger = Ledger()

    async def add(a: int, b: int, idempotency_key: str) -> int:
        return int(ledger.record(idempotency_key, a + b))

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("sum")
        async def sum_wf(wf: Any, numbers: list[int]) -> dict[str, int]:
            first = await wf.step(add, numbers[0], numbers[1])
            second = await wf.step(add, first, numbers[2], name="add-again")
            return {"total": second}

    engine = await env.engine(setup)
    handle = await engine.start_workflow("sum", [1, 2, 3], workflow_id="s1")
    assert await handle.result(timeout=HANG_GUARD) == {"total": 6}
    info = await engine.get_workflow("s1")
    assert info.status is WorkflowStatus.COMPLETED
    assert info.result == {"total": 6}
    kinds = [h.kind for h in info.history]
    assert kinds == ["started", "step_completed", "step_completed", "completed"]
    assert info.history[2].data["name"] == "add-again"
    assert sorted(ledger.calls) == ["s1:1:" + add.__qualname__, "s1:2:add-again"]

    engine = await env.restart(engine, setup)  # a completed instance is not run again
    assert await engine.get_handle("s1").result(timeout=HANG_GUARD) == {"total": 6}
    assert set(ledger.calls.values()) == {1}


async def test_replay_returns_recorded_results_without_running_steps(env: Env) -> None:
    calls: Counter[str] = Counter()
    gate = asyncio.Event()

    async def first() -> dict[str, Any]:
        calls["first"] += 1
        return {"n": 1, "t": (1, 2)}  # a tuple comes back as a list, live and replayed

    async def second(seen: dict[str, Any]) -> int:
        calls["second"] += 1
        await gate.wait()
        return int(seen["n"]) + 1

    seen_live: list[Any] = []

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("two")
        async def two(wf: Any, _: Any) -> int:
            a = await wf.step(first)
            seen_live.append(a)
            return int(await wf.step(second, a))

    engine = await env.engine(setup)
    await engine.start_workflow("two", None, workflow_id="t1")
    await until(lambda: calls["second"] > 0)
    engine = await env.restart(engine, setup)  # "crash" while the second step runs
    gate.set()
    assert await engine.get_handle("t1").result(timeout=HANG_GUARD) == 2
    assert calls == {"first": 1, "second": 2}
    assert seen_live == [{"n": 1, "t": [1, 2]}, {"n": 1, "t": [1, 2]}]


async def test_idempotency_key_is_stable_across_retries_and_given_by_current_step(
    memory_env: Env,
) -> None:
    keys: list[tuple[str, int]] = []

    async def flaky() -> str:
        info = current_step()
        keys.append((info.idempotency_key, info.attempt))
        if info.attempt < 3:
            raise ConnectionError("platform hiccup")
        return "ok"

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("retry")
        async def retry(wf: Any, _: Any) -> str:
            policy = RetryPolicy(initial_interval=30, maximum_attempts=5, jitter=0)
            return str(await wf.step(flaky, name="flaky", retry=policy))

    clock = memory_env.clock()
    engine = await memory_env.engine(setup, clock=clock)
    started = clock.now()
    handle = await engine.start_workflow("retry", None, workflow_id="r1")
    assert await handle.result(timeout=HANG_GUARD) == "ok"
    assert keys == [("r1:1:flaky", 1), ("r1:1:flaky", 2), ("r1:1:flaky", 3)]
    assert (clock.now() - started).total_seconds() >= 30 + 60  # backoff on the virtual clock
    with pytest.raises(Exception, match="outside a workflow step"):
        current_step()


async def test_a_failed_step_raises_step_failed_error_the_workflow_can_catch(env: Env) -> None:
    async def refuse() -> None:
        raise NonRetryableError("card declined")

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("catch")
        async def catch(wf: Any, _: Any) -> dict[str, Any]:
            try:
                await wf.step(refuse, name="charge")
            except StepFailedError as e:
                return {"step": e.step, "type": e.error_type, "attempts": e.attempts}
            return {}

    engine = await env.engine(setup)
    handle = await engine.start_workflow("catch", None, workflow_id="c1")
    expected = {"step": "charge", "type": "contexten.exceptions.NonRetryableError", "attempts": 1}
    assert await handle.result(timeout=HANG_GUARD) == expected
    engine = await env.restart(engine, setup)
    info = await engine.get_workflow("c1")
    assert [h.kind for h in info.history] == ["started", "step_failed", "completed"]


async def test_a_workflow_that_raises_with_nothing_to_compensate_ends_failed(env: Env) -> None:
    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("raise")
        async def raise_wf(wf: Any, _: Any) -> None:
            raise ValueError("bad input")

    engine = await env.engine(setup)
    handle = await engine.start_workflow("raise", None, workflow_id="x1")
    with pytest.raises(WorkflowFailedError) as caught:
        await handle.result(timeout=HANG_GUARD)
    assert caught.value.status == "failed"
    info = await engine.get_workflow("x1")
    assert info.status is WorkflowStatus.FAILED
    assert info.error is not None
    assert info.error["type"] == "builtins.ValueError"
    assert info.error["message"] == "bad input"


async def test_starting_an_existing_id_returns_it_or_raises(env: Env) -> None:
    runs: Counter[str] = Counter()

    async def count(key: str) -> None:
        runs[key] += 1

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("once")
        async def once(wf: Any, value: int) -> int:
            await wf.step(count, wf.workflow_id)
            return value

    engine = await env.engine(setup)
    handles = await asyncio.gather(
        *(engine.start_workflow("once", i, workflow_id="same") for i in range(50))
    )
    results = await asyncio.gather(*(h.result(timeout=HANG_GUARD) for h in handles))
    assert len(set(results)) == 1
    assert runs == {"same": 1}
    with pytest.raises(WorkflowAlreadyStarted):
        await engine.start_workflow("once", 1, workflow_id="same", if_exists="raise")
    with pytest.raises(WorkflowNotRegistered):
        await engine.start_workflow("nope", 1)
    with pytest.raises(WorkflowNotFound):
        await engine.get_workflow("missing")
    events = await engine.store.read_stream("$wf-same")
    assert sum(1 for r in events if r.event.type == "contexten.workflow.started") == 1


async def test_a_result_that_is_not_json_fails_the_step_without_retrying(memory_env: Env) -> None:
    calls: list[int] = []

    async def make_set() -> object:
        calls.append(1)
        return object()

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("nojson")
        async def nojson(wf: Any, _: Any) -> Any:
            return await wf.step(make_set)

    engine = await memory_env.engine(setup)
    handle = await engine.start_workflow("nojson", None)
    with pytest.raises(WorkflowFailedError, match="JSON"):
        await handle.result(timeout=HANG_GUARD)
    assert calls == [1]


async def test_workflows_start_on_matching_events_once_per_key(env: Env) -> None:
    seen: list[str] = []

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow(
            "on-label",
            on="linear.issue.*",
            where=lambda e: "agent" in e.data.get("labels", []),
            key=lambda e: e.correlation_id,
            id_reuse="never",
        )
        async def on_label(wf: Any, event: Event) -> str:
            assert isinstance(event, Event)
            seen.append(event.data["title"])
            return str(event.data["title"])

    engine = await env.engine(setup)
    events = [
        Event(
            type="linear.issue.updated",
            correlation_id="LIN-1",
            data={"title": "a", "labels": ["agent"]},
        ),
        Event(
            type="linear.issue.updated",
            correlation_id="LIN-1",
            data={"title": "b", "labels": ["agent"]},
        ),
        Event(
            type="linear.issue.updated", correlation_id="LIN-2", data={"title": "c", "labels": []}
        ),
        Event(
            type="linear.issue.created",
            correlation_id="LIN-3",
            data={"title": "d", "labels": ["agent"]},
        ),
        Event(type="github.push", correlation_id="LIN-4", data={"title": "e", "labels": ["agent"]}),
    ]
    for event in events:
        await engine.store.append("linear", [event])
    assert await engine.get_handle("on-label:LIN-1").result(timeout=HANG_GUARD) == "a"
    assert await engine.get_handle("on-label:LIN-3").result(timeout=HANG_GUARD) == "d"
    engine = await env.restart(engine, setup)  # re-reading the log starts nothing twice
    await engine.store.append("linear", [events[0].replace(id="another-id")])
    assert await engine.get_handle("on-label:LIN-1").result(timeout=HANG_GUARD) == "a"
    names = sorted(i.workflow_id for i in await engine.list_workflows())
    assert names == ["on-label:LIN-1", "on-label:LIN-3"]
    assert sorted(seen) == ["a", "d"]
    info = await engine.get_workflow("on-label:LIN-1")
    assert info.history[0].data["trigger_event_id"] == events[0].id


async def test_now_uuid_and_random_are_recorded_and_replayed(env: Env) -> None:
    gate = asyncio.Event()
    observed: list[tuple[str, str, float]] = []

    async def wait_gate() -> None:
        await gate.wait()

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("values")
        async def values(wf: Any, _: Any) -> list[Any]:
            row = (wf.now().isoformat(), str(wf.uuid4()), wf.random())
            observed.append(row)
            await wf.step(wait_gate)
            return list(row)

    engine = await env.engine(setup, clock=env.clock(auto=False))
    await engine.start_workflow("values", None, workflow_id="v1")
    await until(lambda: bool(observed))
    await asyncio.sleep(0.05)  # the values are committed before the step starts
    engine = await env.restart(engine, setup)
    gate.set()
    result = await engine.get_handle("v1").result(timeout=HANG_GUARD)
    assert len(observed) == 2
    assert observed[0] == observed[1]
    assert result == list(observed[0])


async def test_emit_appends_once_however_often_replayed(env: Env) -> None:
    gate = asyncio.Event()

    async def wait_gate() -> None:
        await gate.wait()

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("emitter")
        async def emitter(wf: Any, _: Any) -> None:
            await wf.emit(Event(type="shop.order.confirmed", data={"n": 1}))
            await wf.step(wait_gate)

    engine = await env.engine(setup)
    await engine.start_workflow("emitter", None, workflow_id="e1")
    await until(lambda: engine.store.stream_version("workflow-e1"))
    engine = await env.restart(engine, setup)
    gate.set()
    await engine.get_handle("e1").result(timeout=HANG_GUARD)
    public = [r.event.type for r in await engine.store.read_stream("workflow-e1")]
    assert public == ["shop.order.confirmed", "contexten.workflow.completed"]


async def test_child_workflows_return_results_and_raise_failures(env: Env) -> None:
    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("child")
        async def child(wf: Any, n: int) -> int:
            if n < 0:
                raise ValueError("negative")
            return n * 2

        @engine.workflow("parent")
        async def parent(wf: Any, n: int) -> dict[str, Any]:
            doubled = await wf.run_child("child", n)
            try:
                await wf.run_child("child", -1)
            except Exception as e:
                return {"doubled": doubled, "error": type(e).__name__}
            return {"doubled": doubled}

    engine = await env.engine(setup)
    handle = await engine.start_workflow("parent", 21, workflow_id="p1")
    assert await handle.result(timeout=HANG_GUARD) == {
        "doubled": 42,
        "error": "ChildWorkflowError",
    }
    child = await engine.get_workflow("p1/1")
    assert child.status is WorkflowStatus.COMPLETED
    assert child.result == 42


async def test_a_step_timeout_counts_as_a_failed_attempt(memory_env: Env) -> None:
    attempts: list[int] = []

    async def slow() -> str:
        attempts.append(current_step().attempt)
        if len(attempts) == 1:
            await asyncio.sleep(3600)  # real time: only the virtual timeout ends it
        return "fast enough"

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("timeout")
        async def timeout_wf(wf: Any, _: Any) -> str:
            return str(await wf.step(slow, timeout=10, retry=RetryPolicy(jitter=0)))

    engine = await memory_env.engine(setup)
    handle = await engine.start_workflow("timeout", None)
    assert await handle.result(timeout=HANG_GUARD) == "fast enough"
    assert attempts == [1, 2]


# -- a step's timeout in real seconds (the engine's default_step_timeout) -------------------


def _info() -> StepInfo:
    return StepInfo("wf-timeout", 1, "slow")


async def test_a_step_over_its_real_time_limit_fails_with_step_timeout_and_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    outcome = await execute_step(
        hangs, (), {}, info=_info(), policy=None, clock=WallClock(), timeout=0.05
    )
    assert not outcome.ok
    assert isinstance(outcome.error, StepTimeout)
    assert str(outcome.error) == "step 'slow' timed out after 0.05s"
    assert cancelled.is_set(), "the step's own task was cancelled, not left running"


async def test_a_step_that_ignores_its_cancellation_still_times_out() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)
        return "late"

    outcome = await execute_step(
        stubborn, (), {}, info=_info(), policy=None, clock=WallClock(), timeout=0.05
    )
    assert isinstance(outcome.error, StepTimeout)


async def test_a_timeout_error_of_the_step_itself_is_its_error_not_a_step_timeout() -> None:
    async def raises() -> None:
        raise TimeoutError("the platform timed out")

    outcome = await execute_step(
        raises, (), {}, info=_info(), policy=None, clock=WallClock(), timeout=5
    )
    assert type(outcome.error) is TimeoutError
    assert str(outcome.error) == "the platform timed out"


async def test_a_step_within_its_real_time_limit_returns_its_value() -> None:
    async def quick(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    outcome = await execute_step(
        quick, (1,), {}, info=_info(), policy=None, clock=WallClock(), timeout=5
    )
    assert outcome.ok
    assert outcome.value == 2


async def test_cancelling_the_workflow_cancels_a_step_under_a_real_time_limit() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hangs() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.ensure_future(
        execute_step(hangs, (), {}, info=_info(), policy=None, clock=WallClock(), timeout=60)
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
