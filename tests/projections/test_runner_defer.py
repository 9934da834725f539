"""The live runner commits a checkpoint moved only by events it does not handle lazily.

One transaction per projection per batch of events it ignores was a large share of the
durable dispatch path's CPU; these check that skipping it loses nothing: the checkpoint is
saved as soon as the runner catches up, a batch that writes saves it with its rows, and a
runner that stops before saving it re-folds those events into nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contexten import Event
from contexten.projections import Projection, ProjectionBatch, Query, Table
from contexten.projections.base import Write
from contexten.projections.runner import ProjectionRunner
from contexten.projections.sqlite import SqliteReadModels
from contexten.store.base import RecordedEvent
from contexten.store.sqlite import SqliteEventStore

HANG_GUARD = 30


class Counts(Projection):
    name = "counts"
    tables = (Table("counts", {"type": "text", "n": "int"}, key=("type",)),)
    patterns = ("demo.**",)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        row = await batch.get("counts", record.event.type)
        batch.put("counts", {"type": record.event.type, "n": (row["n"] if row else 0) + 1})


class CountingModels(SqliteReadModels):
    """The SQLite read models, counting the commits the runner makes."""

    commits: list[tuple[int, int]]

    async def commit(
        self,
        projection: Projection,
        writes: Sequence[Write],
        *,
        expected: int,
        position: int,
        shadow: bool = False,
    ) -> None:
        await super().commit(
            projection, writes, expected=expected, position=position, shadow=shadow
        )
        self.commits.append((len(writes), position))


async def _publish(store: SqliteEventStore, kind: str, n: int) -> None:
    for i in range(n):
        await store.append(f"s-{kind}-{i % 4}", [Event(type=kind, source="t")])


async def _run_until(runner: ProjectionRunner, position: int, models: Any) -> asyncio.Task[None]:
    task = asyncio.ensure_future(runner.run(idle_wait=0.05))
    async with asyncio.timeout(HANG_GUARD):
        for _ in range(1_000_000):
            if (await models.checkpoint("counts")).position >= position:
                break
            await asyncio.sleep(0.01)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_events_it_ignores_are_committed_once_caught_up_not_batch_by_batch(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    async with SqliteEventStore(url) as store:
        models = CountingModels(url)
        models.commits = []
        await models.open()
        try:
            await _publish(store, "other.thing", 60)
            runner = ProjectionRunner(store, models, Counts(), batch_size=10)
            head = await store.head()
            task = await _run_until(runner, head, models)
            # six batches of ignored events: one commit, made when the runner caught up
            assert models.commits == [(0, head)]
            status = await runner.status()
            assert (status.position, status.lag) == (head, 0)

            await _publish(store, "other.thing", 5)
            await _publish(store, "demo.thing", 3)
            head = await store.head()
            await _run_until(runner, head, models)
            assert models.commits[-1][1] == head
            assert sum(w for w, _ in models.commits) >= 1  # the batch that wrote saved it
            rows = await models.query(Counts.tables[0], Query())
            assert rows == [{"type": "demo.thing", "n": 3}]
            await _stop(task)
        finally:
            await models.close()


async def test_a_runner_stopped_before_saving_refolds_into_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    async with SqliteEventStore(url) as store:
        models = CountingModels(url)
        models.commits = []
        await models.open()
        try:
            await _publish(store, "demo.thing", 2)
            runner = ProjectionRunner(store, models, Counts(), batch_size=10)
            saved = await store.head()
            task = await _run_until(runner, saved, models)
            await _stop(task)
            # ignored events folded in memory only: the stored checkpoint stays behind
            await _publish(store, "other.thing", 4)
            assert await runner.step(defer_empty=True) == (await store.head(), 4)
            assert (await models.checkpoint("counts")).position == saved
            assert (await runner.status()).lag == 0, "folded counts as folded"

            again = ProjectionRunner(store, models, Counts(), batch_size=10)
            await _publish(store, "demo.thing", 1)
            head = await store.head()
            task = await _run_until(again, head, models)
            await _stop(task)
            rows = await models.query(Counts.tables[0], Query())
            assert rows == [{"type": "demo.thing", "n": 3}], "nothing counted twice or lost"
            # the first runner's memory is stale now: its next write conflicts, then re-reads
            await _publish(store, "demo.thing", 1)
            head = await store.head()
            task = await _run_until(runner, head, models)
            await _stop(task)
            rows = await models.query(Counts.tables[0], Query())
            assert rows == [{"type": "demo.thing", "n": 4}]
        finally:
            await models.close()
