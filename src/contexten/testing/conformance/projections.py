"""The read-model conformance suite: the contract of :class:`~contexten.projections.ReadModels`.

Every backend's tests subclass :class:`ReadModelsConformance` and say how to make a store and
the read models beside it::

    class TestSqliteReadModels(ReadModelsConformance):
        def make_store(self, directory: Path) -> EventStore:
            return SqliteEventStore(f"sqlite:///{directory}/events.db")

``make_models`` defaults to :func:`contexten.projections.create_read_models` of the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from contexten.events.envelope import Event
from contexten.exceptions import ProjectionConflict
from contexten.projections import (
    Commit,
    Delete,
    Projection,
    ProjectionBatch,
    ProjectionRunner,
    ProjectionStatus,
    Put,
    Query,
    ReadModels,
    Table,
    create_read_models,
)
from contexten.store.base import EventStore, RecordedEvent

__all__ = ["CountingProjection", "ReadModelsConformance"]

_HANG_GUARD = 60.0
_T0 = datetime(2026, 1, 1, tzinfo=UTC)


class CountingProjection(Projection):
    """Counts events per type and records every folded position once (a test projection).

    ``fail_at`` makes :meth:`apply` raise at that position (a crash in the middle of a batch).
    """

    name = "conformance_counts"
    tables = (
        Table(
            "conf_counts",
            {"type": "text", "n": "int", "last": "int", "seen": "json", "at": "time"},
            key=("type",),
            indexes=(("n",),),
        ),
    )
    patterns = ("conformance.**",)

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Count the event; remember its position."""
        if record.position == self.fail_at:
            raise RuntimeError(f"failing at {record.position} on purpose")
        t = record.event.type
        row = await batch.get("conf_counts", t) or {"type": t, "n": 0, "seen": []}
        batch.put(
            "conf_counts",
            {
                "type": t,
                "n": row["n"] + 1,
                "last": record.position,
                "seen": [*row["seen"], record.position],
                "at": record.event.time,
            },
        )


class _Versioned(CountingProjection):
    version = 2


