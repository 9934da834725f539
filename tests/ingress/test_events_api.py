"""The events API of a served App: filtered listings through the events index, causation,
as-of, publishing CloudEvents, and the live stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contexten import App, Event
from contexten.clock import WallClock
from contexten.ingress.server import create_server
from contexten.security import AUDIT_STREAM_PREFIX, Role, create_token

from ._support import HANG_GUARD, make_config

STRUCTURED = {"content-type": "application/cloudevents+json"}


class Served:
    def __init__(self, app: App, client: httpx.AsyncClient, tokens: dict[str, str]) -> None:
        self.app = app
        self.client = client
        self.tokens = tokens

    def auth(self, role: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def get(self, path: str, role: str = "viewer", **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.auth(role))

    async def publish(
        self, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            "/api/v1/events",
            content=content,
            headers={**STRUCTURED, **(headers or {}), **self.auth()},
        )


@pytest.fixture(params=["memory", "sqlite"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'api.db'}"
    app = App(url, clock=WallClock())
    config = make_config(
        auth_failure_limit=1000,
        clock=WallClock(),
        stream_seconds=0.5,
        stream_heartbeat=0.1,
        publish_max_body=4096,
    )
    asgi = create_server(app, config)
    await app.start()
    try:
        tokens = {
            role.name.lower(): (await create_token(app.store, name=f"t-{role}", role=role)).token
            for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
        }
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield Served(app, client, tokens)
    finally:
        await app.stop()


async def _caught_up(app: App) -> None:
    async with asyncio.timeout(HANG_GUARD):
        for _ in range(100_000):
            if not any(s.lag for s in await app.projections.status() if s.name == "events"):
                return
            await asyncio.sleep(0.01)


def _ce(**fields: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "source": "billing", "type": "billing.invoice.paid", **fields}


# -- publishing --------------------------------------------------------------------------------


async def test_publish_structured_and_binary_once_per_source_and_id(served: Served) -> None:
    stored = await served.publish(
        _ce(id="inv-1", subject="acct-9", correlationid="ENG-7", data={"amount": 12})
    )
    assert stored.status_code == 201, stored.text
    body = stored.json()
    assert body["status"] == "stored"
    assert body["id"] == "inv-1"
    rec = await served.app.store.get_event("inv-1")
    assert rec is not None
    assert rec.position == body["position"]
    assert rec.event.correlation_id == "ENG-7"
    assert rec.event.data == {"amount": 12}
    assert rec.event.source == "billing"

    again = await served.publish(_ce(id="inv-1", subject="acct-9", data={"amount": 99}))
    assert again.status_code == 200
    assert again.json() == {**body, "status": "duplicate"}

    binary = await served.client.post(
        "/api/v1/events",
        content=b'{"rows": 3}',
        headers={
            "content-type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "run-5",
            "ce-source": "/etl/nightly",
            "ce-type": "etl.run.finished",
            "ce-time": "2026-01-05T14:00:00Z",
            "ce-causationid": "inv-1",
            **served.auth(),
        },
    )
    assert binary.status_code == 201, binary.text
    run = await served.app.store.get_event("run-5")
    assert run is not None
    assert run.event.data == {"rows": 3}
    assert run.event.causation_id == "inv-1"
    assert run.event.time.isoformat() == "2026-01-05T14:00:00+00:00"

    taken = await served.publish(_ce(id="inv-1", source="another"))
    assert taken.status_code == 409
    audit = [
        r.event
        for r in await served.app.store.read_all(limit=1000)
        if r.stream.startswith(AUDIT_STREAM_PREFIX)
        and r.event.type == "contexten.audit.events.publish"
    ]
    outcomes = [(e.data["outcome"], e.data.get("target")) for e in audit]
    assert ("stored", "inv-1") in outcomes
    assert ("duplicate", "inv-1") in outcomes
    assert ("stored", "run-5") in outcomes
    assert all(e.data["principal"]["role"] == "operator" for e in audit)


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"not json", None, 400, "JSON"),
        (b"[1]", None, 400, "object"),
        (json.dumps(_ce(id="x", specversion="0.3")).encode(), None, 400, "specversion"),
        (
            json.dumps({"specversion": "1.0", "id": "x", "type": "a.b"}).encode(),
            None,
            400,
            "source",
        ),
        (json.dumps(_ce(id="x", type="Not A Type")).encode(), None, 400, "type"),
        (json.dumps(_ce(id="x", data="text")).encode(), None, 400, "data"),
        (json.dumps(_ce(id="x", data_base64="AAAA")).encode(), None, 400, "data_base64"),
        (json.dumps(_ce(id="x", colour="blue")).encode(), None, 400, "colour"),
        (json.dumps(_ce(id="x", time="yesterday")).encode(), None, 400, "time"),
        (json.dumps(_ce(id="x", time="2026-01-01T00:00:00")).encode(), None, 400, "time"),
        (json.dumps(_ce(id="x\u0007")).encode(), None, 400, "control"),
        (json.dumps(_ce(id="x", data={"pad": "y" * 5000})).encode(), None, 413, "limit"),
        (b"{}", {"content-type": "application/json"}, 415, "ce-*"),
        (b"{}", {"content-type": "application/cloudevents-batch+json"}, 415, "ce-*"),
        (b"a=b", {"content-type": "text/plain", "ce-specversion": "1.0"}, 415, "JSON"),
    ],
)
async def test_bad_cloudevents_are_refused_and_store_nothing(
    served: Served, body: bytes, headers: dict[str, str] | None, status: int, says: str
) -> None:
    before = [r for r in await served.app.store.read_all(limit=1000) if r.stream[0] != "$"]
    answer = await served.publish(body, headers)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["detail"]
    after = [r for r in await served.app.store.read_all(limit=1000) if r.stream[0] != "$"]
    assert after == before


async def test_publishing_needs_an_operator(served: Served) -> None:
    answer = await served.client.post(
        "/api/v1/events",
        content=json.dumps(_ce(id="v-1")).encode(),
        headers={**STRUCTURED, **served.auth("viewer")},
    )
    assert answer.status_code == 403
    assert await served.app.store.get_event("v-1") is None


# -- listing -----------------------------------------------------------------------------------


async def _story(served: Served) -> list[str]:
    """A small history: a PR opened for ENG-1, the actions it caused, and noise."""
    app = served.app
    opened = Event(
        type="github.pull_request.opened", source="github", subject="o/r#1", correlation_id="ENG-1"
    )
    await app.publish(opened)
    for i in range(30):
        await app.publish(Event(type="github.push", source="github", subject=f"o/r@{i}"))
    comment = opened.caused("contexten.action.github.comment", {"n": 1})
    label = opened.caused("contexten.action.github.label", {"n": 2})
    await app.publish(comment)
    await app.publish(label)
    await app.publish(
        Event(type="linear.issue.updated", source="linear", subject="ENG-1", correlation_id="ENG-1")
    )
    await _caught_up(app)
    return [opened.id, comment.id, label.id]


async def test_list_filters_and_pages(served: Served) -> None:
    opened, comment, label = await _story(served)
    page = (await served.get("/api/v1/events", type="github.pull_request.*")).json()
    assert [e["event"]["id"] for e in page["events"]] == [opened]
    work = (await served.get("/api/v1/events", correlation_id="ENG-1", limit=2)).json()
    assert [e["event"]["type"] for e in work["events"]] == [
        "linear.issue.updated",
        "contexten.action.github.label",
    ]
    rest = (await served.client.get(work["next"], headers=served.auth("viewer"))).json()
    assert [e["event"]["id"] for e in rest["events"]] == [comment, opened]
    # A full page cannot know it was the last: the next one is empty and says so.
    end = (await served.client.get(rest["next"], headers=served.auth("viewer"))).json()
    assert end == {"events": [], "next": None, "head": end["head"]}
    pushes = (await served.get("/api/v1/events", type="github.push", source="github")).json()
    assert len(pushes["events"]) == 30
    by_subject = (await served.get("/api/v1/events", subject="o/r@7")).json()["events"]
    assert [e["event"]["subject"] for e in by_subject] == ["o/r@7"]
    caused = (await served.get("/api/v1/events", causation_id=opened)).json()["events"]
    assert [e["event"]["id"] for e in caused] == [label, comment]
    assert (await served.get("/api/v1/events", since="nonsense")).status_code == 400
    assert (await served.get("/api/v1/events", type="a..b")).status_code == 400


async def test_caused_and_as_of(served: Served) -> None:
    opened, comment, label = await _story(served)
    caused = (await served.get(f"/api/v1/events/{opened}/caused")).json()
    assert caused["cause"]["event"]["id"] == opened
    assert [e["event"]["id"] for e in caused["events"]] == [comment, label]
    assert caused["next"] is None
    assert (await served.get("/api/v1/events/nope/caused")).status_code == 404
    first = (await served.get(f"/api/v1/events/{opened}/caused", limit=1)).json()
    assert [e["event"]["id"] for e in first["events"]] == [comment]
    second = (await served.client.get(first["next"], headers=served.auth("viewer"))).json()
    assert [e["event"]["id"] for e in second["events"]] == [label]

    rec = await served.app.store.get_event(comment)
    assert rec is not None
    at = rec.recorded_at.isoformat()
    then = (await served.get("/api/v1/events", as_of=at, correlation_id="ENG-1")).json()
    assert [e["event"]["id"] for e in then["events"]] == [comment, opened]
    assert (await served.get(f"/api/v1/events/{label}", as_of=at)).status_code == 404
    assert (await served.get(f"/api/v1/events/{comment}", as_of=at)).status_code == 200


async def test_restricted_streams_stay_hidden(served: Served) -> None:
    await _story(served)
    await served.publish(_ce(id="audited-1"))  # leaves an audit event behind
    await _caught_up(served.app)
    seen = {
        role: {
            e["stream"][:7]
            for e in (await served.get("/api/v1/events", role=role, limit=500)).json()["events"]
        }
        for role in ("viewer", "admin")
    }
    assert AUDIT_STREAM_PREFIX not in seen["viewer"]
    assert AUDIT_STREAM_PREFIX in seen["admin"]
    audit = (await served.get("/api/v1/events", role="admin", type="contexten.audit.**")).json()
    audit_id = audit["events"][0]["event"]["id"]
    assert (await served.get(f"/api/v1/events/{audit_id}", role="viewer")).status_code == 404
    assert (await served.get(f"/api/v1/events/{audit_id}", role="admin")).status_code == 200


# -- the live stream ---------------------------------------------------------------------------


def _messages(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                fields.setdefault("comment", line[1:].strip())
            elif ":" in line:
                name, _, value = line.partition(":")
                fields[name] = value.lstrip()
        if fields:
            out.append(fields)
    return out


async def test_stream_sends_new_events_and_resumes_after_last_event_id(served: Served) -> None:
    app = served.app
    first = Event(type="shop.order.placed", source="shop", correlation_id="ENG-1")
    await app.publish(first)

    async def publish_later() -> None:
        await asyncio.sleep(0.1)
        await app.publish(Event(type="shop.order.placed", source="shop", correlation_id="ENG-2"))
        await app.publish(Event(type="shop.order.shipped", source="shop", correlation_id="ENG-1"))

    task = asyncio.create_task(publish_later())
    answer = await served.client.get(
        "/api/v1/events/stream",
        params={"type": "shop.order.*", "correlation_id": "ENG-1", "since": "0"},
        headers=served.auth("viewer"),
    )
    await task
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    messages = _messages(answer.text)
    data = [json.loads(m["data"]) for m in messages if "data" in m]
    assert [d["event"]["type"] for d in data] == ["shop.order.placed", "shop.order.shipped"]
    assert data[0]["event"]["id"] == first.id
    assert [int(m["id"]) for m in messages if "data" in m] == [d["position"] for d in data]
    assert any(m.get("comment") == "keep-alive" for m in messages)

    # A reconnect with the last id it saw gets only what came after.
    await app.publish(Event(type="shop.order.refunded", source="shop", correlation_id="ENG-1"))
    again = await served.client.get(
        "/api/v1/events/stream",
        params={"correlation_id": "ENG-1"},
        headers={"Last-Event-ID": str(data[0]["position"]), **served.auth("viewer")},
    )
    types = [json.loads(m["data"])["event"]["type"] for m in _messages(again.text) if "data" in m]
    assert types == ["shop.order.shipped", "shop.order.refunded"]
    bad = await served.client.get(
        "/api/v1/events/stream", headers={"Last-Event-ID": "x", **served.auth("viewer")}
    )
    assert bad.status_code == 400


async def test_stream_hides_restricted_streams(served: Served) -> None:
    await served.publish(_ce(id="audited-2"))
    streams = {}
    for role in ("viewer", "admin"):
        answer = await served.client.get(
            "/api/v1/events/stream", params={"since": "0"}, headers=served.auth(role)
        )
        streams[role] = {
            json.loads(m["data"])["stream"][:7] for m in _messages(answer.text) if "data" in m
        }
    assert AUDIT_STREAM_PREFIX not in streams["viewer"]
    assert AUDIT_STREAM_PREFIX in streams["admin"]
