"""Black-box: the ingress served by uvicorn on loopback, spoken to over real HTTP (and raw
sockets, where a well-behaved client cannot send what an attacker sends)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from structlog.testing import capture_logs

from contexten.ingress import IngressConfig, create_ingress_app
from contexten.store import EventStore, create_store
from contexten.testing.sandbox.webhooks import WebhookSender

from ._support import (
    ALL_SECRETS,
    HANG_GUARD,
    DownStore,
    github_request,
    linear_payload,
    linear_request,
    make_config,
    pull_request_payload,
    slack_event_payload,
    slack_request,
    unverified_signature,
)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[EventStore]:
    async with create_store(f"sqlite:///{tmp_path / 'served.db'}") as store:
        yield store


async def _serve(store: EventStore, config: IngressConfig | None = None) -> AsyncIterator[str]:
    app = create_ingress_app(store, config or make_config())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, lifespan="off", ws="none", http="h11", access_log=True
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(HANG_GUARD):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(HANG_GUARD):
            await task
        sock.close()


@pytest.fixture
async def base_url(sqlite_store: EventStore) -> AsyncIterator[str]:
    """The URL of a uvicorn server running the ingress over a SQLite store."""
    async for url in _serve(sqlite_store):
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=HANG_GUARD) as client:
        yield client


async def _raw(base_url: str, request: bytes) -> bytes:
    """Send raw bytes to the server and return whatever it answers before closing."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(HANG_GUARD):
            return await reader.read(65536)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_signed_delivery_over_http(http: httpx.AsyncClient, sqlite_store: EventStore) -> None:
    body, headers = github_request(delivery="h-1")
    response = await http.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == 202
    [rec] = await sqlite_store.read_all()
    assert rec.event.id == response.json()["id"]
    assert rec.event.type == "github.pull_request.opened"


@pytest.mark.parametrize("platform", ["github", "linear", "slack"])
async def test_wrong_signatures_over_http(
    http: httpx.AsyncClient, sqlite_store: EventStore, platform: str
) -> None:
    body, headers = {
        "github": github_request,
        "linear": linear_request,
        "slack": slack_request,
    }[platform](secret="forged")
    response = await http.post(f"/webhooks/{platform}", content=body, headers=headers)
    assert response.status_code == 401
    assert response.content == b""
    assert await sqlite_store.read_all() == []


async def test_twenty_concurrent_copies_over_http(base_url: str, sqlite_store: EventStore) -> None:
    body, headers = github_request(delivery="h-flood")
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=base_url, timeout=HANG_GUARD, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.post("/webhooks/github", content=body, headers=headers) for _ in range(20))
        )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert len(await sqlite_store.read_all()) == 1


async def test_announced_oversize_body_is_refused_before_it_is_sent(base_url: str) -> None:
    head = (
        b"POST /webhooks/slack HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1073741824\r\n\r\n{"
    )
    answer = await _raw(base_url, head)
    assert answer.startswith(b"HTTP/1.1 413")


async def test_chunked_body_past_the_cap_is_413(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):  # 2.5 MB in 64 KB chunks, no Content-Length
            yield b" " * 65536

    response = await http.post(
        "/webhooks/linear", content=chunks(), headers=unverified_signature("linear")
    )
    assert response.status_code == 413
    assert (await http.get("/healthz")).status_code == 200


async def test_raw_chunked_body_past_the_cap_is_413(base_url: str) -> None:
    chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"
    request = (
        b"POST /webhooks/slack HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"X-Slack-Signature: v0=00\r\n\r\n" + chunk * 17  # just over 1 MiB, never terminated
    )
    answer = await _raw(base_url, request)
    assert answer.startswith(b"HTTP/1.1 413")