class _Weighted(CountingProjection):
    """A version 2 whose ``apply`` means something else: each event counts twice."""

    version = 2

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Count the event twice."""
        await super().apply(record, batch)
        row = await batch.get("conf_counts", record.event.type)
        assert row is not None
        batch.put("conf_counts", {**row, "n": row["n"] + 1})


class _Wide(Projection):
    """Rows of every column type under a two-column key (reads and writes by many keys)."""

    name = "conformance_wide"
    tables = (
        Table(
            "conf_wide",
            {
                "k": "text",
                "at": "time",
                "n": "int",
                "x": "float",
                "ok": "bool",
                "doc": "json",
                "note": "text",
            },
            key=("k", "n"),
        ),
    )
    patterns = ("conformance.**",)

    async def apply(self, record: RecordedEvent, batch: ProjectionBatch) -> None:
        """Not folded: the tests write its rows directly."""


def _wide(k: str, n: int, note: str | None = "v1") -> dict[str, Any]:
    return {
        "k": k,
        "at": _T0 + timedelta(seconds=n),
        "n": n,
        "x": n / 2,
        "ok": n % 2 == 0,
        "doc": {"n": n, "tags": [k, "t"]},
        "note": note,
    }


def _event(kind: str, n: int = 0) -> Event:
    return Event(type=f"conformance.{kind}", source="conformance", time=_T0 + timedelta(seconds=n))


async def _until_caught_up(runner: ProjectionRunner) -> ProjectionStatus:
    """Poll until ``runner`` reports no lag and no stale tables (bounded by the caller)."""
    for _ in range(100_000):
        status = await runner.status()
        if not status.lag and not status.stale:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError("the projection never caught up")


class ReadModelsConformance:
    """The read-model contract as tests; subclass it once per backend."""

    supports_reopen: ClassVar[bool] = True

    def make_store(self, directory: Path) -> EventStore:
        """Return a new, unopened store keeping its data in ``directory``."""
        raise NotImplementedError

    def make_models(self, store: EventStore) -> ReadModels:
        """Return the unopened read models beside ``store``."""
        return create_read_models(store)

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[EventStore]:
        """An open store in a fresh directory."""
        async with self.make_store(tmp_path) as store:
            yield store

    @pytest.fixture
    async def models(self, store: EventStore) -> AsyncIterator[ReadModels]:
        """Open read models beside ``store``."""
        models = self.make_models(store)
        await models.open()
        try:
            yield models
        finally:
            await models.close()

    async def _fill(self, store: EventStore, kinds: dict[str, int]) -> None:
        i = 0
        for kind, n in kinds.items():
            for _ in range(n):
                i += 1
                await store.append(f"s-{kind}", [_event(kind, i)])

    async def _counts(self, models: ReadModels, projection: Projection) -> dict[str, int]:
        rows = await models.query(projection.tables[0], Query(order=("type",)))
        return {r["type"]: r["n"] for r in rows}

    async def test_catch_up_folds_every_event_once(
        self, store: EventStore, models: ReadModels
    ) -> None:
        projection = CountingProjection()
        await models.ensure(projection)
        await self._fill(store, {"a": 7, "b": 5})
        await store.append("other", [Event(type="unrelated.thing", source="x")])
        runner = ProjectionRunner(store, models, projection, batch_size=4)
        async with asyncio.timeout(_HANG_GUARD):
            position = await runner.catch_up()
        assert position == await store.head() == 13
        assert await self._counts(models, projection) == {"conformance.a": 7, "conformance.b": 5}
        row = await models.get(projection.tables[0], ("conformance.a",))
        assert row is not None
        assert row["seen"] == list(range(1, 8))
        assert row["last"] == 7
        assert row["at"] == _T0 + timedelta(seconds=7)
        status = await runner.status()
        assert (status.position, status.lag, status.version, status.stale) == (13, 0, 1, False)

    async def test_commit_is_conditional_on_the_checkpoint(
        self, store: EventStore, models: ReadModels
    ) -> None:
        projection = CountingProjection()
        table = projection.tables[0]
        await models.ensure(projection)
        row = {"type": "x", "n": 1, "last": 1, "seen": [1], "at": _T0}
        await models.commit(projection, [Put(table.name, row)], expected=0, position=5)
        with pytest.raises(ProjectionConflict):
            await models.commit(
                projection, [Put(table.name, {**row, "type": "y"})], expected=0, position=6
            )
        assert await models.get(table, ("y",)) is None
        assert (await models.checkpoint(projection.name)).position == 5

    async def test_commit_many_writes_each_batch_whose_checkpoint_holds(
        self, store: EventStore, models: ReadModels
    ) -> None:
        counts, wide = CountingProjection(), _Wide()
        await models.ensure(counts)
        await models.ensure(wide)
        count_row = {"type": "x", "n": 1, "last": 1, "seen": [1], "at": _T0}
        await models.commit(counts, [Put("conf_counts", count_row)], expected=0, position=3)
        conflicted = await models.commit_many(
            [
                # counts is at 3, not 0: its batch is dropped, wide's is written.
                Commit(counts, [Put("conf_counts", {**count_row, "type": "y"})], 0, 4),
                Commit(wide, [Put("conf_wide", _wide("a", 1))], 0, 4),
            ]
        )
        assert conflicted == {counts.name}
        assert await models.get(counts.tables[0], ("y",)) is None
        assert (await models.checkpoint(counts.name)).position == 3
        assert await models.get(wide.tables[0], ("a", 1)) == _wide("a", 1)
        assert (await models.checkpoint(wide.name)).position == 4
        # Both holding: both written; a batch of no rows moves its checkpoint only.
        conflicted = await models.commit_many(
            [Commit(counts, [Delete("conf_counts", ("x",))], 3, 9), Commit(wide, [], 4, 9)]
        )
        assert conflicted == set()
        assert await models.get(counts.tables[0], ("x",)) is None
        assert [(await models.checkpoint(p.name)).position for p in (counts, wide)] == [9, 9]

    async def test_get_many_reads_the_rows_of_the_keys_that_have_one(
        self, store: EventStore, models: ReadModels
    ) -> None:
        projection = _Wide()
        table = projection.tables[0]
        await models.ensure(projection)
        rows = [_wide("a", 1), _wide("a", 2, note=None), _wide("b", 1)]
        await models.commit(projection, [Put(table.name, r) for r in rows], expected=0, position=1)
        assert await models.get_many(table, []) == {}
        found = await models.get_many(table, [("a", 2), ("b", 1), ("b", 2), ("a", 2), ("c", 9)])
        assert found == {("a", 2): rows[1], ("b", 1): rows[2]}
        with pytest.raises(ValueError, match="key of 2"):
            await models.get_many(table, [("a",)])

    async def test_commit_keeps_the_last_write_of_each_key(
        self, store: EventStore, models: ReadModels
    ) -> None:
        projection = _Wide()
        name = projection.tables[0].name
        await models.ensure(projection)
        await models.commit(
            projection,
            [Put(name, _wide("c", 1)), Put(name, _wide("d", 1))],
            expected=0,
            position=1,
        )
        await models.commit(
            projection,
            [
                Put(name, _wide("a", 1)),
                Delete(name, ("a", 1)),
                Put(name, _wide("b", 1)),
                Put(name, _wide("b", 1, note="v2")),
                Delete(name, ("c", 1)),
                Put(name, _wide("c", 1, note="v2")),
                Delete(name, ("d", 1)),
                Delete(name, ("e", 1)),
            ],
            expected=1,
            position=2,
        )
        rows = await models.query(projection.tables[0], Query(order=("k",)))
        assert [(r["k"], r["note"]) for r in rows] == [("b", "v2"), ("c", "v2")]

    async def test_a_batch_reads_prefetched_rows_and_its_own_writes(
        self, store: EventStore, models: ReadModels
    ) -> None:
        projection = _Wide()
        table = projection.tables[0]
        await models.ensure(projection)
        await models.commit(
            projection,
            [Put(table.name, _wide("a", 1)), Put(table.name, _wide("b", 1))],
            expected=0,
            position=1,
        )
        batch = ProjectionBatch(models, {table.name: table}, shadow=False)
        batch.put(table.name, _wide("b", 1, note="mine"))
        await batch.prefetch(table.name, [("a", 1), ("b", 1), ("z", 1)])
        first = await batch.get(table.name, "a", 1)
        assert first == _wide("a", 1)
        first["doc"]["tags"].append("changed in place")  # must not reach the batch's copy
        assert await batch.get(table.name, "a", 1) == _wide("a", 1)
        assert (await batch.get(table.name, "b", 1) or {})["note"] == "mine"
        assert await batch.get(table.name, "z", 1) is None
        with pytest.raises(ValueError, match="key of 2"):
            await batch.prefetch(table.name, [("a",)])

    async def test_a_failing_batch_writes_nothing_and_resumes_exactly(
        self, store: EventStore, models: ReadModels
    ) -> None:
        await self._fill(store, {"a": 10})
        failing = CountingProjection(fail_at=7)
        await models.ensure(failing)
        runner = ProjectionRunner(store, models, failing, batch_size=4)
        with pytest.raises(RuntimeError, match="on purpose"):
            await runner.catch_up()
        assert (await models.checkpoint(failing.name)).position == 4
        assert await self._counts(models, failing) == {"conformance.a": 4}
        fixed = ProjectionRunner(store, models, CountingProjection(), batch_size=4)
        await fixed.catch_up()
        row = await models.get(failing.tables[0], ("conformance.a",))
        assert row is not None
        assert row["seen"] == list(range(1, 11))

    async def test_two_runners_racing_never_double_apply(
        self, store: EventStore, models: ReadModels
    ) -> None:
        await self._fill(store, {"a": 40, "b": 20})
        projection = CountingProjection()
        await models.ensure(projection)
        other = self.make_models(store)
        await other.open()
        try:
            runners = [
                ProjectionRunner(store, m, CountingProjection(), batch_size=3)
                for m in (models, other)
            ]
            async with asyncio.timeout(_HANG_GUARD):
                await asyncio.gather(*(r.catch_up() for r in runners))
        finally:
            await other.close()
        row = await models.get(projection.tables[0], ("conformance.a",))
        assert row is not None
        assert row["seen"] == list(range(1, 41))
        assert await self._counts(models, projection) == {"conformance.a": 40, "conformance.b": 20}

    async def test_queries_filter_sort_and_page(
        self, store: EventStore, models: ReadModels
    ) -> None:
        projection = CountingProjection()
        await models.ensure(projection)
        table = projection.tables[0]
        rows = [
            {"type": f"t{i:02d}", "n": i % 4, "last": i, "seen": {"i": i}, "at": _T0 + timedelta(i)}
            for i in range(20)
        ]
        await models.commit(projection, [Put(table.name, r) for r in rows], expected=0, position=1)
        assert await models.count(table) == 20
        assert await models.count(table, {"n": 1}) == 5
        page = await models.query(table, Query(where={"n": 1}, order=("last",), limit=2))
        assert [r["type"] for r in page] == ["t01", "t05"]
        cursor = [page[-1]["last"], page[-1]["type"]]
        page2 = await models.query(table, Query(where={"n": 1}, order=("last",), after=cursor))
        assert [r["type"] for r in page2] == ["t09", "t13", "t17"]
        newest = await models.query(table, Query(order=("-at",), limit=3))
        assert [r["last"] for r in newest] == [19, 18, 17]
        after = [newest[-1]["at"], newest[-1]["type"]]
        older = await models.query(table, Query(order=("-at",), limit=2, after=after))
        assert [r["last"] for r in older] == [16, 15]
        ranged = await models.query(
            table, Query(since=("at", _T0 + timedelta(3)), until=("at", _T0 + timedelta(6)))
        )
        assert [r["last"] for r in ranged] == [3, 4, 5]
        assert [r["type"] for r in await models.query(table, Query(prefix=("type", "t1")))] == [
            f"t1{i}" for i in range(10)
        ]
        assert (await models.query(table, Query(where={"type": "t03"})))[0]["seen"] == {"i": 3}
        with pytest.raises(ValueError, match="no column"):
            await models.query(table, Query(where={"nope": 1}))
        with pytest.raises(ValueError, match="limit"):
            await models.query(table, Query(limit=0))

    async def test_rebuild_swaps_in_while_the_live_runner_folds(
        self, store: EventStore, models: ReadModels
    ) -> None:
        await self._fill(store, {"a": 30})
        projection = CountingProjection()
        await models.ensure(projection)
        live = ProjectionRunner(store, models, projection, batch_size=5)
        await live.catch_up()
        # Damage the live table: a rebuild must put it right.
        table = projection.tables[0]
        wrong = {"type": "conformance.a", "n": 999, "last": 0, "seen": [], "at": _T0}
        await models.commit(projection, [Put(table.name, wrong)], expected=30, position=30)
        task = asyncio.create_task(live.run(idle_wait=0.05))
        try:
            rebuilder = ProjectionRunner(store, models, CountingProjection(), batch_size=7)
            seen: list[tuple[int, int]] = []
            async with asyncio.timeout(_HANG_GUARD):
                await self._fill(store, {"a": 5})
                await rebuilder.rebuild(progress=lambda p, h: seen.append((p, h)))
                await self._fill(store, {"a": 5})
                await _until_caught_up(live)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert seen
        assert seen[-1][0] == seen[-1][1]
        row = await models.get(table, ("conformance.a",))
        assert row is not None
        assert row["seen"] == list(range(1, 41))
        assert row["n"] == 40

    async def test_a_new_version_is_stale_until_rebuilt(
        self, store: EventStore, models: ReadModels
    ) -> None:
        await self._fill(store, {"a": 3})
        await ProjectionRunner(store, models, CountingProjection()).catch_up()
        await models.ensure(_Versioned())
        runner = ProjectionRunner(store, models, _Versioned())
        assert (await runner.status()).stale
        task = asyncio.create_task(runner.run(idle_wait=0.05))
        try:
            async with asyncio.timeout(_HANG_GUARD):
                status = await _until_caught_up(runner)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert status.version == 2
        assert await self._counts(models, _Versioned()) == {"conformance.a": 3}

    async def test_catch_up_rebuilds_tables_of_another_version(
        self, store: EventStore, models: ReadModels
    ) -> None:
        await self._fill(store, {"a": 3})
        await ProjectionRunner(store, models, CountingProjection()).catch_up()
        await store.append("s-b", [_event("b", 9)])
        runner = ProjectionRunner(store, models, _Weighted())
        assert (await runner.status()).stale
        async with asyncio.timeout(_HANG_GUARD):
            assert await runner.catch_up() == await store.head()
        status = await runner.status()
        assert (status.version, status.stale, status.lag) == (2, False, 0)
        # every event folded by version 2 (not 3 + 2 x 2 from folding on)
        assert await self._counts(models, _Weighted()) == {"conformance.a": 6, "conformance.b": 2}

    async def test_rows_and_checkpoint_survive_a_reopen(self, tmp_path: Path) -> None:
        if not self.supports_reopen:
            pytest.skip(f"{type(self).__name__}: this backend keeps nothing after close")
        projection = CountingProjection()
        async with self.make_store(tmp_path) as store:
            models = self.make_models(store)
            await models.open()
            await models.ensure(projection)
            await self._fill(store, {"a": 3})
            await ProjectionRunner(store, models, projection).catch_up()
            await models.close()
        async with self.make_store(tmp_path) as store:
            models = self.make_models(store)
            await models.open()
            try:
                await models.ensure(projection)
                assert (await models.checkpoint(projection.name)).position == 3
                assert await self._counts(models, projection) == {"conformance.a": 3}
            finally:
                await models.close()
