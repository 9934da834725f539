"""Every read-model backend against the read-model conformance suite."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from contexten.exceptions import ConfigurationError
from contexten.projections import ReadModels, create_read_models
from contexten.projections.memory import MemoryReadModels
from contexten.projections.postgres import PostgresReadModels
from contexten.projections.read_side import builtin_projections
from contexten.projections.sqlite import SqliteReadModels
from contexten.store import EventStore
from contexten.store.memory import MemoryEventStore
from contexten.store.postgres import PostgresEventStore
from contexten.store.sqlite import SqliteEventStore
from contexten.testing.conformance import ReadModelsConformance


class TestMemoryReadModels(ReadModelsConformance):
    supports_reopen = False

    def make_store(self, directory: Path) -> EventStore:
        return MemoryEventStore()


class TestSqliteReadModels(ReadModelsConformance):
    def make_store(self, directory: Path) -> EventStore:
        return SqliteEventStore(f"sqlite:///{directory / 'events.db'}")


@pytest.mark.postgres
class TestPostgresReadModels(ReadModelsConformance):
    @pytest.fixture(autouse=True)
    def _schemas(self, postgres_url: str, pg_schemas: Callable[[str], str]) -> None:
        self.url = postgres_url
        self.new_schema = pg_schemas
        self.by_directory: dict[Path, str] = {}

    def make_store(self, directory: Path) -> EventStore:
        # The same directory is the same store (a reopen): the same schema.
        if directory not in self.by_directory:
            self.by_directory[directory] = self.new_schema("ctx_test_rm")
        return PostgresEventStore(self.url, schema=self.by_directory[directory])


def test_backend_follows_the_store_url() -> None:
    assert isinstance(create_read_models("memory://"), MemoryReadModels)
    assert isinstance(create_read_models("sqlite:///x.db"), SqliteReadModels)
    models: ReadModels = create_read_models(PostgresEventStore("postgresql://h/db", schema="abc"))
    assert isinstance(models, PostgresReadModels)
    assert models.settings.schema == "abc"
    with pytest.raises(ConfigurationError, match="no read-model backend"):
        create_read_models("nats://x")


@pytest.mark.postgres
async def test_concurrent_opens_on_a_fresh_schema_all_succeed(
    postgres_url: str, pg_schemas: Callable[[str], str]
) -> None:
    """Processes starting together each open the read models on their own connections; on
    a schema nobody created yet, every one of them must succeed (no unique violation from
    concurrent CREATE SCHEMA / CREATE TABLE IF NOT EXISTS)."""
    schema = pg_schemas("ctx_test_rm_race")
    openers = [PostgresReadModels(postgres_url, schema=schema) for _ in range(8)]

    async def start(models: PostgresReadModels) -> None:
        await models.open()
        for projection in builtin_projections():
            await models.ensure(projection)

    try:
        results = await asyncio.gather(*(start(m) for m in openers), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        conn = await asyncpg.connect(postgres_url)
        try:
            tables = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", schema
            )
        finally:
            await conn.close()
        assert tables > len(builtin_projections())
    finally:
        await asyncio.gather(*(m.close() for m in openers))


@pytest.mark.postgres
async def test_postgres_read_models_commit_without_waiting_for_the_wal_flush(
    postgres_url: str, pg_schemas: Callable[[str], str]
) -> None:
    """Read models are rebuilt from the log: their connections commit asynchronously, while
    the event store's keep the server's default (synchronous)."""
    schema = pg_schemas("ctx_test_rm_async")
    models = PostgresReadModels(postgres_url, schema=schema)
    store = PostgresEventStore(postgres_url, schema=schema)
    async with store:
        await models.open()
        try:
            async with models._require().acquire() as conn:
                assert await conn.fetchval("SHOW synchronous_commit") == "off"
        finally:
            await models.close()
        pool = store._pool
        assert pool is not None
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
