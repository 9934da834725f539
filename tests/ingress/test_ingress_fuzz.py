"""Property tests: whatever a client sends, the ingress answers without a server error.

(The schema-driven companion of these, a schemathesis run against ``/openapi.json``, is
the API's contract test; these fuzz what the schema cannot describe: signed garbage.)
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contexten.events.envelope import Event
from contexten.ingress import create_ingress_app
from contexten.store import create_store

from ._support import AUTH, github_request, linear_request, make_config, slack_request

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


async def _run(requests: list[tuple[str, str, dict[str, Any]]]) -> list[int]:
    async with create_store("memory://") as store:
        await store.append("s", [Event(type=f"t.e{i}") for i in range(5)])
        app = create_ingress_app(store, make_config())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=AUTH
        ) as client:
            codes = []
            for method, path, kwargs in requests:
                codes.append((await client.request(method, path, **kwargs)).status_code)
            return codes


@SETTINGS
@given(
    params=st.dictionaries(st.sampled_from(["type", "before", "after", "limit", "x"]), _text),
    event_id=_text.filter(bool),
)
def test_events_api_never_fails_on_any_parameters(params: dict[str, str], event_id: str) -> None:
    codes = asyncio.run(
        _run(
            [
                ("GET", "/api/v1/events", {"params": params}),
                ("GET", f"/api/v1/events/{quote(event_id, safe='')}", {}),
            ]
        )
    )
    assert codes[0] in (200, 400), params
    assert codes[1] in (200, 404, 307)  # 307: a decoded "/" makes a trailing slash


@SETTINGS
@given(
    body=st.binary(max_size=300),
    event=_text,
    content_type=st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
    ),
)
def test_signed_garbage_is_refused_cleanly(body: bytes, event: str, content_type: str) -> None:
    github_body, github_headers = github_request(body=body)
    github_headers["X-GitHub-Event"] = event.encode("ascii", "ignore").decode() or "x"
    linear_body, linear_headers = linear_request(body=body)
    slack_body, slack_headers = slack_request(body=body)
    for headers in (github_headers, linear_headers, slack_headers):
        headers["Content-Type"] = content_type
    codes = asyncio.run(
        _run(
            [
                ("POST", "/webhooks/github", {"content": github_body, "headers": github_headers}),
                ("POST", "/webhooks/linear", {"content": linear_body, "headers": linear_headers}),
                ("POST", "/webhooks/slack", {"content": slack_body, "headers": slack_headers}),
            ]
        )
    )
    assert all(code < 500 for code in codes), codes
    # Signed, so GitHub and Slack got past verification (Linear may refuse the timestamp).
    assert codes[0] != 401
    assert codes[2] != 401
