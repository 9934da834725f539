"""The ``workflows`` read model's version counters against the fold, on every backend.

Instances start in two versions, end, block, are migrated to another version and are
started again (a new run); after each phase the counters must equal what folding every
instance's history says, and a rebuild from the log must reach the same counters.
"""

from __future__ import annotations

from typing import Any

import pytest

from contexten.projections import Projections, create_read_models
from contexten.projections.read_side import ReadSide, builtin_projections, in_flight_by_version
from contexten.store.base import EventStore
from contexten.workflows.admin import list_workflows
from contexten.workflows.history import WorkflowStatus, history_event, stream_name

_ERROR = {"type": "contexten.exceptions.NondeterminismError", "message": "version 1 is gone"}


@pytest.fixture
def store(any_store: EventStore) -> EventStore:
    """An open, empty store of each kind."""
    return any_store


async def _history(store: EventStore, wid: str, kind: str, data: dict[str, Any]) -> None:
    await store.append(stream_name(wid), [history_event(kind, {"workflow_id": wid, **data}, wid)])


async def _start(store: EventStore, wid: str, version: str, kind: str = "function") -> None:
    name = wid.split(":")[0]
    data = {"name": name, "version": version, "kind": kind, "input": {"key": wid}}
    await _history(store, wid, "started", data)


async def _folded_counts(store: EventStore) -> dict[tuple[str, str, str, str], int]:
    out: dict[tuple[str, str, str, str], int] = {}
    for info in await list_workflows(store):
        key = (info.name, info.version or "1", info.kind, str(info.status))
        out[key] = out.get(key, 0) + 1
    return out


async def _check(read: ReadSide, store: EventStore) -> None:
    rows = await read.workflow_version_counts()
    counts = {(r["name"], r["version"], r["kind"], r["status"]): r["n"] for r in rows}
    assert counts == await _folded_counts(store)
    by_status = {str(s): 0 for s in WorkflowStatus}
    for info in await list_workflows(store):
        by_status[str(info.status)] += 1
    assert await read.workflow_counts() == by_status
    folded = in_flight_by_version(await list_workflows(store))
    versions = await read.workflow_versions()
    assert {(v["name"], v["version"]): v["in_flight"] for v in versions} == folded
    blocked = in_flight_by_version(await list_workflows(store, "blocked"))
    assert {(v["name"], v["version"]): v["blocked"] for v in versions if v["blocked"]} == blocked


async def test_version_counters_follow_the_fold_and_survive_a_rebuild(store: EventStore) -> None:
    projections = Projections(store, create_read_models(store))
    for projection in builtin_projections():
        projections.add(projection)
    await projections.open()
    try:
        read = ReadSide(projections, fresh=True)
        assert await read.workflow_versions() == []
        # Phase 1: ten orders in version 1, five in version 2, a state machine.
        for i in range(10):
            await _start(store, f"order:a{i}", "1")
        for i in range(5):
            await _start(store, f"order:b{i}", "2")
        await _start(store, "door:d1", "", kind="state_machine")
        await _check(read, store)
        assert await read.workflow_versions() == [
            {"name": "order", "version": "1", "in_flight": 10, "blocked": 0},
            {"name": "order", "version": "2", "in_flight": 5, "blocked": 0},
        ]
        # Phase 2 (later batches: the rows are read back): some end, some block.
        for i in range(4):
            await _history(store, f"order:a{i}", "completed", {"result": i})
        await _history(store, "order:b0", "failed", {"error": _ERROR})
        for i in range(4, 8):
            await _history(
                store, f"order:a{i}", "blocked", {"reason": "version_not_registered",
                                                  "error": _ERROR, "version": "1"}
            )  # fmt: skip
        await _check(read, store)
        assert await read.workflow_versions() == [
            {"name": "order", "version": "1", "in_flight": 6, "blocked": 4},
            {"name": "order", "version": "2", "in_flight": 4, "blocked": 0},
        ]
        # Phase 3: two blocked instances migrate to version 2; one is cancelled; a
        # completed one runs again in version 2 (a new run of the same id).
        for i in (4, 5):
            await _history(
                store, f"order:a{i}", "migrated", {"from_version": "1", "to_version": "2"}
            )
        await _history(store, "order:a6", "cancelled", {"reason": "operator"})
        await _history(
            store,
            "order:a0",
            "started",
            {"name": "order", "version": "2", "input": {"key": "a0"}, "run": 2},
        )
        await _check(read, store)
        assert await read.workflow_versions() == [
            {"name": "order", "version": "1", "in_flight": 3, "blocked": 1},
            {"name": "order", "version": "2", "in_flight": 7, "blocked": 0},
        ]
        before = await read.workflow_version_counts()
        # A rebuild folds the whole log again into fresh tables: the same counters.
        assert await projections.rebuild("workflows") == await store.head()
        assert await read.workflow_version_counts() == before
        await _check(read, store)
    finally:
        await projections.close()
