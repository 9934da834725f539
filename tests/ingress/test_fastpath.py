"""The webhook fast path answers exactly as the Starlette route it stands in front of.

Every other ingress test goes through the fast path (it takes every ``POST`` to a webhook
route); these check that turning it off changes nothing a platform or an operator sees,
that it leaves every other request to the whole stack, and that it keeps the stack's duties
(the HTTP request metrics, a 500 for an unexpected error).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from contexten.exceptions import StoreUnavailable
from contexten.ingress import create_ingress_app
from contexten.ingress.fastpath import Answer, IngressApplication, WebhookFastPath
from contexten.observability.metrics import Metrics
from contexten.store.base import EventStore
from contexten.store.memory import MemoryEventStore

from ._support import (
    AUTH,
    DownStore,
    github_request,
    make_config,
    slack_request,
    unverified_signature,
)

BASE = "http://localhost"


async def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
async def memory() -> AsyncIterator[EventStore]:
    async with MemoryEventStore() as store:
        yield store


def _requests() -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(name, path, body, headers) of deliveries covering each kind of answer."""
    body, headers = github_request(delivery="d-1")
    unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    slack_body, slack_headers = slack_request(
        {"type": "url_verification", "challenge": "ch-1", "token": "t"}
    )
    return [
        ("stored", "/webhooks/github", body, headers),
        ("duplicate", "/webhooks/github", body, headers),
        ("unsigned", "/webhooks/github", body, unsigned),
        ("bad signature", "/webhooks/github", body, {**headers, **unverified_signature("github")}),
        ("malformed", "/webhooks/github", b"[1]", {**headers, **_signed(b"[1]")}),
        ("too large", "/webhooks/github", b"x" * (2 << 20), headers),
        ("slack challenge", "/webhooks/slack", slack_body, slack_headers),
    ]


def _signed(body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": github_request(body=body)[1]["X-Hub-Signature-256"]}


async def _answers(app: IngressApplication) -> list[tuple[int, dict[str, str], Any]]:
    out = []
    async with await _client(app) as client:
        for _, path, body, headers in _requests():
            response = await client.post(path, content=body, headers=headers)
            answer = response.json() if response.content else None
            if isinstance(answer, dict):
                answer.pop("id", None)  # a new event id each time
            kept = {
                k: v for k, v in response.headers.items() if k in ("content-type", "retry-after")
            }
            out.append((response.status_code, kept, answer))
    return out


async def test_the_fast_path_answers_as_the_starlette_route_does() -> None:
    config = make_config(github_max_body=1 << 20)
    answers = []
    stored = []
    for fast in (True, False):
        async with MemoryEventStore() as store:
            app = create_ingress_app(store, config)
            assert isinstance(app, IngressApplication)
            assert app.fast_path is not None
            if not fast:
                app.fast_path = None
            answers.append(await _answers(app))
            stored.append([(r.stream, r.event.type) for r in await store.read_all()])
    assert answers[0] == answers[1]
    assert stored[0] == stored[1]
    statuses = [status for status, _, _ in answers[0]]
    assert statuses == [202, 200, 401, 401, 400, 413, 200]
    assert answers[0][6][2] == {"challenge": "ch-1"}
    assert len(stored[0]) == 1


async def test_a_store_failure_is_503_with_retry_after_on_both_paths() -> None:
    body, headers = github_request()
    for fast in (True, False):
        app = create_ingress_app(DownStore(StoreUnavailable("down")), make_config())
        if not fast:
            app.fast_path = None
        async with await _client(app) as client:
            response = await client.post("/webhooks/github", content=body, headers=headers)
        assert response.status_code == 503
        assert response.json() == {"error": "store unavailable"}
        assert response.headers["retry-after"] == "1"


async def test_webhooks_are_counted_as_the_metrics_middleware_counts_requests(
    memory: EventStore,
) -> None:
    metrics = Metrics()
    app = create_ingress_app(memory, make_config(), metrics=metrics)
    body, headers = github_request()
    async with await _client(app) as client:
        assert (
            await client.post("/webhooks/github", content=body, headers=headers)
        ).status_code == 202
        unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
        assert (
            await client.post("/webhooks/github", content=body, headers=unsigned)
        ).status_code == 401
    text = metrics.render().decode()
    for status in ("202", "401"):
        line = (
            'contexten_http_requests_total{method="POST",route="/webhooks/github",'
            f'status="{status}"}} 1.0'
        )
        assert line in text
    assert 'contexten_http_request_duration_seconds_count{route="/webhooks/github"} 2.0' in text
    assert 'contexten_webhooks_total{outcome="stored",platform="github"} 1.0' in text
    assert 'contexten_webhooks_total{outcome="unauthorized",platform="github"} 1.0' in text


async def test_other_requests_take_the_whole_stack(memory: EventStore) -> None:
    app = create_ingress_app(memory, make_config())
    assert app.fast_path is not None
    taken = [
        app.fast_path.platform_of({"path": path, "root_path": root})
        for path, root in [
            ("/webhooks/github", ""),
            ("/webhooks/linear", ""),
            ("/webhooks/slack", ""),
            ("/api/webhooks/github", "/api"),
            ("/webhooks/github/", ""),
            ("/webhooks/gitlab", ""),
            ("/webhooks/", ""),
        ]
    ]
    assert taken == ["github", "linear", "slack", "github", None, None, None]
    async with await _client(app) as client:
        # Not POST: the router answers (405), as before.
        assert (await client.get("/webhooks/github")).status_code == 405
        # Any other route is still behind the security middleware.
        assert (await client.get("/api/v1/events")).status_code == 401
        assert (await client.get("/api/v1/events", headers=AUTH)).status_code == 200


async def test_an_unexpected_error_answers_500_and_reaches_the_server() -> None:
    async def broken(platform: str, headers: Mapping[str, str], receive: Any) -> Answer:
        raise RuntimeError("a bug")

    metrics = Metrics()
    app = IngressApplication()
    app.fast_path = WebhookFastPath({"github": "github"}, broken, metrics)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        response = await client.post("/webhooks/github", content=b"{}")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    with pytest.raises(RuntimeError, match="a bug"):
        async with await _client(app) as client:
            await client.post("/webhooks/github", content=b"{}")
    assert 'route="/webhooks/github",status="500"} 2.0' in metrics.render().decode()


def test_answers_are_compact_json_with_their_length() -> None:
    answer = Answer.json(429, {"error": "é"}, retry_after=3)
    assert (
        answer.body
        == json.dumps({"error": "é"}, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert dict(answer.headers) == {
        b"content-length": str(len(answer.body)).encode(),
        b"content-type": b"application/json",
        b"retry-after": b"3",
    }
    assert Answer.empty(401).headers == ((b"content-length", b"0"),)
