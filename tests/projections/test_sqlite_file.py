"""SQLite read models live in a file of their own, so their transactions never hold the
event writer's lock; a store upgraded from the time they shared its file drops its copies."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import ClassVar

from contexten.events.envelope import Event
from contexten.projections.events import EventsProjection
from contexten.projections.runner import ProjectionRunner
from contexten.projections.sqlite import SqliteReadModels, read_models_path
from contexten.store._sqlite_schema import MIGRATIONS, Migration
from contexten.store.sqlite import SqliteEventStore


def test_read_models_path_sits_beside_the_store() -> None:
    assert read_models_path("/data/contexten.db") == "/data/contexten.read.db"
    assert read_models_path("/data/events.sqlite3") == "/data/events.read.sqlite3"
    assert read_models_path("/data/store") == "/data/store.read"


async def test_a_read_model_transaction_does_not_hold_up_the_event_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'contexten.db'}?busy_timeout=5"
    store = SqliteEventStore(url)
    models = SqliteReadModels(url)
    async with store:
        await models.open()
        try:
            assert Path(models.path) == tmp_path / "contexten.read.db"
            # Hold the read models' write lock, as a long fold's commit would.
            blocker = sqlite3.connect(models.path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                started = time.perf_counter()
                await store.append("s-1", [Event(type="bench.tick")])
                waited = time.perf_counter() - started
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            # In the store's own file the append would have waited for the lock (here up to
            # the 5 s busy timeout); in a file of its own it does not wait at all.
            assert waited < 2.0
        finally:
            await models.close()


async def test_the_read_models_commit_without_an_fsync_of_their_own(tmp_path: Path) -> None:
    models = SqliteReadModels(f"sqlite:///{tmp_path / 'contexten.db'}")
    await models.open()
    try:
        conn = models._conn
        assert conn is not None
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        await models.close()


class _StoreBeforeTheMove(SqliteEventStore):
    _migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS[:5]


async def test_an_upgraded_store_drops_the_read_models_it_held(tmp_path: Path) -> None:
    path = tmp_path / "contexten.db"
    url = f"sqlite:///{path}"
    async with _StoreBeforeTheMove(url) as old:
        await old.append("s-1", [Event(type="github.push")])
    # What the read models of an older version left in the store's file.
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE rm_workflows (id TEXT PRIMARY KEY)")
    conn.execute("CREATE TABLE projection_checkpoints (name TEXT PRIMARY KEY)")
    conn.execute("CREATE TABLE rmx (id TEXT)")  # not a read model: kept
    conn.commit()
    conn.close()

    store = SqliteEventStore(url)
    async with store:
        [record] = await store.read_stream("s-1")
        assert record.event.type == "github.push"
        models = SqliteReadModels(url)
        await models.open()
        try:
            runner = ProjectionRunner(store, models, EventsProjection())
            await runner.prepare()
            await runner.catch_up()
            checkpoint = await models.checkpoint("events")
            assert checkpoint.position == 1  # folded again, into the new file
        finally:
            await models.close()
    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert "rm_workflows" not in tables
    assert "projection_checkpoints" not in tables
    assert "rmx" in tables
    assert version == len(MIGRATIONS)
