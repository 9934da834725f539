"""The front door over a real server on loopback: idle and slow clients are closed, header
sections capped (431), connections bounded by evicting the idle ones, refusing (503) only
when every connection is busy; platforms that send their request at once are not disturbed.
Each behaviour is checked with both of uvicorn's HTTP implementations."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from contexten import App
from contexten.exceptions import ConfigurationError
from contexten.ingress import IngressConfig
from contexten.ingress.frontdoor import FrontDoorConfig, protocol_class, raise_open_files_limit
from contexten.ingress.server import IngressServer

from ._serving import serving
from ._support import HANG_GUARD, github_request, make_config, pull_request_payload

both = pytest.mark.parametrize("http", ["httptools", "h11"])


@contextlib.asynccontextmanager
async def _served(http: str, **limits: Any) -> AsyncIterator[tuple[IngressServer, str, int]]:
    app = App("memory://")
    async with serving(app, make_config(**limits), http=http) as (server, url):
        assert server.port is not None
        yield server, url, server.port


def _closed(server: IngressServer) -> dict[str, int]:
    config = server.uvicorn_config
    assert isinstance(config, FrontDoorConfig)
    return config.closed_connections


def _waiting(server: IngressServer) -> int:
    """Connections waiting for their request headers (the evictable ones)."""
    config = server.uvicorn_config
    assert isinstance(config, FrontDoorConfig)
    return len(config.guard.waiting)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded by HANG_GUARD)."""
    async with asyncio.timeout(HANG_GUARD):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


async def _post_webhook(url: str) -> httpx.Response:
    body, headers = github_request()
    async with httpx.AsyncClient(timeout=HANG_GUARD) as client:
        return await client.post(f"{url}/webhooks/github", content=body, headers=headers)


@both
async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(http: str) -> None:
    async with _served(http, keep_alive_timeout=1) as (server, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _read_all(reader) == b""  # closed without an answer: it asked nothing
        writer.close()
        assert _closed(server).get("idle") == 1
        scraped = server.asgi.state.metrics.render().decode()
        assert 'contexten_connections_closed_total{reason="idle"} 1.0' in scraped
        assert "contexten_connections_open " in scraped


@both
async def test_a_slowloris_client_gets_408_at_the_header_timeout(http: str) -> None:
    async with _served(http, keep_alive_timeout=1, header_timeout=1.5) as (server, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for i in range(1000):  # a header line every 0.2 s, never the blank line
                    writer.write(f"X-Slow-{i}: a\r\n".encode())
                    await writer.drain()
                    await asyncio.sleep(0.2)

        trickler = asyncio.create_task(trickle())
        answer = await _read_all(reader)
        trickler.cancel()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert _closed(server).get("header_timeout") == 1


@pytest.mark.parametrize("endless", [False, True], ids=["many-headers", "endless-value"])
@both
async def test_a_header_section_over_the_cap_is_answered_431(http: str, endless: bool) -> None:
    async with _served(http, max_header_bytes=4096) as (server, url, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")
        if endless:  # one header value that never ends: the parser must not buffer it all
            writer.write(b"X-Big: " + b"a" * 200_000)
        else:
            writer.write(b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 90) for i in range(60)))
            writer.write(b"Content-Length: 0\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        answer = await _read_all(reader)
        writer.close()
        if endless and not answer:
            pass  # closed with our bytes unread: the kernel may reset before the 431 is read
        else:
            assert answer.startswith(b"HTTP/1.1 431 "), answer
        assert _closed(server).get("headers_too_large") == 1
        # Headers under the cap are fine.
        assert (await _post_webhook(url)).status_code == 202


@both
async def test_past_max_connections_the_idle_ones_are_evicted_not_the_platform(
    http: str,
) -> None:
    async with _served(http, max_connections=20) as (server, url, port):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        # A platform connecting now gets in, and is answered.
        assert (await _post_webhook(url)).status_code == 202
        # The oldest idle connections were closed to make room; the newest 19 stay open.
        closed = 0
        for reader, _ in idle[:21]:
            assert await _read_all(reader) == b""
            closed += 1
        for _, writer in idle:
            writer.close()
        assert closed == 21
        assert _closed(server).get("evicted") == 21
        assert "refused" not in _closed(server)


@both
async def test_when_every_connection_is_busy_a_new_one_is_refused_503(http: str) -> None:
    async with _served(http, max_connections=3) as (server, _, port):
        busy = []
        body, headers = github_request()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        for _ in range(3):  # requests in flight: headers sent, the body still to come
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            await writer.drain()
            busy.append((reader, writer))
        async with asyncio.timeout(HANG_GUARD):
            while _waiting(server):  # noqa: ASYNC110 - the server's state, no event to wait on
                await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await _read_all(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"retry-after: 1\r\n" in answer.lower()
        assert _closed(server).get("refused") == 1
        # The busy requests were not disturbed: their bodies complete and are stored.
        for reader, writer in busy:
            writer.write(body)
            assert (await _read_all_response(reader)).startswith(b"HTTP/1.1 20")
            writer.close()


async def _read_all_response(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(HANG_GUARD):
        return await reader.readuntil(b"\r\n\r\n")


@both
async def test_a_kept_alive_platform_connection_serves_request_after_request(http: str) -> None:
    async with (
        _served(http, keep_alive_timeout=2) as (server, url, _),
        httpx.AsyncClient(timeout=HANG_GUARD) as client,
    ):
        for number in range(3):
            body, headers = github_request(pull_request_payload(number))
            response = await client.post(f"{url}/webhooks/github", content=body, headers=headers)
            assert response.status_code == 202
            await asyncio.sleep(0.5)
        assert _closed(server) == {}


def test_limits_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="max_connections"):
        IngressConfig(max_connections=0)
    with pytest.raises(ConfigurationError, match="slack_deadline"):
        IngressConfig(slack_deadline=0.5, deadline_margin=1.0)
    with pytest.raises(ValueError, match="unknown HTTP"):
        protocol_class("h3")
    assert protocol_class("h11") is not protocol_class("httptools")


def test_the_open_files_soft_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip("the hard open-files limit is too low to lower the soft one under it")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        before, after = raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == after
        assert before == 512
        assert after > before
        assert after == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@both
async def test_a_request_slower_than_the_header_timeout_is_not_cut_once_its_head_is_in(
    http: str,
) -> None:
    async with _served(http, keep_alive_timeout=1, header_timeout=1.0) as (server, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for number in range(2):  # the first request, then the next on the kept-alive connection
            body, headers = github_request(pull_request_payload(number))
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(
                f"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            for i in range(0, len(body), len(body) // 5 + 1):  # the body over ~2 s
                await asyncio.sleep(0.4)
                writer.write(body[i : i + len(body) // 5 + 1])
                await writer.drain()
            answer = await _read_all_response(reader)
            assert answer.startswith(b"HTTP/1.1 202 "), answer
            length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()
        assert _closed(server) == {}
