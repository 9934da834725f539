"""The store cache level (L3) against the conformance suite: SQLite and PostgreSQL tables."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from contexten.cache import Cache, MemoryCache, MultiLevelCache
from contexten.cache.store import CacheTable, StoreCache
from contexten.store.postgres import PostgresEventStore
from contexten.store.sqlite import SqliteEventStore
from contexten.testing.conformance.cache import CacheConformance


@pytest.fixture
async def pg_schema(postgres_url: str) -> AsyncIterator[str]:
    name = f"ctx_test_cache_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


class TestSqliteStoreCache(CacheConformance):
    short_ttl = 0.05  # expiry by the machine's clock: the suite really waits

    @pytest.fixture
    async def cache(self, tmp_path: Path) -> AsyncIterator[Cache]:
        async with SqliteEventStore(f"sqlite:///{tmp_path / 'c.db'}") as store:
            yield StoreCache(store)  # closing it is a no-op: the store is closed here

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.mark.postgres
class TestPostgresStoreCache(CacheConformance):
    short_ttl = 0.05  # expiry by the server's clock: the suite really waits

    @pytest.fixture
    async def cache(self, postgres_url: str, pg_schema: str) -> AsyncIterator[Cache]:
        async with PostgresEventStore(postgres_url, schema=pg_schema) as store:
            yield StoreCache(store)

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TestMultiLevelOverSqlite(CacheConformance):
    short_ttl = 0.05
    exact_ttl = False

    @pytest.fixture
    async def cache(self, tmp_path: Path) -> AsyncIterator[Cache]:
        async with SqliteEventStore(f"sqlite:///{tmp_path / 'c.db'}") as store:
            yield MultiLevelCache(MemoryCache(4), StoreCache(store))

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_two_store_objects_on_one_file_share_entries(tmp_path: Path) -> None:
    path = f"sqlite:///{tmp_path / 'shared.db'}"
    async with SqliteEventStore(path) as one, SqliteEventStore(path) as two:
        assert isinstance(one, CacheTable)
        loads = 0

        async def load() -> list[str]:
            nonlocal loads
            loads += 1
            return ["state-1"]

        first = MultiLevelCache(MemoryCache(10), StoreCache(one, namespace="app:"))
        second = MultiLevelCache(MemoryCache(10), StoreCache(two, namespace="app:"))
        assert await first.get_or_load("k", load, ttl=60) == ["state-1"]
        assert await second.get_or_load("k", load, ttl=60) == ["state-1"]
        assert loads == 1  # the second "process" found it in the store level
        assert await second.delete("k") is True
        assert await StoreCache(one, namespace="app:").get("k") is None
        assert await StoreCache(one).get("app:k") is None


@pytest.mark.postgres
async def test_postgres_entries_are_shared_and_namespaced(
    postgres_url: str, pg_schema: str
) -> None:
    async with (
        PostgresEventStore(postgres_url, schema=pg_schema) as one,
        PostgresEventStore(postgres_url, schema=pg_schema) as two,
    ):
        await StoreCache(one, namespace="a:").set("k", {"v": 1}, ttl=60)
        assert await StoreCache(two, namespace="a:").get("k") == {"v": 1}
        assert await StoreCache(two, namespace="b:").get("k") is None
        assert await StoreCache(two).clear("a:") == 1


async def test_a_value_written_by_something_else_reads_as_a_miss(tmp_path: Path) -> None:
    async with SqliteEventStore(f"sqlite:///{tmp_path / 'c.db'}") as store:
        await store.cache_set("junk", b"\xc1", None)  # 0xc1 is never valid MessagePack
        assert await StoreCache(store).get("junk") is None
