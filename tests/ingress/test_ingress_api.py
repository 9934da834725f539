"""Health, readiness, metrics, the OpenAPI description and the events API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from contexten.events.envelope import Event
from contexten.exceptions import StoreClosed
from contexten.ingress import create_ingress_app
from contexten.ingress.api import SCAN_BUDGET
from contexten.store import EventStore, create_store

from ._support import AUTH, github_request, make_config, pull_request_payload, slack_request


async def _fill(store: EventStore, types: list[str]) -> list[Event]:
    events = [Event(type=t, source="test", data={"n": i}) for i, t in enumerate(types)]
    for event in events:
        await store.append(f"s-{event.type}", [event])
    return events


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}  # no names, URLs or counts
    verbose = await client.get("/readyz", params={"verbose": "1"})
    assert verbose.json()["details"]["ok"] is True


async def test_readiness_is_pluggable(memory_store: EventStore) -> None:
    class Report:
        def __init__(self, ok: bool) -> None:
            self.ok = ok

        def to_dict(self) -> dict[str, Any]:
            return {"ok": self.ok, "dispatcher": "stopped"}

    async def not_ready() -> Report:
        return Report(False)

    async def broken() -> Report:
        raise RuntimeError("boom")

    for readiness, body in ((not_ready, {"ok": False, "dispatcher": "stopped"}), (broken, None)):
        app = create_ingress_app(memory_store, make_config(), readiness=readiness)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=AUTH
        ) as client:
            response = await client.get("/readyz", params={"verbose": "1"})
            assert response.status_code == 503
            assert response.json()["status"] == "not ready"
            if body is not None:
                assert response.json()["details"] == body


async def test_metrics_count_requests_and_outcomes(client: httpx.AsyncClient) -> None:
    body, headers = github_request(delivery="m-1")
    await client.post("/webhooks/github", content=body, headers=headers)
    await client.post("/webhooks/github", content=body, headers=headers)
    body, headers = slack_request(secret="wrong")
    await client.post("/webhooks/slack", content=body, headers=headers)
    await client.get("/api/v1/events/nope")
    text = (await client.get("/metrics")).text
    assert 'contexten_webhooks_total{outcome="stored",platform="github"} 1.0' in text
    assert 'contexten_webhooks_total{outcome="duplicate",platform="github"} 1.0' in text
    assert 'contexten_webhooks_total{outcome="unauthorized",platform="slack"} 1.0' in text
    assert 'contexten_events_stored_total{source="github"} 1.0' in text
    assert 'route="/webhooks/github",status="202"' in text
    assert 'route="/api/v1/events/{id}",status="404"' in text
    assert "contexten_ingest_latency_seconds_count" in text
    assert "wrong" not in text
    await client.get("/no/such/route")
    text = (await client.get("/metrics")).text
    assert 'route="unmatched",status="404"' in text


async def test_openapi_describes_every_route(app: Starlette, client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert served == described


async def test_list_newest_first_with_paging(client: httpx.AsyncClient, store: EventStore) -> None:
    events = await _fill(store, ["a.one", "b.two", "a.three", "b.four", "a.five"])
    page = (await client.get("/api/v1/events", params={"limit": 2})).json()
    assert [e["event"]["id"] for e in page["events"]] == [events[4].id, events[3].id]
    assert [e["position"] for e in page["events"]] == [5, 4]
    assert page["next"] == "/api/v1/events?before=4&limit=2"
    seen = [e["position"] for e in page["events"]]
    while page["next"] is not None:
        page = (await client.get(page["next"])).json()
        seen += [e["position"] for e in page["events"]]
    assert seen == [5, 4, 3, 2, 1]


async def test_list_filters_by_type_pattern(client: httpx.AsyncClient, store: EventStore) -> None:
    await _fill(store, ["a.one", "b.two", "a.three", "b.four", "a.five"])
    page = (await client.get("/api/v1/events", params={"type": "a.*"})).json()
    assert [e["event"]["type"] for e in page["events"]] == ["a.five", "a.three", "a.one"]
    assert page["next"] is None
    page = (await client.get("/api/v1/events", params={"type": "b.**", "limit": 1})).json()
    assert [e["event"]["type"] for e in page["events"]] == ["b.four"]
    rest = (await client.get(page["next"])).json()
    assert [e["event"]["type"] for e in rest["events"]] == ["b.two"]


async def test_list_forward_for_tailing(client: httpx.AsyncClient, store: EventStore) -> None:
    await _fill(store, ["a.one", "b.two", "a.three"])
    page = (await client.get("/api/v1/events", params={"after": 1})).json()
    assert [e["position"] for e in page["events"]] == [2, 3]
    assert page["next"] == "/api/v1/events?after=3&limit=50"
    assert (await client.get(page["next"])).json()["events"] == []


async def test_filtered_scan_is_bounded(client: httpx.AsyncClient, store: EventStore) -> None:
    for _ in range((SCAN_BUDGET // 500) + 1):
        await store.append("bulk", [Event(type="noise.x") for _ in range(500)])
    await store.append("needle", [Event(type="needle.found")])
    page = (await client.get("/api/v1/events", params={"type": "nothing.*"})).json()
    assert page["events"] == []
    assert page["next"] is not None  # the scan stopped within its budget; more to look at
    page = (await client.get("/api/v1/events", params={"type": "needle.*", "limit": 1})).json()
    assert [e["event"]["type"] for e in page["events"]] == ["needle.found"]


async def test_get_event(client: httpx.AsyncClient, store: EventStore) -> None:
    body, headers = github_request(pull_request_payload(3))
    created = (await client.post("/webhooks/github", content=body, headers=headers)).json()
    found = await client.get(f"/api/v1/events/{created['id']}")
    assert found.status_code == 200
    doc = found.json()
    assert doc["position"] == created["position"]
    assert doc["event"]["type"] == "github.pull_request.opened"
    assert doc["event"]["data"]["number"] == 3
    assert doc["event"]["correlation_id"] == "ENG-3"
    missing = await client.get("/api/v1/events/does-not-exist")
    assert missing.status_code == 404
    assert (await client.get("/api/v1/events/" + "x" * 300)).status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"before": "0"},
        {"after": "-1"},
        {"before": "5", "after": "1"},
        {"before": "9" * 30},
        {"type": "bad..pattern"},
        {"type": "**.x"},
    ],
)
async def test_bad_parameters_are_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await client.get("/api/v1/events", params=params)
    assert response.status_code == 400
    assert response.json()["error"] == "bad request"


async def test_lifespan_opens_runs_hooks_and_closes(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'life.db'}")
    calls: list[str] = []

    async def start() -> None:
        calls.append(f"start, store head {await store.head()}")

    async def stop() -> None:
        calls.append("stop")

    app = create_ingress_app(
        store, make_config(), manage_store=True, on_startup=[start], on_shutdown=[stop]
    )
    async with app.router.lifespan_context(app):
        await store.ping()
    assert calls == ["start, store head 0", "stop"]
    with pytest.raises(StoreClosed):
        await store.ping()
