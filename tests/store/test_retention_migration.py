"""Upgrading a store to the retention schema keeps every dedup key, counted from the upgrade."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import asyncpg
import pytest

from contexten.events.envelope import Event
from contexten.store._postgres_schema import MIGRATIONS as PG_MIGRATIONS
from contexten.store._postgres_schema import Migration as PgMigration
from contexten.store._sqlite_schema import MIGRATIONS as SQLITE_MIGRATIONS
from contexten.store._sqlite_schema import Migration as SqliteMigration
from contexten.store.base import EventStore
from contexten.store.postgres import PostgresEventStore
from contexten.store.sqlite import SqliteEventStore


class _SqliteBeforeRetention(SqliteEventStore):
    _migrations: ClassVar[tuple[SqliteMigration, ...]] = SQLITE_MIGRATIONS[:3]


class _PostgresBeforeRetention(PostgresEventStore):
    _migrations: ClassVar[tuple[PgMigration, ...]] = PG_MIGRATIONS[:3]


@pytest.fixture
async def pg_schema(postgres_url: str) -> AsyncIterator[str]:
    schema = f"ctx_test_mig_{uuid.uuid4().hex[:10]}"
    yield schema
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def _upgrade_keeps_keys(old: EventStore, new: EventStore) -> None:
    async with old:
        await old.append("github-acme", [Event(type="github.push")], dedup_key="github:d-1")
    await asyncio.sleep(0.05)
    upgraded_from = datetime.now(UTC)
    async with new:
        again = await new.append("github-acme", [Event(type="github.push")], dedup_key="github:d-1")
        assert again.deduplicated
        prune_dedup = new.prune_dedup  # type: ignore[attr-defined]
        # The old key counts from the upgrade: a full window from now, never dropped early.
        assert await prune_dedup(upgraded_from, dry_run=True) == 0
        assert await prune_dedup(datetime.now(UTC) + timedelta(seconds=1), dry_run=True) == 1
        [record] = await new.read_stream("github-acme")
        assert record.event.type == "github.push"


async def test_sqlite_upgrade_keeps_dedup_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    await _upgrade_keeps_keys(_SqliteBeforeRetention(url), SqliteEventStore(url))


@pytest.mark.postgres
async def test_postgres_upgrade_keeps_dedup_keys(postgres_url: str, pg_schema: str) -> None:
    await _upgrade_keeps_keys(
        _PostgresBeforeRetention(postgres_url, schema=pg_schema),
        PostgresEventStore(postgres_url, schema=pg_schema),
    )
