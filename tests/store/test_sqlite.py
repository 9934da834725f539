"""The SQLite store: the conformance suite, plus its URL, group commit and write failures."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from contexten.events import Event
from contexten.exceptions import (
    ConfigurationError,
    InvalidEvent,
    StoreUnavailable,
    WrongExpectedVersion,
)
from contexten.store import Append, AppendResult, EventStore, create_store
from contexten.store._sqlite_schema import MIGRATIONS
from contexten.store.sqlite import SqliteEventStore, parse_sqlite_url
from contexten.testing.conformance.store import EventStoreConformance

HANG_GUARD = 60.0


def _event(**data: object) -> Event:
    return Event(type="test.happened", source="tests", data=data)


def _url(directory: Path, query: str = "") -> str:
    return f"sqlite:///{directory / 'events.db'}{query}"


class TestSqliteEventStore(EventStoreConformance):
    supports_reopen = True
    stateful_examples = 40

    def make_store(self, directory: Path) -> EventStore:
        return SqliteEventStore(_url(directory))


@contextlib.contextmanager
def write_lock_held(path: str) -> Iterator[sqlite3.Connection]:
    """Hold the file's write lock from another connection (as another process would)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


# -- URLs --------------------------------------------------------------------------------------


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_sqlite_url("sqlite:///data/x.db") == (str(tmp_path / "data" / "x.db"), {})
    assert parse_sqlite_url("sqlite:////abs/x.db") == ("/abs/x.db", {})
    assert parse_sqlite_url("sqlite:x.db") == (str(tmp_path / "x.db"), {})
    assert parse_sqlite_url("sqlite:///my%20store.db?busy_timeout=2.5&readers=3") == (
        str(tmp_path / "my store.db"),
        {"busy_timeout": 2.5, "readers": 3},
    )
    store = create_store("sqlite:///contexten.db")
    assert isinstance(store, SqliteEventStore)
    assert store.path == str(tmp_path / "contexten.db")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "names no file"),
        ("sqlite:///", "names no file"),
        ("sqlite://host/x.db", "not a host"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///x.db?colour=red", "unknown option 'colour'"),
        ("sqlite:///x.db?readers=many", "must be a whole number"),
        ("sqlite:///x.db?readers=0", "readers >= 1"),
        ("postgres:///x.db", "not a sqlite: URL"),
    ],
)
def test_bad_urls_are_explained(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SqliteEventStore(url)


# -- group commit ------------------------------------------------------------------------------


async def test_file_is_wal_with_the_contexten_schema(tmp_path: Path) -> None:
    async with SqliteEventStore(_url(tmp_path)) as store:
        await store.append("s", [_event()])
    conn = sqlite3.connect(tmp_path / "events.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


async def test_one_batch_isolates_each_commits_failure(tmp_path: Path) -> None:
    """Commits queued behind a held lock share a transaction; each fails or lands alone."""
    async with SqliteEventStore(_url(tmp_path)) as store:
        taken = _event(n="taken")
        await store.append("taken", [taken])
        shared = _event(n="shared")
        plans: list[tuple[list[Append], str | None]] = [
            ([Append("a", [_event()], 0)], None),
            ([Append("b", [_event(), taken])], None),  # id stored earlier: rejected by SQLite
            ([Append("a", [_event()], 0)], None),  # stale: a is at 1 by now
            ([Append("c", [shared])], "key"),
            ([Append("c", [_event()])], "key"),  # same key in the same batch: deduplicated
            ([Append("d", [shared])], None),  # id claimed earlier in the batch
            ([Append("a", [_event(), _event()], 1)], None),
        ]
        with write_lock_held(store.path):
            tasks = [
                asyncio.create_task(store.commit(appends, dedup_key=key)) for appends, key in plans
            ]
            await asyncio.sleep(0.05)  # every commit is queued behind the lock
            assert not any(t.done() for t in tasks)
        async with asyncio.timeout(HANG_GUARD):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert outcomes[0] == [AppendResult("a", 1, 2, 2)]
        assert isinstance(outcomes[1], InvalidEvent)
        assert taken.id in str(outcomes[1])
        assert isinstance(outcomes[2], WrongExpectedVersion)
        assert outcomes[3] == [AppendResult("c", 1, 3, 3)]
        assert outcomes[4] == [AppendResult("c", 1, 3, 3, deduplicated=True)]
        assert isinstance(outcomes[5], InvalidEvent)
        assert outcomes[6] == [AppendResult("a", 3, 4, 5)]
        records = await store.read_all()
        assert [r.position for r in records] == [1, 2, 3, 4, 5]
        assert await store.stream_version("b") == 0
        assert await store.stream_version("d") == 0


async def test_rolled_back_rows_leave_no_position_hole(tmp_path: Path) -> None:
    """Rows SQLite inserted then rolled back (savepoint) do not consume positions."""
    async with SqliteEventStore(_url(tmp_path)) as store:
        taken = _event()
        await store.append("t", [taken])
        for _ in range(3):
            with write_lock_held(store.path):
                bad_rows = [*(_event() for _ in range(5)), taken]
                tasks = [
                    asyncio.create_task(store.append("x", bad_rows)),
                    asyncio.create_task(store.append("y", [_event()])),
                ]
                await asyncio.sleep(0.02)
            with pytest.raises(InvalidEvent):
                await tasks[0]
            await tasks[1]
        assert [r.position for r in await store.read_all()] == [1, 2, 3, 4]


async def test_lock_held_past_the_timeout_is_unavailable(tmp_path: Path) -> None:
    async with SqliteEventStore(_url(tmp_path, "?busy_timeout=0.1")) as store:
        with write_lock_held(store.path), pytest.raises(StoreUnavailable, match="locked"):
            await store.append("s", [_event()])
        assert await store.head() == 0
        assert await store.append("s", [_event()]) == AppendResult("s", 1, 1, 1)


async def test_reads_do_not_wait_for_an_open_write(tmp_path: Path) -> None:
    async with SqliteEventStore(_url(tmp_path, "?busy_timeout=30")) as store:
        committed = _event()
        await store.append("s", [committed])
        with write_lock_held(store.path) as other:
            other.execute("INSERT INTO checkpoints (name, position) VALUES ('c', 1)")
            async with asyncio.timeout(HANG_GUARD):
                assert [r.event for r in await store.read_all()] == [committed]
                assert await store.get_checkpoint("c") is None
                await store.ping()


class _TinySqliteEventStore(SqliteEventStore):
    """A store whose file may grow by only a few pages: a disk that fills up."""

    write_conn: sqlite3.Connection

    def _prepare_write_connection(self, conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 30}")
        self.write_conn = conn

    def free_space(self) -> None:
        """Let the file grow again (space was freed on the disk)."""
        self.write_conn.execute("PRAGMA max_page_count = 4294967294")


async def test_full_disk_fails_the_batch_and_acknowledges_nothing_unstored(
    tmp_path: Path,
) -> None:
    acknowledged: list[str] = []
    async with _TinySqliteEventStore(_url(tmp_path)) as store:

        async def fill() -> None:
            for i in range(10_000):
                event = _event(i=i, blob="x" * 2000)
                await store.append("s", [event])
                acknowledged.append(event.id)

        with pytest.raises(StoreUnavailable, match="full"):
            await fill()
        assert acknowledged
        # Concurrent commits (batched together) that cannot be written all fail.
        batch = [_event(blob="y" * 3000) for _ in range(5)]
        outcomes = await asyncio.gather(
            *(store.append(f"b{i}", [e]) for i, e in enumerate(batch)), return_exceptions=True
        )
        assert all(isinstance(o, StoreUnavailable) for o in outcomes)
        # Not ready while writes fail, and saying why; ready again once a write succeeds.
        with pytest.raises(StoreUnavailable, match=r"disk is full.*ENOSPC"):
            await store.ping()
        store.free_space()
        late = _event()
        await store.append("late", [late])
        acknowledged.append(late.id)
        await store.ping()
    async with SqliteEventStore(_url(tmp_path)) as store:
        stored = [r.event.id for r in await store.read_all(limit=100_000)]
        assert stored == acknowledged
        for event in batch:
            assert await store.get_event(event.id) is None


class _OldSqliteLimitsStore(SqliteEventStore):
    """A store on a SQLite build that allows 999 variables per statement (before 3.32)."""

    def _prepare_write_connection(self, conn: sqlite3.Connection) -> None:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)


async def test_large_batches_fit_older_sqlite_variable_limits(tmp_path: Path) -> None:
    async with _OldSqliteLimitsStore(_url(tmp_path)) as store:
        results = await asyncio.gather(
            *(
                store.commit([Append(f"s{i % 600}", [_event(i=i)])], dedup_key=f"k{i}")
                for i in range(3000)
            )
        )
        assert sorted(r[0].last_position for r in results) == list(range(1, 3001))
        assert len(await store.list_streams()) == 600
