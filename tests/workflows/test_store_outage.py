"""A store failure while a workflow records its progress is the store's, not the workflow's.

The chaos test (tests/chaos) saw a PostgreSQL restart fail an instance for good: the commit
recording a step's result raised ``StoreUnavailable`` out of the workflow function, and the
engine recorded the workflow as failed. The engine retries instead: it reloads the instance
from its history and carries on (the step whose result was not recorded runs again, with
the same idempotency key).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from contexten.exceptions import StoreUnavailable
from contexten.store import EventStore
from contexten.store.memory import MemoryEventStore
from contexten.store.sqlite import SqliteEventStore
from contexten.workflows import WorkflowEngine, WorkflowInfo, WorkflowStatus

from .conftest import HANG_GUARD, Env


def _failing_step_records(base: type[EventStore], times: int) -> type[EventStore]:
    """``base`` whose first ``times`` commits of a ``step_completed`` history event raise
    StoreUnavailable (the server went away), writing nothing."""

    class Outage(base):  # type: ignore[valid-type, misc]
        left = times

        async def commit(self, *args: Any, **kwargs: Any) -> Any:
            appends = args[0] if args else kwargs["appends"]
            kinds = {e.type for a in appends for e in a.events}
            if self.left > 0 and any(k.endswith("step_completed") for k in kinds):
                type(self).left -= 1
                raise StoreUnavailable("the server went away")
            return await super().commit(*args, **kwargs)

    return Outage


async def _run_two_steps(
    env: Env, outage: type[EventStore], workflow_id: str
) -> tuple[WorkflowInfo, Counter[str]]:
    """Run a two-step workflow on a store of ``outage``'s kind; its info and the calls of
    its step per idempotency key."""
    calls: Counter[str] = Counter()

    async def effect(n: int, idempotency_key: str) -> int:
        calls[idempotency_key] += 1
        return n

    store = outage(*(() if env.kind == "memory" else (env.url,)))
    await store.open()
    engine = WorkflowEngine(store, clock=env.clock())

    @engine.workflow("outage")
    async def two_steps(wf: Any, n: int) -> int:
        first = await wf.step(effect, n, name="first")
        return int(await wf.step(effect, first + 1, name="second"))

    await engine.start()
    try:
        handle = await engine.start_workflow("outage", 1, workflow_id=workflow_id)
        assert await handle.result(timeout=HANG_GUARD) == 2
        info = await engine.get_workflow(workflow_id)
    finally:
        await engine.stop()
        await store.close()
    return info, calls


def _base(env: Env) -> type[EventStore]:
    return MemoryEventStore if env.kind == "memory" else SqliteEventStore


async def test_a_store_error_recording_a_step_retries_instead_of_failing(env: Env) -> None:
    info, calls = await _run_two_steps(env, _failing_step_records(_base(env), times=2), "o1")
    assert info.status is WorkflowStatus.COMPLETED
    assert [h.kind for h in info.history].count("step_completed") == 2
    # At least once: the step whose result was lost ran again, under the same key.
    assert set(calls) == {"o1:1:first", "o1:2:second"}
    assert sum(calls.values()) == 4


def _outage_outlasting_the_first_retry(base: type[EventStore], reads: int) -> type[EventStore]:
    """``base`` whose first commit of a ``step_completed`` raises StoreUnavailable, and whose
    next ``reads`` reads of a workflow history raise it too: the server is still restarting
    when the instance reloads (what the chaos test saw with PostgreSQL)."""

    class Outage(base):  # type: ignore[valid-type, misc]
        commits_left = 1
        reads_left = 0

        async def commit(self, *args: Any, **kwargs: Any) -> Any:
            appends = args[0] if args else kwargs["appends"]
            kinds = {e.type for a in appends for e in a.events}
            if self.commits_left > 0 and any(k.endswith("step_completed") for k in kinds):
                type(self).commits_left -= 1
                type(self).reads_left = reads
                raise StoreUnavailable("the server went away")
            return await super().commit(*args, **kwargs)

        async def read_stream(self, stream: str, *args: Any, **kwargs: Any) -> Any:
            if self.reads_left > 0 and stream.startswith("$wf-"):
                type(self).reads_left -= 1
                raise StoreUnavailable("the server is starting up")
            return await super().read_stream(stream, *args, **kwargs)

    return Outage


async def test_an_outage_that_outlasts_the_first_retry_still_finishes_the_instance(
    env: Env,
) -> None:
    """The reload after a store error is retried too: before, a second failure there left
    the instance unfinished under a live owner (logged, never retried, never adopted)."""
    outage_store = _outage_outlasting_the_first_retry(_base(env), reads=3)
    info, calls = await _run_two_steps(env, outage_store, "o2")
    assert outage_store.reads_left == 0, "the reload's reads failed as planned"
    assert info.status is WorkflowStatus.COMPLETED
    assert set(calls) == {"o2:1:first", "o2:2:second"}
