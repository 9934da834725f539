"""workflows and work_items fold a batch's events after reading the batch's rows at once:
whatever the batch size and backend, they must reach the rows one big batch reaches.

The log interleaves several work items (webhooks with a correlation id, a workflow history
started by one of them, an action) so a small batch holds parts of several instances and an
instance spans batches; a retention record then marks an entry's data removed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from contexten import Event
from contexten.projections import (
    Projection,
    ProjectionRunner,
    Query,
    ReadModels,
    create_read_models,
)
from contexten.projections.work_items import DATA_REMOVED, WorkItemsProjection
from contexten.projections.workflows import WorkflowsProjection
from contexten.store.base import EventStore
from contexten.store.memory import MemoryEventStore
from contexten.store.retention import RETENTION_PRUNED, RETENTION_STREAM
from contexten.workflows.history import history_event, stream_name

ITEMS = 6


def _log() -> list[tuple[str, Event]]:
    """Each work item's events, then interleaved round-robin across the items."""
    per_item: list[list[tuple[str, Event]]] = []
    for n in range(ITEMS):
        cid = f"ENG-{n}"
        wid = f"review:{cid}"
        hook = Event(type="github.pull_request.opened", source="github", correlation_id=cid)
        started = history_event(
            "started",
            {"name": "review", "version": str(1 + n % 2), "kind": "function",
             "input_is_event": True, "input": {"correlation_id": cid}},
            wid,
        )  # fmt: skip
        step = history_event("step_completed", {"seq": 1, "name": "comment", "result": n}, wid)
        events = [(f"github-{n}", hook), (stream_name(wid), started), (stream_name(wid), step)]
        if n % 3:  # items 0 and 3 stay running
            done = history_event("completed", {"result": n}, wid)
            events.append((stream_name(wid), done))
        action = Event(
            type="contexten.action.github.comment_created",
            source="contexten",
            correlation_id=cid,
            causation_id=hook.id,
        )
        events.append((f"actions-{n}", action))
        events.append((f"linear-{n}", Event(type="linear.issue.updated", source="linear",
                                            correlation_id=cid)))  # fmt: skip
        per_item.append(events)
    out: list[tuple[str, Event]] = []
    for i in range(max(len(e) for e in per_item)):
        out.extend(events[i] for events in per_item if i < len(events))
    return out


LOG = _log()
"""One log for every store, so event ids and positions agree across them."""


async def _fill(store: EventStore) -> None:
    for stream, event in LOG:
        await store.append(stream, [event])


async def _tables(models: ReadModels, projection: Projection) -> dict[str, list[dict[str, Any]]]:
    return {t.name: await models.query(t, Query(limit=10_000)) for t in projection.tables}


def _untimed(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The rows without the times each store stamps itself (``recorded_at`` and what
    derives from it): whether a time is set stays."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, rows in tables.items():
        out[name] = []
        for row in rows:
            row = {k: (v is not None if isinstance(v, datetime) or k.endswith("_at") or k == "time"
                       else v) for k, v in row.items()}  # fmt: skip
            if isinstance(row.get("fold"), dict):
                row["fold"] = {k: v for k, v in row["fold"].items() if k != "created_at"}
            out[name].append(row)
    return out


async def _fold(store: EventStore, batch_size: int) -> dict[str, list[dict[str, Any]]]:
    """Both projections caught up with ``batch_size``; a retention record; caught up again."""
    models = create_read_models(store)
    await models.open()
    try:
        projections: list[Projection] = [WorkflowsProjection(), WorkItemsProjection()]
        runners = [ProjectionRunner(store, models, p, batch_size=batch_size) for p in projections]
        for p, runner in zip(projections, runners, strict=True):
            await models.ensure(p)
            await runner.catch_up()
        entry = (await models.query(
            WorkItemsProjection.tables[1], Query(where={"correlation_id": "ENG-2"}, limit=1)
        ))[0]  # fmt: skip
        pruned = Event(
            type=RETENTION_PRUNED,
            source="contexten",
            data={"work_items": [["ENG-2", entry["position"]], ["nobody", 1], "junk"]},
        )
        await store.append(RETENTION_STREAM, [pruned])
        for runner in runners:
            await runner.catch_up()
        out: dict[str, list[dict[str, Any]]] = {}
        for p in projections:
            out.update(await _tables(models, p))
        return out
    finally:
        await models.close()


@pytest.fixture
async def store(any_store: EventStore) -> EventStore:
    """An open store of each kind holding the interleaved log."""
    await _fill(any_store)
    return any_store


async def test_small_batches_reach_the_rows_of_one_big_batch(store: EventStore) -> None:
    reference = MemoryEventStore()
    async with reference:
        await _fill(reference)
        expected = await _fold(reference, batch_size=10_000)
    got = await _fold(store, batch_size=3)
    assert _untimed(got) == _untimed(expected)
    assert got["work_items"][0]["first_at"] <= got["work_items"][0]["last_at"]

    # The rows say what the log says (so the comparison cannot pass on two empty folds).
    workflows = {r["workflow_id"]: r for r in got["workflows"]}
    assert {w: r["status"] for w, r in workflows.items()} == {
        f"review:ENG-{n}": "running" if n % 3 == 0 else "completed" for n in range(ITEMS)
    }
    counts = {(r["version"], r["status"]): r["n"] for r in got["workflow_version_counts"]}
    assert counts == {("1", "running"): 1, ("2", "running"): 1, ("1", "completed"): 2,
                      ("2", "completed"): 2}  # fmt: skip
    items = {r["correlation_id"]: r for r in got["work_items"]}
    # webhook, started, step, action, linear webhook (``completed`` is not a timeline entry)
    assert {c: r["entries"] for c, r in items.items()} == {f"ENG-{n}": 5 for n in range(ITEMS)}
    assert items["ENG-1"]["sources"] == ["contexten", "contexten.workflows", "github", "linear"]
    links = {r["workflow_id"]: r["correlation_id"] for r in got["work_item_workflows"]}
    assert links == {f"review:ENG-{n}": f"ENG-{n}" for n in range(ITEMS)}
    removed = [r for r in got["work_item_entries"] if str(r["label"]).endswith(DATA_REMOVED)]
    assert [(r["correlation_id"], r["type"]) for r in removed] == [
        ("ENG-2", "github.pull_request.opened")
    ]
