"""Reading and steering instances from the store alone (what the CLI and API use)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contexten.exceptions import WorkflowNotFound
from contexten.workflows import (
    WorkflowEngine,
    WorkflowStatus,
    get_workflow_info,
    list_workflows,
    request_cancel,
    request_redrive,
)

from .conftest import HANG_GUARD, Env, until_status


def setup(engine: WorkflowEngine) -> None:
    @engine.workflow("quick")
    async def quick(wf: Any, n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        return n

    @engine.workflow("slow")
    async def slow(wf: Any, _: Any) -> None:
        await wf.wait_for("never.happens")


async def test_list_show_and_json_forms(env: Env) -> None:
    engine = await env.engine(setup)
    await (await engine.start_workflow("quick", 1, "q1")).result(timeout=HANG_GUARD)
    bad = await engine.start_workflow("quick", -1, "q2")
    with pytest.raises(Exception, match="negative"):
        await bad.result(timeout=HANG_GUARD)
    await engine.start_workflow("slow", None, "s1")
    await until_status(engine, "s1", WorkflowStatus.WAITING)

    store = await env.open_store()
    everything = await list_workflows(store)
    assert [(i.workflow_id, i.status) for i in everything] == [
        ("q1", WorkflowStatus.COMPLETED),
        ("q2", WorkflowStatus.FAILED),
        ("s1", WorkflowStatus.WAITING),
    ]
    assert [i.workflow_id for i in await list_workflows(store, "failed")] == ["q2"]
    assert [i.workflow_id for i in await list_workflows(store, name="slow")] == ["s1"]
    with pytest.raises(ValueError, match="sleepy"):
        await list_workflows(store, "sleepy")  # not a status

    shown = await get_workflow_info(store, "s1")
    line = json.dumps(shown.to_dict(with_history=True))
    parsed = json.loads(line)
    assert parsed["status"] == "waiting"
    assert parsed["current_step"] == "wait:never.happens"
    assert [h["type"] for h in parsed["history"]] == ["started", "wait_started"]
    assert everything[0].to_dict()["result"] == 1
    with pytest.raises(WorkflowNotFound):
        await get_workflow_info(store, "nope")

    assert await request_redrive(store, "q1") is False  # only failed instances
    assert await request_cancel(store, "q1") is False  # already ended
    assert await request_cancel(store, "s1") is True
    with pytest.raises(WorkflowNotFound):
        await request_cancel(store, "nope")
    await until_status(engine, "s1", WorkflowStatus.CANCELLED)
