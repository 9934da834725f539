"""Shared test fixtures: service discovery that skips, or fails under CI."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from contexten.store import EventStore, create_store

# Property tests check behaviour, not speed: on a loaded 2-core machine a generated example
# can take longer than Hypothesis's defaults, which would fail a correct test at random.
settings.register_profile("contexten", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("contexten")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"

REQUIRE_SERVICES = os.environ.get("CONTEXTEN_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip the calling test when ``name`` is not listening, or fail under CI."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (CONTEXTEN_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> str:
    """URL of the test PostgreSQL database (skips when the server is absent)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return os.environ.get(
        "CONTEXTEN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )


@pytest.fixture
def redis_url() -> str:
    """URL of the test Redis server (skips when the server is absent)."""
    require_service("Redis", "127.0.0.1", 6379)
    return os.environ.get("CONTEXTEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def nats_url() -> str:
    """URL of the test NATS JetStream server (skips when the server is absent)."""
    require_service("NATS", "127.0.0.1", 4222)
    return os.environ.get("CONTEXTEN_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture
def github_fixtures() -> Path:
    """The shared collection of real GitHub webhook payloads."""
    path = FIXTURES / "github-webhooks"
    if not path.is_dir():
        pytest.fail(f"shared fixtures missing at {path}")
    return path


STORE_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""The store backends a test runs on, PostgreSQL marked (it needs the server)."""


@pytest.fixture
def pg_schemas(postgres_url: str) -> Iterator[Callable[[str], str]]:
    """``new(prefix)``: a fresh PostgreSQL schema name; every one named is dropped at the end.

    A plain fixture (async fixtures can ask for it with ``request.getfixturevalue``); the
    drop runs on a loop of its own in a thread, whatever loop the test ran on.
    """
    import asyncpg

    made: list[str] = []

    def new(prefix: str) -> str:
        made.append(f"{prefix}_{uuid.uuid4().hex[:12]}")
        return made[-1]

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            for schema in made:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    yield new
    if made:
        dropper = threading.Thread(target=asyncio.run, args=(drop(),))
        dropper.start()
        dropper.join()


def schema_url(server: str, schema: str) -> str:
    """``server``'s URL with ``schema`` as its ``?schema=`` option."""
    return f"{server}{'&' if '?' in server else '?'}schema={schema}"


def _store_url(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> str:
    kind = request.param
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}?busy_timeout=60"
    new_schema: Callable[[str], str] = request.getfixturevalue("pg_schemas")
    return schema_url(request.getfixturevalue("postgres_url"), new_schema(prefix))


@pytest.fixture(params=STORE_KINDS)
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """An open, empty store of each kind (PostgreSQL in a schema dropped afterwards)."""
    async with create_store(_store_url(request, tmp_path, "ctx_test_store")) as store:
        yield store


@pytest.fixture(params=STORE_KINDS[1:])
async def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store several processes share, created before they start: a SQLite file or a
    PostgreSQL schema dropped afterwards."""
    url = _store_url(request, tmp_path, "ctx_test_shared")
    async with create_store(url):
        pass
    return url
