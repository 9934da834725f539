"""Fixtures for the ingress tests: stores (memory and SQLite), the app, an in-process client
(authenticated as the configuration's admin token)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from contexten.ingress import IngressConfig, create_ingress_app
from contexten.store import EventStore, create_store

from ._support import AUTH, make_config


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """An open event store: in memory, and a real SQLite file."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'ingress.db'}"
    async with create_store(url) as opened:
        yield opened


@pytest.fixture
async def memory_store() -> AsyncIterator[EventStore]:
    """An open in-memory store (for tests about HTTP behaviour rather than durability)."""
    async with create_store("memory://") as opened:
        yield opened


@pytest.fixture
def config() -> IngressConfig:
    return make_config()


@pytest.fixture
def app(store: EventStore, config: IngressConfig) -> Starlette:
    return create_ingress_app(store, config)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://localhost", headers=AUTH
    ) as c:
        yield c
