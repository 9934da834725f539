"""Fixtures for the bus tests: the same scenarios on the memory and the SQLite store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from contexten.observability.logging import configure_logging, reset_logging

from ._support import Backend, StepClock


@pytest.fixture(autouse=True)
def _production_logging() -> Iterator[None]:
    """Log as a deployed app does (JSON, INFO and up): failure tests log a lot, and
    structlog's default renders every DEBUG traceback richly, which is slow."""
    configure_logging(json=True, level="INFO")
    yield
    reset_logging()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The store the test runs on: each test runs once per backend (PostgreSQL: in a
    throwaway schema, skipped when the server is absent)."""
    if request.param != "postgres":
        yield Backend(request.param, tmp_path)
        return
    server: str = request.getfixturevalue("postgres_url")
    asyncpg = pytest.importorskip("asyncpg")
    schema = f"ctx_test_bus_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in server else "?"
    yield Backend("postgres", tmp_path, f"{server}{separator}schema={schema}")
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def clock() -> StepClock:
    """A clock that skips (and records) every sleep."""
    return StepClock()