async def test_hostile_json_over_http_and_the_server_stays_up(
    http: httpx.AsyncClient, sqlite_store: EventStore
) -> None:
    for hostile in (
        b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"a": ' + b"7" * 4300 + b"}",
        b'{"a": "\xc3\x28"}',
        b"[" * 10,
    ):
        body, headers = github_request(body=hostile)
        response = await http.post("/webhooks/github", content=body, headers=headers)
        assert response.status_code == 400
    assert await sqlite_store.read_all() == []
    body, headers = github_request()
    assert (await http.post("/webhooks/github", content=body, headers=headers)).status_code == 202


async def test_slack_url_verification_over_http(http: httpx.AsyncClient) -> None:
    body, headers = slack_request({"type": "url_verification", "challenge": "abc", "token": "t"})
    response = await http.post("/webhooks/slack", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"challenge": "abc"}


async def test_store_down_over_http_is_503() -> None:
    store = DownStore(OSError(5, "Input/output error"))
    async with store:
        async for url in _serve(store):
            async with httpx.AsyncClient(base_url=url, timeout=HANG_GUARD) as client:
                body, headers = linear_request()
                response = await client.post("/webhooks/linear", content=body, headers=headers)
                assert response.status_code == 503
                assert (await client.get("/readyz")).status_code == 503
                store.down = False
                response = await client.post("/webhooks/linear", content=body, headers=headers)
                assert response.status_code == 202


async def test_no_secret_or_signature_in_any_log(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    signatures: list[str] = []
    with capture_logs() as structured:
        for path, (body, headers) in (
            ("/webhooks/github", github_request()),
            ("/webhooks/github", github_request(secret="forged")),
            ("/webhooks/github", github_request(body=b"[")),
            ("/webhooks/linear", linear_request(secret="forged")),
            ("/webhooks/slack", slack_request(timestamp=1)),
            ("/webhooks/slack", slack_request(secret="forged")),
        ):
            signatures += [v.split("=")[-1] for k, v in headers.items() if "Signature" in k]
            await http.post(path, content=body, headers=headers)
    captured = capsys.readouterr()
    text = "\n".join([caplog.text, captured.out, captured.err, json.dumps(structured, default=str)])
    assert "POST /webhooks/github" in caplog.text  # the access log was captured
    for secret in ALL_SECRETS:
        assert secret not in text
    for signature in signatures:
        assert signature not in text


async def test_the_sandbox_platforms_deliver_to_the_ingress(tmp_path: Path) -> None:
    """Interop: the test kit's platform emulators sign and post the way the platforms do."""
    secrets = {"github": "g-s", "linear": "l-s", "slack": "s-s"}
    config = IngressConfig.from_env(
        {
            "CONTEXTEN_GITHUB_WEBHOOK_SECRET": secrets["github"],
            "CONTEXTEN_LINEAR_WEBHOOK_SECRET": secrets["linear"],
            "CONTEXTEN_SLACK_SIGNING_SECRET": secrets["slack"],
        }
    )  # the wall clock: the emulators stamp real time
    async with create_store(f"sqlite:///{tmp_path / 'sandbox.db'}") as store:
        async for url in _serve(store, config):
            sender = WebhookSender(f"{url}/webhooks", secrets)
            sender.github("pull_request", pull_request_payload(12))
            sender.linear("Issue", linear_payload())  # it stamps webhookTimestamp itself
            sender.slack_event(slack_event_payload("Ev-sandbox", text="ENG-12 please"))
            sender.slack_interaction(
                {"type": "block_actions", "trigger_id": "1.2.3", "user": {"id": "U1"}}
            )
            await sender.start()
            try:
                await sender.drain(HANG_GUARD)
            finally:
                await sender.stop()
            assert [d.status for d in sender.outbox] == [202] * 4, [
                (d.platform, d.status, d.error) for d in sender.outbox
            ]
        types = sorted(r.event.type for r in await store.read_all())
    assert types == [
        "github.pull_request.opened",
        "linear.issue.updated",
        "slack.app_mention",
        "slack.block_actions",
    ]
