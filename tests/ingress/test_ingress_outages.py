"""A store that cannot take the write: 503, never a 2xx, and the server keeps serving."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from contexten.exceptions import StoreUnavailable
from contexten.ingress import create_ingress_app
from contexten.store import EventStore, create_store

from ._support import AUTH, DownStore, github_request, linear_request, make_config, slack_request


def _client(store: EventStore) -> httpx.AsyncClient:
    app = create_ingress_app(store, make_config())
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=AUTH
    )


@pytest.mark.parametrize(
    "error",
    [
        StoreUnavailable("database is locked"),
        OSError(28, "No space left on device"),
        RuntimeError(),
    ],
    ids=["unavailable", "disk-full", "unexpected"],
)
async def test_store_failure_is_503_then_recovers(error: Exception) -> None:
    store = DownStore(error)
    async with store, _client(store) as client:
        for path, (body, headers) in (
            ("/webhooks/github", github_request(delivery="d-1")),
            ("/webhooks/linear", linear_request(delivery="l-1")),
            ("/webhooks/slack", slack_request()),
        ):
            response = await client.post(path, content=body, headers=headers)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200

        store.down = False  # the platform retries once the store is back: stored once
        body, headers = github_request(delivery="d-1")
        assert (
            await client.post("/webhooks/github", content=body, headers=headers)
        ).status_code == 202
        assert (await client.get("/readyz")).status_code == 200
        assert len(await store.read_all()) == 1


@pytest.fixture
async def closed_sqlite(tmp_path: Path) -> EventStore:
    store = create_store(f"sqlite:///{tmp_path}/closed.db")
    await store.open()
    await store.close()
    return store


async def test_closed_store_is_503(closed_sqlite: EventStore) -> None:
    async with _client(closed_sqlite) as client:
        body, headers = github_request()
        response = await client.post("/webhooks/github", content=body, headers=headers)
        assert response.status_code == 503
        assert (await client.get("/api/v1/events")).status_code == 503
        assert (await client.get("/api/v1/events/some-id")).status_code == 503
        assert (await client.get("/readyz")).status_code == 503
