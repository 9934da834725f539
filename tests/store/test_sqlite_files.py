"""The SQLite store's file: bad paths, foreign or damaged files, schema versions, migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from contexten.events import Event
from contexten.exceptions import SchemaVersionError, StoreCorrupted, StoreUnavailable
from contexten.store._sqlite_schema import MIGRATIONS
from contexten.store.sqlite import SqliteEventStore


def _event(**data: object) -> Event:
    return Event(type="test.happened", source="tests", data=data)


def _sql(path: Path, *statements: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            rows = conn.execute(statement).fetchall()
        return rows
    finally:
        conn.close()


async def _fill(path: Path, count: int = 3) -> list[Event]:
    events = [_event(i=i) for i in range(count)]
    async with SqliteEventStore(f"sqlite:///{path}") as store:
        await store.append("s", events)
    return events


# -- paths -----------------------------------------------------------------------------------


async def test_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "events.db"
    with pytest.raises(StoreUnavailable, match="does not exist") as caught:
        await SqliteEventStore(f"sqlite:///{path}").open()
    assert str(path) in str(caught.value)


async def test_parent_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a directory")
    path = tmp_path / "plain" / "events.db"
    with pytest.raises(StoreUnavailable, match="is not a directory") as caught:
        await SqliteEventStore(f"sqlite:///{path}").open()
    assert str(path) in str(caught.value)


async def test_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="is a directory"):
        await SqliteEventStore(f"sqlite:///{tmp_path}").open()


async def test_empty_file_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.touch()
    events = await _fill(path)
    async with SqliteEventStore(f"sqlite:///{path}") as store:
        assert [r.event for r in await store.read_all()] == events


# -- foreign and damaged files -----------------------------------------------------------------


async def test_garbage_file_is_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"this is a text file, not a database\n" * 200)
    with pytest.raises(StoreCorrupted, match="not a SQLite database") as caught:
        await SqliteEventStore(f"sqlite:///{path}").open()
    assert str(path) in str(caught.value)


async def test_damaged_header_is_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await _fill(path)
    _sql(path, "PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(path.read_bytes())
    raw[:16] = b"not SQLite here!"
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreCorrupted):
        await SqliteEventStore(f"sqlite:///{path}").open()


async def test_another_applications_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    _sql(path, "CREATE TABLE users (id INTEGER PRIMARY KEY)", "INSERT INTO users VALUES (1)")
    with pytest.raises(StoreCorrupted, match="users but no Contexten schema"):
        await SqliteEventStore(f"sqlite:///{path}").open()
    assert _sql(path, "PRAGMA journal_mode") == [("delete",)]  # not switched to WAL
    assert _sql(path, "SELECT id FROM users") == [(1,)]


async def test_foreign_application_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    _sql(path, "PRAGMA application_id = 1234")
    with pytest.raises(StoreCorrupted, match="another application"):
        await SqliteEventStore(f"sqlite:///{path}").open()


# -- schema versions ---------------------------------------------------------------------------


def _add_type_index(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE INDEX events_type ON events (type)")


def _broken_step(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE INDEX events_type ON events (type)")
    conn.execute("ALTER TABLE no_such_table ADD COLUMN x")


class _NextVersionStore(SqliteEventStore):
    """This code's schema plus one more step, as the next release would have."""

    _migrations = (*MIGRATIONS, _add_type_index)


class _BrokenMigrationStore(SqliteEventStore):
    _migrations = (*MIGRATIONS, _broken_step)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await _fill(path)
    _sql(path, "PRAGMA user_version = 99")
    with pytest.raises(SchemaVersionError, match="schema version 99, newer than this") as caught:
        await SqliteEventStore(f"sqlite:///{path}").open()
    assert str(path) in str(caught.value)


async def test_older_schema_is_migrated_keeping_the_events(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    events = await _fill(path)
    async with _NextVersionStore(f"sqlite:///{path}") as store:
        assert [r.event for r in await store.read_all()] == events
        await store.append("s", [_event()], expected_version=3)
    assert _sql(path, "PRAGMA user_version") == [(len(MIGRATIONS) + 1,)]
    assert _sql(path, "SELECT name FROM sqlite_schema WHERE name = 'events_type'") == [
        ("events_type",)
    ]
    # This code is now the older one: it refuses the migrated file.
    with pytest.raises(SchemaVersionError):
        await SqliteEventStore(f"sqlite:///{path}").open()


async def test_failed_migration_leaves_the_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    events = await _fill(path)
    current = len(MIGRATIONS)
    with pytest.raises(
        SchemaVersionError, match=f"from schema version {current} to {current + 1} failed"
    ):
        await _BrokenMigrationStore(f"sqlite:///{path}").open()
    assert _sql(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert _sql(path, "SELECT name FROM sqlite_schema WHERE name = 'events_type'") == []
    async with SqliteEventStore(f"sqlite:///{path}") as store:
        assert [r.event for r in await store.read_all()] == events


async def test_undecodable_event_is_reported_as_corruption(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    await _fill(path)
    _sql(path, "UPDATE events SET body = x'7b7d' WHERE position = 2")
    async with SqliteEventStore(f"sqlite:///{path}") as store:
        with pytest.raises(StoreCorrupted, match="position 2"):
            await store.read_all()
        assert [r.position for r in await store.read_all(limit=1)] == [1]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_file_deleted_or_replaced_under_the_store_stops_its_writes(
    tmp_path: Path, how: str
) -> None:
    path = tmp_path / "gone.db"
    other = tmp_path / "other.db"
    await _fill(other, 1)
    async with SqliteEventStore(f"sqlite:///{path}") as store:
        before = _event(n=1)
        await store.append("s", [before])
        await store.ping()
        # Keep the open files reachable under another name, then take the path away.
        _remove_keeping_a_link(path, tmp_path / "kept.db")
        if how == "replaced":
            other.rename(path)
        with pytest.raises(StoreUnavailable, match=how):
            await store.append("s", [_event(n=2)])
        with pytest.raises(StoreUnavailable, match="writes have stopped"):
            await store.ping()
        with pytest.raises(StoreUnavailable, match=how):  # for good, not just once
            await store.append("t", [_event(n=3)])
    async with SqliteEventStore(f"sqlite:///{tmp_path / 'kept.db'}") as original:
        assert [r.event for r in await original.read_all()] == [before]


def _remove_keeping_a_link(db: Path, kept: Path) -> None:
    """``rm db*``, after linking the database and its WAL as ``kept`` (to check them later)."""
    for suffix in ("", "-wal"):
        Path(f"{kept}{suffix}").hardlink_to(f"{db}{suffix}")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
