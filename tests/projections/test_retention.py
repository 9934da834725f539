"""Read models follow retention: timelines keep a pruned event's entry, marked data removed;
a rebuild from the pruned log reaches the same rows; a scheduled prune runs by itself."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contexten import App, Event
from contexten.projections.read_side import open_read_side
from contexten.projections.work_items import DATA_REMOVED
from contexten.store import EventStore, create_store
from contexten.store.retention import (
    RETENTION_STREAM,
    RetentionPolicy,
    prune,
    pruned_marker,
)

HANG_GUARD = 30


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
    else:
        base = request.getfixturevalue("postgres_url")
        schema = f"ctx_ret_{uuid.uuid4().hex[:10]}"
        url = f"{base}?schema={schema}"
    async with create_store(url) as opened:
        yield opened
    if request.param == "postgres":
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def _labels(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["label"]) for e in entries]


async def test_timelines_follow_pruning_and_a_rebuild_agrees(store: EventStore) -> None:
    for event in (
        Event(type="github.pull_request.opened", source="github", data={"t": "x" * 500}),
        Event(type="linear.issue.updated", source="linear", data={"t": "y"}),
        Event(type="github.push", source="github", data={"t": "z" * 500}),
    ):
        await store.append("work", [event.replace(correlation_id="ENG-7")])
    async with open_read_side(store) as read:
        before = (await read.timeline("ENG-7")).items
        assert _labels(before) == [
            ("github.pull_request.opened", "github.pull_request.opened"),
            ("linear.issue.updated", "linear.issue.updated"),
            ("github.push", "github.push"),
        ]
        policy = RetentionPolicy.build({"github.**": "90d"})
        later = datetime.now(UTC) + timedelta(days=91)
        report = await prune(store, policy, now=later, dry_run=False, protected=None)
        assert report.events == {"github.**": 2}

        after = (await read.timeline("ENG-7")).items  # caught up: the record was folded
        assert _labels(after) == [
            ("github.pull_request.opened", f"github.pull_request.opened {DATA_REMOVED}"),
            ("linear.issue.updated", "linear.issue.updated"),
            ("github.push", f"github.push {DATA_REMOVED}"),
        ]
        for old, new in zip(before, after, strict=True):  # the entries themselves stay
            assert {k: v for k, v in old.items() if k != "label"} == {
                k: v for k, v in new.items() if k != "label"
            }
        item = await read.work_item("ENG-7")
        assert item is not None
        assert item["entries"] == 3

        await read.projections.rebuild("work_items")
        assert (await read.timeline("ENG-7")).items == after


async def test_a_scheduled_prune_runs_by_itself(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'app.db'}", checkpoint_interval=0.01)
    app.retention({"github.**": "1s"}, dedup_window="1s", every=timedelta(seconds=1))
    assert [r.pattern for r in app.retention_policy.rules] == ["github.**"]
    async with app:
        await app.publish(
            Event(type="github.push", source="github", data={"ref": "main"}), dedup_key="d-1"
        )
        async with asyncio.timeout(HANG_GUARD):
            while True:
                runs = await app.store.read_stream(RETENTION_STREAM)
                applied = [r for r in runs if r.event.type == "contexten.retention.applied"]
                if any(r.event.data["pruned_events"] for r in applied):
                    break
                await asyncio.sleep(0.2)
        pushes = [r for r in await app.store.read_all() if r.event.type == "github.push"]
        assert pruned_marker(pushes[0].event) is not None
        again = await app.publish(
            Event(type="github.push", source="github", data={"ref": "main"}), dedup_key="d-1"
        )
        assert not again.deduplicated  # the key went with the window (1 s here)
