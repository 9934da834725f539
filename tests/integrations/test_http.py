"""The shared HTTP layer: error translation is complete, the SSRF guard refuses before
connecting, redirects off the API hosts are refused, pools are per client."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import httpx
import pytest

from contexten.exceptions import (
    PlatformError,
    PlatformNotFound,
    PlatformRequestError,
    PlatformUnavailable,
    RateLimited,
    SSRFBlocked,
)
from contexten.integrations.client import ClientRegistry
from contexten.integrations.errors import (
    HTTPX_ERROR_MAP,
    error_for_status,
    translate_httpx_error,
)
from contexten.integrations.github import GitHubClient
from contexten.integrations.ssrf import SSRFGuard, is_private_address
from contexten.testing import VirtualClock

from .conftest import settings

# -- error translation ------------------------------------------------------------------------


def _httpx_exceptions() -> list[type[Exception]]:
    return [
        obj
        for name in httpx.__all__
        if inspect.isclass(obj := getattr(httpx, name)) and issubclass(obj, Exception)
    ]


def test_every_httpx_exception_is_mapped_explicitly() -> None:
    missing = [cls.__name__ for cls in _httpx_exceptions() if cls not in HTTPX_ERROR_MAP]
    assert missing == [], f"add these httpx exceptions to HTTPX_ERROR_MAP: {missing}"


@pytest.mark.parametrize("cls", _httpx_exceptions(), ids=lambda c: c.__name__)
def test_translation_gives_a_platform_error(cls: type[Exception]) -> None:
    request = httpx.Request("GET", "https://api.github.com/x")
    if cls is httpx.HTTPStatusError:
        error: Exception = cls("boom", request=request, response=httpx.Response(503))
    elif issubclass(cls, httpx.RequestError):
        error = cls("boom", request=request)
    elif cls in (
        httpx.StreamClosed,
        httpx.StreamConsumed,
        httpx.RequestNotRead,
        httpx.ResponseNotRead,
    ):
        error = cls()
    else:
        error = cls("boom")
    translated = translate_httpx_error(error, platform="github")
    assert isinstance(translated, PlatformError)
    assert translated.platform == "github"
    assert isinstance(translated, HTTPX_ERROR_MAP[cls].error)


def test_reset_after_sending_may_have_applied_but_connect_error_did_not() -> None:
    request = httpx.Request("POST", "https://api.github.com/x")
    read = translate_httpx_error(httpx.ReadError("reset", request=request), platform="github")
    connect = translate_httpx_error(
        httpx.ConnectError("refused", request=request), platform="github"
    )
    assert read.maybe_applied
    assert not connect.maybe_applied


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, RateLimited, True),
        (503, PlatformUnavailable, True),
        (500, PlatformUnavailable, True),
        (404, PlatformNotFound, False),
        (422, PlatformRequestError, False),
        (401, PlatformRequestError, False),
    ],
)
def test_status_mapping(status: int, kind: type[PlatformError], retryable: bool) -> None:
    error = error_for_status(status, "message", platform="slack")
    assert type(error) is kind
    assert bool(getattr(error, "non_retryable", False)) is not retryable


# -- SSRF ---------------------------------------------------------------------------------------


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP listener on loopback that counts the connections it accepts."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, accepted
    await server.wait_closed()


async def test_absolute_url_to_loopback_is_refused_without_connecting(
    listener: tuple[int, list[int]],
) -> None:
    port, accepted = listener
    async with GitHubClient(settings("https://api.github.com")) as gh:
        with pytest.raises(SSRFBlocked, match="not a configured API host"):
            await gh.http.request("GET", f"http://127.0.0.1:{port}/repos/a/b")
    await asyncio.sleep(0.05)
    assert accepted == []


async def test_configured_host_resolving_to_private_address_is_refused(
    listener: tuple[int, list[int]],
) -> None:
    port, accepted = listener

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # a rebinding DNS answer for a public-looking host

    async with GitHubClient(settings(f"http://api.example.com:{port}"), resolver=resolver) as gh:
        with pytest.raises(SSRFBlocked, match="non-public address"):
            await gh.get_pull_request("a/b", 1)
    await asyncio.sleep(0.05)
    assert accepted == []


async def test_redirect_off_the_api_host_is_refused(listener: tuple[int, list[int]]) -> None:
    port, accepted = listener

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": f"http://127.0.0.1:{port}/steal"})

    async with GitHubClient(
        settings("https://api.github.com"), transport=httpx.MockTransport(handler)
    ) as gh:
        with pytest.raises(SSRFBlocked):
            await gh.get_pull_request("a/b", 1)
    await asyncio.sleep(0.05)
    assert accepted == []


async def test_redirect_on_the_api_host_is_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/repos/old/name/pulls/1":
            return httpx.Response(301, headers={"location": "/repos/new/name/pulls/1"})
        return httpx.Response(200, json={"number": 1, "path": request.url.path})

    async with GitHubClient(
        settings("https://api.github.com"), transport=httpx.MockTransport(handler)
    ) as gh:
        pr = await gh.get_pull_request("old/name", 1)
    assert pr["path"] == "/repos/new/name/pulls/1"


async def test_loopback_base_url_is_allowed_because_it_was_configured() -> None:
    guard = SSRFGuard("http://127.0.0.1:8900/github")
    await guard.check(httpx.URL("http://127.0.0.1:8900/github/repos"))
    with pytest.raises(SSRFBlocked):
        await guard.check(httpx.URL("file:///etc/passwd"))


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("169.254.169.254", True),
        ("::1", True),
        ("::ffff:192.168.0.1", True),
        ("140.82.112.6", False),
        ("2606:50c0:8000::154", False),
    ],
)
def test_private_addresses(address: str, private: bool) -> None:
    assert is_private_address(address) is private


# -- pools ---------------------------------------------------------------------------------------


async def test_one_client_per_platform_and_pool_bound(clock: VirtualClock) -> None:
    env = {"CONTEXTEN_GITHUB_TOKEN": "t", "CONTEXTEN_GITHUB_BASE_URL": "https://ghe.example"}
    async with ClientRegistry(env=env, clock=clock, max_connections=7) as registry:
        first = registry.get(GitHubClient)
        assert registry.get(GitHubClient) is first
        assert first.settings.base_url == "https://ghe.example"
        assert first.settings.max_connections == 7
        assert first.http.guard.hosts == frozenset({"ghe.example"})
