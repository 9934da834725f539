"""The JSON API's guard: a failing store answers 503; so does a bug, which the log locates."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from structlog.testing import capture_logs

from contexten.exceptions import StoreUnavailable
from contexten.ingress.json_api import guard


async def _store_down(request: Request) -> Response:
    raise StoreUnavailable("postgresql://app:secret@db: connection refused")


async def _bug(request: Request) -> Response:
    raise KeyError("payload-canary")


async def test_failures_answer_503_and_a_bug_says_where_it_was_raised() -> None:
    app = Starlette(routes=[Route("/store", guard(_store_down)), Route("/bug", guard(_bug))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with capture_logs() as logs:
            store = await client.get("/store")
            bug = await client.get("/bug")
    assert store.status_code == bug.status_code == 503
    assert store.json()["error"] == bug.json()["error"] == "store unavailable"
    failed = [e for e in logs if e["event"] == "API request failed"]
    assert [(e["error"], e["where"]) for e in failed] == [
        ("StoreUnavailable", None),
        ("KeyError", f"{__name__}:_bug:{_bug.__code__.co_firstlineno + 1}"),
    ]
    assert "canary" not in repr(failed)
    assert "secret" not in repr(failed)
