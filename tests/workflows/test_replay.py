"""Golden histories replay against the current code; divergent code is caught and parked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contexten.exceptions import NondeterminismError, WorkflowFailedError, WorkflowNotRegistered
from contexten.testing import Replayer, export_history, load_history, save_history
from contexten.workflows import WorkflowEngine, WorkflowStatus

from . import golden
from .conftest import HANG_GUARD, Env, until_status

GOLDEN = sorted(golden.HISTORIES.glob("*.json"))


def test_the_golden_histories_are_there() -> None:
    names = {p.stem for p in GOLDEN}
    assert {"order-completed", "order-declined", "order-in-flight", "approval-yes"} <= names


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
async def test_golden_history_replays_against_the_current_code(path: Path) -> None:
    outcome = await Replayer(golden.WORKFLOWS).replay_file(path)
    history = load_history(path)
    final = history["events"][-1]["event"]["type"].rsplit(".", 1)[-1]
    if final == "completed":
        assert outcome.returned
        assert outcome.result == history["events"][-1]["event"]["data"]["result"]
    elif final in ("compensated", "failed"):
        assert outcome.error is not None
    else:
        assert outcome.in_flight


async def _renamed_step(wf: Any, order: dict[str, Any]) -> Any:
    await wf.step(golden.reserve_stock, order, name="reserve_inventory")


async def _inserted_timer(wf: Any, order: dict[str, Any]) -> Any:
    await wf.step(golden.reserve_stock, order)
    await wf.sleep(60)
    await wf.step(golden.charge_card, order)


async def _dropped_steps(wf: Any, order: dict[str, Any]) -> Any:
    return await wf.step(golden.reserve_stock, order)


@pytest.mark.parametrize("changed", [_renamed_step, _inserted_timer, _dropped_steps])
async def test_changed_code_fails_the_replay_with_nondeterminism(changed: Any) -> None:
    replayer = Replayer({"order": changed})
    with pytest.raises(NondeterminismError) as caught:
        await replayer.replay_file(golden.HISTORIES / "order-completed.json")
    assert caught.value.workflow_id == "order-completed"


async def test_a_history_of_an_unknown_workflow_is_an_error() -> None:
    with pytest.raises(WorkflowNotRegistered):
        await Replayer({}).replay_file(golden.HISTORIES / "order-completed.json")


async def test_histories_exported_from_either_store_replay(env: Env, tmp_path: Path) -> None:
    engine = await env.engine(golden.register)
    handle = await engine.start_workflow("order", {"id": "x", "amount": 1, "declined": True})
    with pytest.raises(WorkflowFailedError):
        await handle.result(timeout=HANG_GUARD)
    history = await export_history(engine.store, handle.workflow_id)
    save_history(history, tmp_path / "h.json")
    outcome = await Replayer(engine).replay_file(tmp_path / "h.json")
    assert outcome.error is not None
    assert outcome.calls == 2


def _v1(engine: WorkflowEngine) -> None:
    async def hold(tag: str) -> str:
        return tag

    @engine.workflow("evolving")
    async def evolving(wf: Any, _: Any) -> str:
        await wf.step(hold, "a", name="first")
        await wf.wait_for("go.ahead")
        return str(await wf.step(hold, "b", name="second"))


def _v2(engine: WorkflowEngine) -> None:
    async def hold(tag: str) -> str:
        return tag

    @engine.workflow("evolving")
    async def evolving(wf: Any, _: Any) -> str:
        await wf.step(hold, "a", name="renamed-first")  # breaks in-flight instances
        await wf.wait_for("go.ahead")
        return str(await wf.step(hold, "b", name="second"))


async def test_divergent_code_blocks_the_instance_and_a_fix_redrives_it(env: Env) -> None:
    from contexten.events import Event

    engine = await env.engine(_v1)
    await engine.start_workflow("evolving", None, workflow_id="ev1")
    await until_status(engine, "ev1", WorkflowStatus.WAITING)
    engine = await env.restart(engine, _v2)
    with pytest.raises(WorkflowFailedError) as raised:
        await engine.get_handle("ev1").result(timeout=HANG_GUARD)
    assert raised.value.status == "blocked"
    info = await engine.get_workflow("ev1")
    assert info.status is WorkflowStatus.BLOCKED, "never silently failed"
    assert info.blocked_reason == "nondeterminism"
    assert info.error is not None
    assert info.error["type"] == "contexten.exceptions.NondeterminismError"
    assert "'renamed-first'" in info.error["message"]
    assert "'first'" in info.error["message"]
    recorded = [h.kind for h in info.history]
    assert recorded == ["started", "step_completed", "wait_started", "claimed", "blocked"]
    assert engine.stats.blocked["evolving"] == 1

    engine = await env.restart(engine, _v1)  # the fix is deployed: redrive
    assert (await engine.get_workflow("ev1")).status is WorkflowStatus.BLOCKED  # stays put
    handle = await engine.retry_workflow("ev1")
    await engine.store.append("go", [Event(type="go.ahead")])
    assert await handle.result(timeout=HANG_GUARD) == "b"
