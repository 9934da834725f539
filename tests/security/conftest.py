"""Fixtures for the security tests: the token store on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contexten.store import EventStore, create_store


async def _url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "memory":
        yield "memory://"
        return
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'security.db'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    asyncpg = pytest.importorskip("asyncpg")
    schema = f"ctx_test_sec_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in server else "?"
    yield f"{server}{separator}schema={schema}"
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL per backend (PostgreSQL: a throwaway schema, skipped when absent)."""
    async for url in _url(request, tmp_path):
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL that several store objects (or processes) share: SQLite and PostgreSQL."""
    async for url in _url(request, tmp_path):
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[EventStore]:
    async with create_store(store_url) as opened:
        yield opened
