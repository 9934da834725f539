"""The webhook routes through the ASGI app: verification, dedup, caps, hostile input, outages.

Every test runs on the in-memory store and on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from contexten.ingress import create_ingress_app
from contexten.ingress.config import IngressConfig
from contexten.store import EventStore
from contexten.store.base import RecordedEvent

from ._support import (
    ALL_SECRETS,
    GITHUB_NEXT_SECRET,
    HANG_GUARD,
    NOW,
    github_request,
    linear_payload,
    linear_request,
    make_config,
    pull_request_payload,
    slack_event_payload,
    slack_request,
    unverified_signature,
)


async def stored(store: EventStore) -> list[RecordedEvent]:
    return await store.read_all(after=0, limit=10_000)


# -- GitHub ----------------------------------------------------------------------------------


async def test_signed_github_delivery_is_stored_once(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    body, headers = github_request(delivery="d-1")
    response = await client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    [rec] = await stored(store)
    event = rec.event
    assert response.json()["id"] == event.id
    assert event.type == "github.pull_request.opened"
    assert (event.subject, event.actor, event.delivery_id) == ("octo/repo#7", "alice", "d-1")
    assert event.correlation_id == "ENG-7"
    assert event.time == NOW
    assert event.data == json.loads(body)
    assert rec.stream == "github-octo/repo#7"


async def test_redelivery_answers_2xx_and_changes_nothing(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    body, headers = github_request(delivery="d-1")
    assert (await client.post("/webhooks/github", content=body, headers=headers)).status_code == 202
    again = await client.post("/webhooks/github", content=body, headers=headers)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    assert len(await stored(store)) == 1


async def test_same_event_from_two_hooks_is_stored_once(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    repo_hook = pull_request_payload()
    app_hook = {**pull_request_payload(), "installation": {"id": 42, "node_id": "MDIz"}}
    for payload, delivery in ((repo_hook, "hook-a"), (app_hook, "hook-b")):
        body, headers = github_request(payload, delivery=delivery)
        response = await client.post("/webhooks/github", content=body, headers=headers)
        assert response.is_success
    assert len(await stored(store)) == 1
    later = pull_request_payload(updated_at="2030-01-01T00:00:05Z")
    body, headers = github_request(later, delivery="hook-c")
    assert (await client.post("/webhooks/github", content=body, headers=headers)).status_code == 202
    assert len(await stored(store)) == 2


async def test_twenty_concurrent_copies_store_one_event(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    body, headers = github_request(delivery="d-flood")
    async with asyncio.timeout(HANG_GUARD):
        responses = await asyncio.gather(
            *(client.post("/webhooks/github", content=body, headers=headers) for _ in range(20))
        )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 19 + [202]
    assert len(await stored(store)) == 1


async def test_twenty_concurrent_copies_without_semantic_key(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    push = {"ref": "refs/heads/main", "after": "abc", "repository": {"full_name": "o/r"}}
    body, headers = github_request(push, event="push", delivery="d-push")
    async with asyncio.timeout(HANG_GUARD):
        responses = await asyncio.gather(
            *(client.post("/webhooks/github", content=body, headers=headers) for _ in range(20))
        )
    assert all(r.is_success for r in responses)
    assert [r.event.type for r in await stored(store)] == ["github.push"]


@pytest.mark.parametrize(
    "change",
    [
        "wrong-secret",
        "no-signature",
        "sha1-only",
        "tampered-body",
        "empty-signature",
    ],
)
async def test_bad_github_signatures_get_a_bare_401(
    client: httpx.AsyncClient, store: EventStore, change: str
) -> None:
    body, headers = github_request()
    if change == "wrong-secret":
        body, headers = github_request(secret="not-the-secret")
    elif change == "no-signature":
        del headers["X-Hub-Signature-256"]
    elif change == "sha1-only":
        del headers["X-Hub-Signature-256"]
        headers["X-Hub-Signature"] = "sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0"
    elif change == "tampered-body":
        body = body.replace(b"opened", b"closed")
    else:
        headers["X-Hub-Signature-256"] = ""
    response = await client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 401
    assert response.content == b""
    assert await stored(store) == []


async def test_second_rotated_secret_is_accepted(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    body, headers = github_request(secret=GITHUB_NEXT_SECRET)
    assert (await client.post("/webhooks/github", content=body, headers=headers)).status_code == 202


async def test_missing_github_headers_after_a_valid_signature(client: httpx.AsyncClient) -> None:
    body, headers = github_request()
    del headers["X-GitHub-Event"]
    assert (await client.post("/webhooks/github", content=body, headers=headers)).status_code == 400
    body, headers = github_request()
    del headers["X-GitHub-Delivery"]
    assert (await client.post("/webhooks/github", content=body, headers=headers)).status_code == 400


async def test_platform_without_a_secret_refuses_everything(store: EventStore) -> None:
    config = IngressConfig.from_env({})
    app = create_ingress_app(store, config)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://x"
    ) as client:
        for path, (body, headers) in (
            ("/webhooks/github", github_request()),
            ("/webhooks/linear", linear_request()),
            ("/webhooks/slack", slack_request()),
        ):
            response = await client.post(path, content=body, headers=headers)
            assert response.status_code == 401
    assert await stored(store) == []


# -- Linear ----------------------------------------------------------------------------------


async def test_linear_delivery(client: httpx.AsyncClient, store: EventStore) -> None:
    body, headers = linear_request(delivery="lin-1")
    assert (await client.post("/webhooks/linear", content=body, headers=headers)).status_code == 202
    assert (await client.post("/webhooks/linear", content=body, headers=headers)).status_code == 200
    [rec] = await stored(store)
    assert rec.event.type == "linear.issue.updated"
    assert rec.event.subject == "ENG-1"
    assert rec.event.data["changes"] == {"stateId": {"from": "s1", "to": "s2"}}


@pytest.mark.parametrize(
    "payload",
    [
        linear_payload(timestamp_ms=int(NOW.timestamp() * 1000) - 61_000),
        linear_payload(timestamp_ms=int(NOW.timestamp() * 1000) + 61_000),
        {k: v for k, v in linear_payload().items() if k != "webhookTimestamp"},
    ],
    ids=["stale", "future", "missing"],
)
async def test_linear_timestamp_window(
    client: httpx.AsyncClient, store: EventStore, payload: dict[str, Any]
) -> None:
    body, headers = linear_request(payload)
    response = await client.post("/webhooks/linear", content=body, headers=headers)
    assert response.status_code == 401
    assert response.content == b""
    assert await stored(store) == []


async def test_linear_wrong_signature(client: httpx.AsyncClient, store: EventStore) -> None:
    body, headers = linear_request(secret="wrong")
    assert (await client.post("/webhooks/linear", content=body, headers=headers)).status_code == 401
    body, headers = linear_request()
    del headers["Linear-Signature"]
    assert (await client.post("/webhooks/linear", content=body, headers=headers)).status_code == 401
    assert await stored(store) == []


# -- Slack -----------------------------------------------------------------------------------


async def test_slack_url_verification_is_answered_not_stored(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    payload = {"token": "t", "challenge": "c-123", "type": "url_verification"}
    body, headers = slack_request(payload)
    response = await client.post("/webhooks/slack", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"challenge": "c-123"}
    assert await stored(store) == []
    body, headers = slack_request(payload, secret="forged")
    assert (await client.post("/webhooks/slack", content=body, headers=headers)).status_code == 401


async def test_slack_event_and_its_retries(client: httpx.AsyncClient, store: EventStore) -> None:
    body, headers = slack_request(slack_event_payload("Ev-1"))
    assert (await client.post("/webhooks/slack", content=body, headers=headers)).status_code == 202
    body, headers = slack_request(slack_event_payload("Ev-1"), retry=1)
    assert (await client.post("/webhooks/slack", content=body, headers=headers)).status_code == 200
    # A retry whose first attempt never got stored (a crash) is stored, once.
    body, headers = slack_request(slack_event_payload("Ev-2"), retry=2)
    assert (await client.post("/webhooks/slack", content=body, headers=headers)).status_code == 202
    assert [r.event.type for r in await stored(store)] == ["slack.app_mention"] * 2


async def test_slack_interactivity_and_commands(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    action = {"type": "block_actions", "trigger_id": "t.1", "user": {"id": "U1"}, "actions": []}
    body, headers = slack_request(form={"payload": json.dumps(action)})
    assert (await client.post("/webhooks/slack", content=body, headers=headers)).status_code == 202
    command = {"command": "/deploy", "text": "ENG-3", "user_id": "U1", "trigger_id": "t.2"}
    body, headers = slack_request(form=command)
    assert (await client.post("/webhooks/slack", content=body, headers=headers)).status_code == 202
    events = [r.event for r in await stored(store)]
    assert [e.type for e in events] == ["slack.block_actions", "slack.command"]
    assert events[1].correlation_id == "ENG-3"


async def test_slack_ssl_check_is_answered_200_and_not_stored(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    # Slack probes command and interactivity URLs with ssl_check=1 and expects a 200.
    body, headers = slack_request(form={"ssl_check": "1", "token": "xyzz0WbapA4vBCDEFasx0q6G"})
    response = await client.post("/webhooks/slack", content=body, headers=headers)
    assert response.status_code == 200
    assert await stored(store) == []


@pytest.mark.parametrize("offset", [-301, 301])
async def test_slack_stale_or_future_timestamp(
    client: httpx.AsyncClient, store: EventStore, offset: int
) -> None:
    body, headers = slack_request(timestamp=int(NOW.timestamp()) + offset)
    assert (await client.post("/webhooks/slack", content=body, headers=headers)).status_code == 401
    assert await stored(store) == []


# -- Codegen ---------------------------------------------------------------------------------


async def test_there_is_no_codegen_webhook_route(client: httpx.AsyncClient) -> None:
    # Codegen documents no webhooks (runs are polled): nothing may post events as Codegen.
    body = b'{"event": "agent_run.status_changed", "agent_run": {"id": 1, "status": "completed"}}'
    response = await client.post("/webhooks/codegen", content=body)
    assert response.status_code in (404, 405)


# -- caps --------------------------------------------------------------------------------------


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        chunk = b"x" * min(size, total - sent)
        sent += len(chunk)
        yield chunk


@pytest.mark.parametrize(
    ("path", "cap"), [("/webhooks/slack", 1 << 20), ("/webhooks/linear", 1 << 20)]
)
async def test_announced_oversize_body_is_413(
    client: httpx.AsyncClient, store: EventStore, path: str, cap: int
) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(cap + 1)}
    response = await client.post(path, content=b"{}", headers=headers)
    assert response.status_code == 413
    assert await stored(store) == []


async def test_announced_oversize_github_body_is_413(client: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(25 * (1 << 20) + 1)}
    response = await client.post("/webhooks/github", content=b"{}", headers=headers)
    assert response.status_code == 413


@pytest.mark.parametrize("path", ["/webhooks/slack", "/webhooks/linear", "/webhooks/github"])
async def test_chunked_body_growing_past_the_cap_is_413(
    client: httpx.AsyncClient, store: EventStore, config: IngressConfig, path: str
) -> None:
    cap = config.max_body(path.rsplit("/", 1)[1])  # type: ignore[arg-type]
    response = await client.post(
        path, content=_chunks(cap + 1), headers=unverified_signature(path.rsplit("/", 1)[1])
    )
    assert response.status_code == 413
    assert await stored(store) == []


async def test_body_exactly_at_the_cap_is_accepted(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    payload = linear_payload(pad="")
    size = len(json.dumps(payload).encode())
    payload["pad"] = "p" * ((1 << 20) - size)
    body, headers = linear_request(payload)
    assert len(body) == 1 << 20
    assert (await client.post("/webhooks/linear", content=body, headers=headers)).status_code == 202


async def test_bad_content_length_is_400(client: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": "12abc"}
    response = await client.post("/webhooks/slack", content=b"{}", headers=headers)
    assert response.status_code == 400


async def test_slow_body_times_out(memory_store: EventStore) -> None:
    app = create_ingress_app(memory_store, make_config(body_timeout=0.2))

    async def trickle() -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.sleep(HANG_GUARD)
        yield b"}"

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://x"
    ) as client:
        async with asyncio.timeout(HANG_GUARD / 2):
            response = await client.post(
                "/webhooks/slack", content=trickle(), headers=unverified_signature("slack")
            )
    assert response.status_code == 408


async def test_large_bodies_are_verified_off_the_event_loop(memory_store: EventStore) -> None:
    app = create_ingress_app(memory_store, make_config(offload_threshold=1024))
    payload = pull_request_payload()
    payload["pull_request"]["body"] = "b" * 200_000
    body, headers = github_request(payload)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://x"
    ) as client:
        assert (
            await client.post("/webhooks/github", content=body, headers=headers)
        ).status_code == 202
        bad_body, bad_headers = github_request(payload, secret="wrong")
        response = await client.post("/webhooks/github", content=bad_body, headers=bad_headers)
        assert response.status_code == 401
    assert len(await stored(memory_store)) == 1


# -- hostile JSON --------------------------------------------------------------------------------


HOSTILE = {
    "malformed": b'{"action": "opened",',
    "not-utf8": b'{"action": "\xff\xfe"}',
    "lone-surrogate": b'{"action": "\\ud800"}',
    "nan": b'{"action": NaN}',
    "deep-65": b'{"a":' + b"[" * 64 + b"]" * 64 + b"}",
    "deep-100k": b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "int-5000-digits": b'{"a": ' + b"9" * 5000 + b"}",
    "int-4000-digits": b'{"a": ' + b"9" * 4000 + b"}",
    "int-2**64": b'{"a": 18446744073709551616}',
    "huge-float": b'{"a": 1e400}',
    "array": b"[]",
    "string": b'"x"',
    "number": b"1",
    "null": b"null",
    "empty": b"",
    "bom": b'\xef\xbb\xbf{"a": 1}',
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_json_is_400_and_stores_nothing(
    client: httpx.AsyncClient, store: EventStore, name: str
) -> None:
    body, headers = github_request(body=HOSTILE[name])
    response = await client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == "malformed payload"
    assert await stored(store) == []


async def test_nesting_of_exactly_64_is_accepted(
    client: httpx.AsyncClient, store: EventStore
) -> None:
    body = b'{"action": "opened", "a":' + b"[" * 63 + b"]" * 63 + b"}"
    body, headers = github_request(body=body)
    assert (await client.post("/webhooks/github", content=body, headers=headers)).status_code == 202


async def test_hostile_slack_and_linear_bodies(client: httpx.AsyncClient) -> None:
    body, headers = slack_request(body=b'{"type": "event_callback", "event": [' + b"[" * 80)
    assert (await client.post("/webhooks/slack", content=body, headers=headers)).status_code == 400
    body, headers = slack_request(
        form={"payload": '{"type": "block_actions", "n": ' + "1" * 500 + "}"}
    )
    assert (await client.post("/webhooks/slack", content=body, headers=headers)).status_code == 400
    body, headers = linear_request(body=b"[1, 2]")
    assert (await client.post("/webhooks/linear", content=body, headers=headers)).status_code == 400


# -- secrets stay out of logs --------------------------------------------------------------------


async def test_secrets_and_signatures_never_reach_the_logs(client: httpx.AsyncClient) -> None:
    sent: list[str] = []
    with capture_logs() as logs:
        for body, headers in (
            github_request(secret="wrong"),
            github_request(),
            github_request(body=b"[]"),
            linear_request(secret="wrong"),
            linear_request(linear_payload(timestamp_ms=0)),
            slack_request(secret="wrong"),
            slack_request(timestamp=0),
        ):
            sent += [v for k, v in headers.items() if "signature" in k.lower()]
            path = "/webhooks/" + (
                "github" if "X-GitHub-Event" in headers else
                "linear" if "Linear-Signature" in headers else "slack"
            )  # fmt: skip
            await client.post(path, content=body, headers=headers)
    text = repr(logs)
    assert any(entry.get("event") == "webhook refused" for entry in logs)
    for secret in ALL_SECRETS:
        assert secret not in text
    for signature in sent:
        assert signature.split("=", 1)[-1] not in text
