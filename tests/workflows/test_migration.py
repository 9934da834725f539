"""Migrating a blocked instance from its last compatible point: kept calls never run again,
superseded ones stay in the history behind a marker that every later replay follows, and
effects are never superseded silently."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from contexten.events import Event
from contexten.exceptions import MigrationRefused, WorkflowError
from contexten.testing import check_replays
from contexten.workflows import WorkflowEngine, WorkflowStatus, current_step
from contexten.workflows.admin import load_state
from contexten.workflows.replay import replay_state

from .conftest import HANG_GUARD, Env, until_status

ran: Counter[str] = Counter()
keys: dict[str, list[str]] = {}


def effect(tag: str) -> str:
    """A step with an effect outside the instance: counted, and its key remembered."""
    ran[tag] += 1
    keys.setdefault(tag, []).append(current_step().idempotency_key)
    return tag


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    ran.clear()
    keys.clear()


def register_v1(engine: WorkflowEngine) -> None:
    @engine.workflow("deploy", version=1)
    async def deploy_v1(wf: Any, _: Any) -> list[str]:
        one = await wf.step(effect, "one", name="one")
        two = await wf.step(effect, "two", name="two")
        await wf.wait_for("deploy.go")  # call 3: where the v1 instance is blocked
        return [one, two, await wf.step(effect, "v1-three", name="three")]


def register_v2_changes_step_3(engine: WorkflowEngine) -> None:
    @engine.workflow("deploy", version=2)
    async def deploy_v2(wf: Any, _: Any) -> list[str]:
        one = await wf.step(effect, "one", name="one")
        two = await wf.step(effect, "two", name="two")
        three = await wf.step(effect, "v2-three", name="three-checked")  # new call 3
        await wf.wait_for("deploy.go")
        return [one, two, three]


def register_v2_changes_step_1(engine: WorkflowEngine) -> None:
    @engine.workflow("deploy", version=2)
    async def deploy_v2(wf: Any, _: Any) -> list[str]:
        one = await wf.step(effect, "one-prime", name="one-prime")  # differs at call 1
        two = await wf.step(effect, "two", name="two")
        await wf.wait_for("deploy.go")
        return [one, two]


async def _blocked_after_two_steps(env: Env, register_v2: Any) -> WorkflowEngine:
    """A v1 instance that completed two steps and waits; then v2 replaces v1: blocked."""
    engine = await env.engine(register_v1)
    await engine.start_workflow("deploy", None, workflow_id="d1")
    await until_status(engine, "d1", WorkflowStatus.WAITING)
    engine = await env.restart(engine, register_v2)
    await until_status(engine, "d1", WorkflowStatus.BLOCKED)
    assert ran == Counter({"one": 1, "two": 1})
    return engine


async def test_migrate_resumes_at_the_first_changed_call_without_rerunning_the_kept_ones(
    env: Env,
) -> None:
    engine = await _blocked_after_two_steps(env, register_v2_changes_step_3)

    plan = await engine.plan_migration("d1", 2)
    assert (plan.point, plan.resumes_at, plan.recorded_calls) == (2, 3, 3)
    assert [c.describe() for c in plan.superseded] == ["#3 wait 'deploy.go' (in_flight)"]
    assert plan.effects == [], "a wait did nothing outside the instance"
    assert plan.divergence is not None
    assert "step 'three-checked'" in plan.divergence

    done = await engine.migrate("d1", 2)
    assert done.point == 2
    await until_status(engine, "d1", WorkflowStatus.WAITING)  # v2's own wait, call 4
    assert ran == Counter({"one": 1, "two": 1, "v2-three": 1}), "steps 1-2 were not re-run"

    engine = await env.restart(engine, register_v2_changes_step_3)  # replays past the marker
    await until_status(engine, "d1", WorkflowStatus.WAITING)
    await engine.store.append("go", [Event(type="deploy.go")])
    result = await engine.get_handle("d1").result(timeout=HANG_GUARD)
    assert result == ["one", "two", "v2-three"]
    assert ran == Counter({"one": 1, "two": 1, "v2-three": 1}), "nothing ran twice"

    info = await engine.get_workflow("d1")
    assert info.version == "2"
    (marker,) = [h for h in info.history if h.kind == "migrated"]
    assert marker.data["point"] == 2
    assert [c["seq"] for c in marker.data["superseded"]] == [3]
    (superseded_wait,) = [h for h in info.history if h.kind == "wait_started"][:1]
    assert marker.data["superseded_events"] == [superseded_wait.version]
    assert [h.kind for h in info.history].count("wait_started") == 2, "history kept, not cut"

    state = await load_state(engine.store, "d1")
    assert state is not None
    for _ in range(2):  # replaying the migrated history is deterministic
        outcome = await replay_state(engine.versions("deploy")["2"].fn, state)
        assert (outcome.returned, outcome.result) == (True, result)
    assert (await check_replays(engine.store, engine)).ok

    def register_v2_renames_call_3(engine: WorkflowEngine) -> None:
        @engine.workflow("deploy", version=2)
        async def deploy_v2(wf: Any, _: Any) -> list[str]:
            await wf.step(effect, "one", name="one")
            await wf.step(effect, "two", name="two")
            return [await wf.step(effect, "v2-three", name="three-renamed")]

    checker = await env.engine(register_v2_renames_call_3, start=False)
    (divergence,) = (await check_replays(checker.store, checker)).divergences
    (recorded,) = [h for h in info.history if h.data.get("name") == "three-checked"]
    assert (divergence.seq, divergence.event_version) == (3, recorded.version), (
        "the first differing event is the migrated call 3, not the superseded one"
    )


async def test_migrate_refuses_to_supersede_completed_steps_unless_forced(env: Env) -> None:
    engine = await _blocked_after_two_steps(env, register_v2_changes_step_1)
    before = (await engine.get_workflow("d1")).history

    with pytest.raises(MigrationRefused) as refused:
        await engine.migrate_workflow("d1", 2)
    assert refused.value.forceable
    assert refused.value.point == 0
    assert refused.value.effects == [
        "#1 step 'one' (completed): step 'one' completed: its effect was made",
        "#2 step 'two' (completed): step 'two' completed: its effect was made",
    ]
    info = await engine.get_workflow("d1")
    assert info.status is WorkflowStatus.BLOCKED
    assert len(info.history) == len(before), "nothing recorded"

    handle = await engine.migrate_workflow("d1", 2, force=True)  # restarts from call 1
    await until_status(engine, "d1", WorkflowStatus.WAITING)
    engine = await env.restart(engine, register_v2_changes_step_1)
    await engine.store.append("go", [Event(type="deploy.go")])
    handle = engine.get_handle("d1")
    assert await handle.result(timeout=HANG_GUARD) == ["one-prime", "two"]
    assert ran == Counter({"one": 1, "two": 2, "one-prime": 1})
    assert keys["two"][0] == keys["two"][1] == "d1:2:two", (
        "the same call at the same number keeps its idempotency key: a platform that "
        "honours keys makes that effect once"
    )
    (marker,) = [h for h in (await engine.get_workflow("d1")).history if h.kind == "migrated"]
    assert (marker.data["point"], marker.data["forced"]) == (0, True)
    assert [c["effect"] is not None for c in marker.data["superseded"]] == [True, True, False]
    assert (await check_replays(engine.store, engine)).ok


async def test_a_plan_needs_a_blocked_instance(memory_env: Env) -> None:
    engine = await memory_env.engine(register_v1)
    await engine.start_workflow("deploy", None, workflow_id="d1")
    await until_status(engine, "d1", WorkflowStatus.WAITING)
    with pytest.raises(WorkflowError, match="not blocked"):
        await engine.plan_migration("d1", 1)


UNDO_GATE: dict[str, Any] = {}


async def undo(tag: str) -> None:
    """A compensation that hangs until the test lets it finish (to stop mid-compensation)."""
    ran[f"undo-{tag}"] += 1
    await UNDO_GATE["event"].wait()


def _fail() -> None:
    from contexten.exceptions import NonRetryableError

    raise NonRetryableError("no")


def register_compensating(version: int, first: str) -> Any:
    def register(engine: WorkflowEngine) -> None:
        @engine.workflow("saga", version=version)
        async def saga(wf: Any, _: Any) -> None:
            await wf.step(effect, first, name=first, compensate=undo)
            await wf.step(_fail, name="fail")

    return register


async def test_an_instance_stopped_while_compensating_moves_only_to_a_version_replaying_it_all(
    memory_env: Env,
) -> None:
    import asyncio

    UNDO_GATE["event"] = asyncio.Event()
    engine = await memory_env.engine(register_compensating(1, "reserve"))
    await engine.start_workflow("saga", None, workflow_id="s1")
    await until_status(engine, "s1", WorkflowStatus.COMPENSATING)
    engine = await memory_env.restart(engine, register_compensating(2, "book"))  # v1 gone
    await until_status(engine, "s1", WorkflowStatus.BLOCKED)

    with pytest.raises(MigrationRefused, match="compensating") as refused:
        await engine.migrate_workflow("s1", 2, force=True)  # diverges at call 1: never
    assert not refused.value.forceable
    assert (await engine.get_workflow("s1")).status is WorkflowStatus.BLOCKED

    def register_v3(engine: WorkflowEngine) -> None:
        register_compensating(2, "book")(engine)
        register_compensating(3, "reserve")(engine)

    engine = await memory_env.restart(engine, register_v3)
    UNDO_GATE["event"].set()
    plan = await engine.migrate("s1", 3)  # the same calls: it takes the compensation over
    assert plan.complete
    await until_status(engine, "s1", WorkflowStatus.COMPENSATED)
