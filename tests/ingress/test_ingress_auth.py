"""Every route against every credential: no token, a wrong one, viewer, operator, admin.

The expected least role of each route is written down HERE, independently of the app's
own table; the matrix walks the app's route table, so a route added without being listed
here fails the test, and a listed route whose protection changes fails it too (datasette's
habit). Then: the DNS-rebinding request, throttling, audit events, and the options.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contexten.ingress import create_ingress_app
from contexten.security import (
    AUDIT_STREAM_PREFIX,
    Role,
    create_token,
    principal_of,
    revoke_token,
)
from contexten.store import EventStore, create_store

from ._support import ADMIN_TOKEN, NOW, github_request, make_config

PUBLIC = None
EXPECTED: dict[tuple[str, str], Role | None] = {
    ("POST", "/webhooks/github"): PUBLIC,
    ("POST", "/webhooks/linear"): PUBLIC,
    ("POST", "/webhooks/slack"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): Role.VIEWER,
    ("GET", "/openapi.json"): Role.VIEWER,
    ("GET", "/api/v1/events"): Role.VIEWER,
    ("POST", "/api/v1/events"): Role.OPERATOR,
    ("GET", "/api/v1/events/stream"): Role.VIEWER,
    ("GET", "/api/v1/events/{id}"): Role.VIEWER,
    ("GET", "/api/v1/events/{id}/caused"): Role.VIEWER,
}
"""Each route of the app and the least role it needs (None: public)."""
CREDENTIALS = ["none", "wrong", "viewer", "operator", "admin"]


def served_routes(app: Starlette) -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    )


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    async with create_store("memory://") as opened:
        yield opened


@pytest.fixture
async def tokens(store: EventStore) -> dict[str, str]:
    made = {
        role: (await create_token(store, name=f"test {role}", role=role)).token
        for role in ("viewer", "operator", "admin")
    }
    stale = await create_token(store, name="stale admin", role="admin")
    await revoke_token(store, stale.info.id)
    return {**made, "wrong": stale.token, "env": ADMIN_TOKEN}


def _headers(credential: str, tokens: dict[str, str]) -> dict[str, str]:
    return {} if credential == "none" else {"Authorization": f"Bearer {tokens[credential]}"}


def _request_for(method: str, path: str) -> dict[str, Any]:
    if path == "/webhooks/github":
        body, headers = github_request()
        return {"content": body, "headers": headers}
    if (method, path) == ("POST", "/api/v1/events"):
        cloud_event = {"specversion": "1.0", "id": "e-1", "source": "test", "type": "t.done"}
        body = json.dumps(cloud_event).encode()
        return {"content": body, "headers": {"content-type": "application/cloudevents+json"}}
    return {"content": b"{}"} if method == "POST" else {}


async def _call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    kwargs = _request_for(method, path)
    kwargs["headers"] = {**kwargs.get("headers", {}), **headers}
    return await client.request(method, path.replace("{id}", "no-such-id"), **kwargs)


def _client(app: Starlette, host: str = "localhost") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4321))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


async def test_every_route_is_listed_with_its_least_role(store: EventStore) -> None:
    app = create_ingress_app(store, make_config())
    assert served_routes(app) == sorted(EXPECTED), "a route is missing from EXPECTED (or gone)"


@pytest.mark.parametrize("credential", CREDENTIALS)
async def test_every_route_against_every_credential(
    store: EventStore, tokens: dict[str, str], credential: str
) -> None:
    config = make_config(auth_failure_limit=0, stream_seconds=0.05, stream_heartbeat=0.01)
    app = create_ingress_app(store, config)
    role = None if credential in ("none", "wrong") else Role.parse(credential)
    async with _client(app) as client:
        for method, path in served_routes(app):
            needed = EXPECTED[(method, path)]
            response = await _call(client, method, path, _headers(credential, tokens))
            where = (credential, method, path, response.status_code, response.text)
            if needed is None:
                assert response.status_code not in (403, 429), where
                assert "www-authenticate" not in response.headers, where
            elif role is None:
                assert response.status_code == 401, where
                assert response.json()["error"] == "unauthorized", where
                assert response.headers["www-authenticate"].startswith("Bearer"), where
            elif role < needed:
                assert response.status_code == 403, where
                assert response.json()["error"] == "forbidden", where
            else:
                assert response.status_code in (200, 201, 404), where
        unknown = await client.get("/no/such/page", headers=_headers(credential, tokens))
        assert unknown.status_code == (401 if role is None else 404)


async def test_operator_and_admin_routes_get_their_roles_and_are_audited(
    store: EventStore, tokens: dict[str, str]
) -> None:
    """Routes for operator and admin actions (the dead-letter and token APIs will add them)
    are declared with their action; the middleware checks the role and audits each call."""

    async def redrive(request: Request) -> Response:
        principal = principal_of(request)
        assert principal is not None
        return JSONResponse({"by": principal.name})

    extra = [
        (Route("/api/v1/dlq/{id}/redrive", redrive, methods=["POST"]), "dlq:redrive"),
        (Route("/api/v1/tokens", redrive, methods=["POST"]), "tokens:manage"),
    ]
    app = create_ingress_app(store, make_config(), extra_routes=extra)
    async with _client(app) as client:
        expect = {
            "viewer": (403, 403),
            "operator": (200, 403),
            "admin": (200, 200),
        }
        for credential, (dlq_status, tokens_status) in expect.items():
            headers = _headers(credential, tokens)
            dlq = await client.post("/api/v1/dlq/L1/redrive", headers=headers)
            assert dlq.status_code == dlq_status, (credential, dlq.text)
            made = await client.post("/api/v1/tokens", headers=headers)
            assert made.status_code == tokens_status, (credential, made.text)
        assert dlq.json() == {"by": "test admin"}
    audit = await _audit_events(store)
    actions = [(e["type"], e["data"]["principal"]["name"], e["data"]["outcome"]) for e in audit]
    assert actions == [
        ("contexten.audit.auth.denied", "test viewer", "403"),
        ("contexten.audit.auth.denied", "test viewer", "403"),
        ("contexten.audit.dlq.redrive", "test operator", "200"),
        ("contexten.audit.auth.denied", "test operator", "403"),
        ("contexten.audit.dlq.redrive", "test admin", "200"),
        ("contexten.audit.tokens.manage", "test admin", "200"),
    ]
    assert {e["data"]["client"] for e in audit} == {"203.0.113.9"}
    assert audit[2]["data"]["path"] == "/api/v1/dlq/L1/redrive"


async def _audit_events(store: EventStore) -> list[dict[str, Any]]:
    streams = await store.list_streams(AUDIT_STREAM_PREFIX)
    records = [r for s in streams for r in await store.read_stream(s.stream)]
    records.sort(key=lambda r: r.position)
    return [{"type": r.event.type, "data": r.event.data, "actor": r.event.actor} for r in records]


async def test_a_foreign_host_is_refused_but_webhooks_are_still_accepted(
    store: EventStore, tokens: dict[str, str]
) -> None:
    """DNS rebinding: a page on evil.example resolves its name to 127.0.0.1; the browser
    then sends ``Host: evil.example``. Even with a valid token (a cookie, later) nothing
    but the signed webhooks answers."""
    app = create_ingress_app(store, make_config())
    admin = _headers("admin", tokens)
    async with _client(app, host="evil.example:8000") as client:
        for method, path in served_routes(app):
            if path.startswith("/webhooks/"):
                continue
            response = await _call(client, method, path, admin)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["detail"] == "this Host is not allowed"
        body, headers = github_request()
        accepted = await client.post("/webhooks/github", content=body, headers=headers)
        assert accepted.status_code == 202
    async with _client(app, host="localhost:8000") as client:
        assert (await client.get("/api/v1/events", headers=admin)).status_code == 200
    async with _client(app, host="127.0.0.1:8000") as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_repeated_bad_credentials_are_slowed_with_429(store: EventStore) -> None:
    config = make_config(auth_failure_limit=3, auth_failure_window=60.0)
    app = create_ingress_app(store, config)
    wrong = {"Authorization": "Bearer not-a-real-token"}
    good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with _client(app) as client:
        statuses = [
            (await client.get("/api/v1/events", headers=wrong)).status_code for _ in range(3)
        ]
        assert statuses == [401, 401, 401]
        blocked = await client.get("/api/v1/events", headers=good)  # even a good one now
        assert blocked.status_code == 429
        assert blocked.headers["retry-after"] == "60"
        assert (await client.get("/healthz")).status_code == 200  # public routes still answer
        body, headers = github_request()
        assert (
            await client.post("/webhooks/github", content=body, headers=headers)
        ).status_code == 202
    other = httpx.ASGITransport(app=app, client=("198.51.100.7", 1))
    async with httpx.AsyncClient(transport=other, base_url="http://localhost") as client:
        assert (await client.get("/api/v1/events", headers=good)).status_code == 200
    await config.clock.advance(61)  # type: ignore[attr-defined]
    async with _client(app) as client:
        assert (await client.get("/api/v1/events", headers=good)).status_code == 200
    audit = await _audit_events(store)
    assert [e["type"] for e in audit] == [
        "contexten.audit.auth.failed",
        "contexten.audit.auth.failed",
        "contexten.audit.auth.failed",
        "contexten.audit.auth.throttled",
    ]


async def test_audit_events_say_who_what_when_where_and_never_the_token(
    store: EventStore, tokens: dict[str, str]
) -> None:
    app = create_ingress_app(store, make_config())
    presented = tokens["wrong"]
    async with _client(app) as client:
        await client.get("/api/v1/events")
        await client.get("/api/v1/events", headers={"Authorization": f"Bearer {presented}"})
        await client.get("/api/v1/events?token=" + presented)  # a token in the URL is ignored
    audit = await _audit_events(store)
    assert [e["data"]["detail"] for e in audit] == [
        "no bearer token",
        "not an active token",
        "no bearer token",
    ]
    for event in audit:
        assert event["type"] == "contexten.audit.auth.failed"
        assert event["data"]["client"] == "203.0.113.9"
        assert event["data"]["method"] == "GET"
        assert event["data"]["path"] == "/api/v1/events"
        assert event["data"]["principal"] is None
    streams = await store.list_streams(AUDIT_STREAM_PREFIX)
    assert [s.stream for s in streams] == [f"{AUDIT_STREAM_PREFIX}{NOW.date().isoformat()}"]
    everything = json.dumps([r.event.data for r in await store.read_all(limit=10_000)])
    for token in tokens.values():
        assert token not in everything
        assert token.rpartition("_")[2] not in everything


async def test_metrics_public_and_readyz_details(store: EventStore, tokens: dict[str, str]) -> None:
    open_metrics = create_ingress_app(store, make_config(metrics_public=True))
    async with _client(open_metrics) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/api/v1/events")).status_code == 401  # the rest is not open
    app = create_ingress_app(store, make_config())
    async with _client(app) as client:
        assert (await client.get("/metrics")).status_code == 401
        ready = await client.get("/readyz")
        assert ready.json() == {"status": "ready"}
        assert (await client.get("/readyz?verbose=1")).status_code == 401
        verbose = await client.get("/readyz?verbose=1", headers=_headers("viewer", tokens))
        assert verbose.json()["details"]["store"]["reachable"] is True


async def test_a_token_in_the_query_string_is_not_a_credential(
    store: EventStore, tokens: dict[str, str]
) -> None:
    app = create_ingress_app(store, make_config())
    async with _client(app) as client:
        assert (await client.get(f"/api/v1/events?token={tokens['admin']}")).status_code == 401
        basic = {"Authorization": f"Basic {tokens['admin']}"}
        assert (await client.get("/api/v1/events", headers=basic)).status_code == 401
        lower = {"Authorization": f"bearer {tokens['admin']}"}
        assert (await client.get("/api/v1/events", headers=lower)).status_code == 200


async def test_the_audit_trail_and_token_records_are_shown_to_admins_only(
    store: EventStore, tokens: dict[str, str]
) -> None:
    app = create_ingress_app(store, make_config())
    async with _client(app) as client:
        await client.get("/api/v1/events")  # one auth failure: an audit event
        body, headers = github_request()
        await client.post("/webhooks/github", content=body, headers=headers)
        seen: dict[str, set[str]] = {}
        for credential in ("viewer", "operator", "admin"):
            page = await client.get(
                "/api/v1/events", params={"limit": 500}, headers=_headers(credential, tokens)
            )
            seen[credential] = {e["stream"].split("-")[0] for e in page.json()["events"]}
            forward = await client.get(
                "/api/v1/events", params={"after": 0}, headers=_headers(credential, tokens)
            )
            assert {e["stream"].split("-")[0] for e in forward.json()["events"]} == seen[credential]
    assert seen["viewer"] == seen["operator"] == {"github"}
    assert seen["admin"] == {"github", "$audit", "$security"}
    [audit_stream] = await store.list_streams(AUDIT_STREAM_PREFIX)
    audit_id = (await store.read_stream(audit_stream.stream))[0].event.id
    async with _client(app) as client:
        hidden = await client.get(f"/api/v1/events/{audit_id}", headers=_headers("viewer", tokens))
        assert hidden.status_code == 404
        shown = await client.get(f"/api/v1/events/{audit_id}", headers=_headers("admin", tokens))
        assert shown.status_code == 200
