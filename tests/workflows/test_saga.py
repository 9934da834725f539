"""Sagas: compensations in reverse order, once each; failing compensations; cancellation."""

from __future__ import annotations

from typing import Any

import pytest

from contexten.exceptions import NonRetryableError, WorkflowError, WorkflowFailedError
from contexten.resilience.retry import RetryPolicy
from contexten.workflows import WorkflowEngine, WorkflowStatus

from .conftest import HANG_GUARD, Env, until_status

FAST = RetryPolicy(initial_interval=1, maximum_attempts=3, jitter=0)


class Journal:
    """What the steps and compensations did, in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, int]] = []
        self.broken_compensation: int | None = None

    def saga(self, engine: WorkflowEngine, fail_at: int | None, steps: int = 5) -> None:
        journal = self

        async def do(i: int, idempotency_key: str) -> dict[str, Any]:
            if i == fail_at:
                raise NonRetryableError(f"step {i} cannot be done")
            journal.entries.append(("do", i))
            return {"done": i, "key": idempotency_key}

        async def undo(i: int, result: dict[str, Any]) -> None:
            assert result["done"] == i
            if i == journal.broken_compensation:
                raise ConnectionError(f"cannot undo {i}")
            journal.entries.append(("undo", i))

        @engine.workflow("saga")
        async def saga(wf: Any, _: Any) -> str:
            for i in range(1, steps + 1):
                await wf.step(do, i, name=f"step{i}", compensate=undo, retry=FAST)
            return "all done"


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
async def test_step_k_failing_compensates_steps_before_it_once_in_reverse(env: Env, k: int) -> None:
    journal = Journal()
    engine = await env.engine(lambda e: journal.saga(e, fail_at=k))
    handle = await engine.start_workflow("saga", None, workflow_id=f"saga-{k}")
    with pytest.raises(WorkflowFailedError) as caught:
        await handle.result(timeout=HANG_GUARD)
    expected_status = "compensated" if k > 1 else "failed"
    assert caught.value.status == expected_status
    done = [("do", i) for i in range(1, k)]
    undone = [("undo", i) for i in range(k - 1, 0, -1)]
    assert journal.entries == done + undone
    info = await engine.get_workflow(f"saga-{k}")
    assert info.status == expected_status
    assert info.error is not None
    assert f"step {k} cannot be done" in info.error["message"]
    engine = await env.restart(engine, lambda e: journal.saga(e, fail_at=k))
    await engine.get_handle(f"saga-{k}").info()
    assert journal.entries == done + undone  # nothing runs again after a restart


async def test_a_workflow_that_raises_after_steps_compensates_them(memory_env: Env) -> None:
    journal = Journal()

    def setup(engine: WorkflowEngine) -> None:
        journal.saga(engine, fail_at=None, steps=2)

        async def do(i: int) -> int:
            journal.entries.append(("do", i))
            return i

        async def undo(i: int) -> None:
            journal.entries.append(("undo", i))

        @engine.workflow("raiser")
        async def raiser(wf: Any, _: Any) -> None:
            await wf.step(do, 10, compensate=undo)
            await wf.run_child("saga", None)  # a child's steps are the child's to undo
            await wf.step(do, 11, compensate=undo)
            raise RuntimeError("changed my mind")

    engine = await memory_env.engine(setup)
    handle = await engine.start_workflow("raiser", None)
    with pytest.raises(WorkflowFailedError, match="changed my mind") as caught:
        await handle.result(timeout=HANG_GUARD)
    assert caught.value.status == "compensated"
    assert journal.entries == [
        ("do", 10),
        ("do", 1),
        ("do", 2),
        ("do", 11),
        ("undo", 11),
        ("undo", 10),
    ]


async def test_a_compensation_that_keeps_failing_ends_failed_and_can_be_redriven(
    env: Env,
) -> None:
    journal = Journal()
    journal.broken_compensation = 2
    engine = await env.engine(lambda e: journal.saga(e, fail_at=4))
    handle = await engine.start_workflow("saga", None, workflow_id="stuck")
    with pytest.raises(WorkflowFailedError) as caught:
        await handle.result(timeout=HANG_GUARD)
    assert caught.value.status == "failed"
    info = await engine.get_workflow("stuck")
    assert info.status is WorkflowStatus.FAILED
    assert info.error is not None
    assert "compensation of step 'step2'" in info.error["message"]
    assert "cannot undo 2" in info.error["message"]
    assert journal.entries == [("do", 1), ("do", 2), ("do", 3), ("undo", 3)]

    journal.broken_compensation = None  # the platform is back
    engine = await env.restart(engine, lambda e: journal.saga(e, fail_at=4))
    redriven = await engine.retry_workflow("stuck")
    with pytest.raises(WorkflowFailedError) as caught:
        await redriven.result(timeout=HANG_GUARD)
    assert caught.value.status == "compensated"
    assert journal.entries[-2:] == [("undo", 2), ("undo", 1)]
    assert journal.entries.count(("undo", 3)) == 1
    with pytest.raises(WorkflowError, match="neither failed nor blocked"):
        await engine.retry_workflow("stuck")


async def test_a_failed_step_with_nothing_to_compensate_is_retried_by_a_redrive(
    env: Env,
) -> None:
    attempts: list[int] = []
    broken = [True]

    async def flaky() -> str:
        attempts.append(1)
        if broken[0]:
            raise NonRetryableError("down")
        return "up"

    def setup(engine: WorkflowEngine) -> None:
        @engine.workflow("flaky")
        async def flaky_wf(wf: Any, _: Any) -> str:
            return str(await wf.step(flaky))

    engine = await env.engine(setup)
    with pytest.raises(WorkflowFailedError):
        await (await engine.start_workflow("flaky", None, workflow_id="f1")).result(
            timeout=HANG_GUARD
        )
    broken[0] = False
    handle = await engine.retry_workflow("f1")
    assert await handle.result(timeout=HANG_GUARD) == "up"
    assert len(attempts) == 2


def _cancellable(engine: WorkflowEngine, journal: Journal) -> None:
    async def do(i: int) -> int:
        journal.entries.append(("do", i))
        return i

    async def undo(i: int) -> None:
        journal.entries.append(("undo", i))

    @engine.workflow("cancellable")
    async def cancellable(wf: Any, steps: int) -> str:
        for i in range(1, steps + 1):
            await wf.step(do, i, compensate=undo)
        await wf.wait_for("never.happens")
        return "unreachable"


async def test_cancelling_a_waiting_workflow_compensates_and_ends_cancelled(env: Env) -> None:
    journal = Journal()
    engine = await env.engine(lambda e: _cancellable(e, journal))
    handle = await engine.start_workflow("cancellable", 2, workflow_id="c1")
    await until_status(engine, "c1", WorkflowStatus.WAITING)
    assert await engine.cancel_workflow("c1") is True
    with pytest.raises(WorkflowFailedError) as caught:
        await handle.result(timeout=HANG_GUARD)
    assert caught.value.status == "cancelled"
    assert journal.entries == [("do", 1), ("do", 2), ("undo", 2), ("undo", 1)]
    kinds = [h.kind for h in (await engine.get_workflow("c1")).history]
    assert "cancel_requested" in kinds
    assert kinds[-1] == "cancelled"
    assert await engine.cancel_workflow("c1") is False


async def test_cancel_requested_from_the_store_reaches_the_running_engine(env: Env) -> None:
    from contexten.workflows import request_cancel

    journal = Journal()
    engine = await env.engine(lambda e: _cancellable(e, journal))
    handle = await engine.start_workflow("cancellable", 0, workflow_id="c2")
    await until_status(engine, "c2", WorkflowStatus.WAITING)
    other = await env.open_store()  # e.g. the CLI, another process
    assert await request_cancel(other, "c2") is True
    with pytest.raises(WorkflowFailedError) as caught:
        await handle.result(timeout=HANG_GUARD)
    assert caught.value.status == "cancelled"
    assert journal.entries == []


async def test_a_cancel_requested_while_down_is_honoured_on_restart(env: Env) -> None:
    from contexten.workflows import request_cancel

    journal = Journal()
    engine = await env.engine(lambda e: _cancellable(e, journal))
    await engine.start_workflow("cancellable", 1, workflow_id="c3")
    await until_status(engine, "c3", WorkflowStatus.WAITING)
    await engine.stop()
    assert await request_cancel(engine.store, "c3") is True
    engine = await env.restart(engine, lambda e: _cancellable(e, journal))
    with pytest.raises(WorkflowFailedError, match="cancelled"):
        await engine.get_handle("c3").result(timeout=HANG_GUARD)
    assert journal.entries == [("do", 1), ("undo", 1)]
