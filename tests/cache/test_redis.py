"""The Redis cache level against the conformance suite, on a real server (DB 15)."""

from __future__ import annotations

import asyncio
import inspect
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rex

from contexten.cache import Cache, MemoryCache, MultiLevelCache, create_cache
from contexten.cache.redis import RedisCache, translate_error
from contexten.exceptions import CacheError, CacheUnavailable, ConfigurationError
from contexten.testing.conformance.cache import CacheConformance

pytestmark = pytest.mark.redis


def unique_namespace() -> str:
    return f"contexten-test-{uuid.uuid4().hex}"


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def forget(url: str, namespace: str) -> None:
    """Remove every key of ``namespace``, with a client of its own."""
    async with RedisCache(url, namespace=namespace) as cleaner:
        await cleaner.clear()


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    name = unique_namespace()
    yield name
    await forget(redis_url, name)


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


# The conformance suite checks behaviour, not speed: 200 concurrent operations queue for the
# pool's 50 connections, and on a loaded machine that wait can pass the 1 s default.
_PATIENT = 10.0


class TestRedisCache(CacheConformance):
    short_ttl = 0.05  # Redis expires on its own clock: the suite really waits

    @pytest.fixture
    async def cache(self, redis_url: str, namespace: str) -> AsyncIterator[Cache]:
        async with RedisCache(redis_url, namespace=namespace, timeout=_PATIENT) as cache:
            yield cache

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class TestMultiLevelOverRedis(CacheConformance):
    short_ttl = 0.05
    exact_ttl = False

    @pytest.fixture
    async def cache(self, redis_url: str, namespace: str) -> AsyncIterator[Cache]:
        l2 = RedisCache(redis_url, namespace=namespace, timeout=_PATIENT)
        async with MultiLevelCache(MemoryCache(4), l2) as cache:
            yield cache

    async def pass_time(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_keys_live_under_the_namespace_with_a_server_side_ttl(
    redis_url: str, namespace: str, raw: aioredis.Redis
) -> None:
    async with RedisCache(redis_url, namespace=namespace, default_ttl=600) as cache:
        await cache.set("default", 1)
        await cache.set("explicit", 2, ttl=30)
        await cache.set("tiny", 3, ttl=0.0001)  # rounds up to 1 ms, never to "no expiry"
        await cache.set("forever", 4, ttl=None)
    assert 0 < await raw.pttl(f"{namespace}:default") <= 600_000
    assert 0 < await raw.pttl(f"{namespace}:explicit") <= 30_000
    assert await raw.pttl(f"{namespace}:tiny") in (-2, 0, 1)  # -2: already gone
    assert await raw.pttl(f"{namespace}:forever") <= 600_000  # default ttl applies


async def test_namespaces_do_not_see_or_clear_each_other(redis_url: str) -> None:
    first, second = unique_namespace(), unique_namespace()
    try:
        async with (
            RedisCache(redis_url, namespace=first) as a,
            RedisCache(redis_url, namespace=second) as b,
        ):
            await a.set("key", "a")
            await b.set("key", "b")
            assert await a.clear() == 1
            assert await a.get("key") is None
            assert await b.get("key") == "b"
    finally:
        await forget(redis_url, first)
        await forget(redis_url, second)


async def test_clear_walks_many_scan_batches(redis_url: str, namespace: str) -> None:
    async with RedisCache(redis_url, namespace=namespace) as cache:
        async with cache._client.pipeline(transaction=False) as pipe:
            for i in range(1_234):
                pipe.set(f"{namespace}:bulk:{i}", b"\x01")
            await pipe.execute()
        assert await cache.clear("bulk:") == 1_234
        assert await cache.get_many([f"bulk:{i}" for i in range(10)]) == {}


async def test_a_foreign_value_reads_as_a_miss_and_a_wrong_type_is_a_cache_error(
    redis_url: str, namespace: str, raw: aioredis.Redis
) -> None:
    await raw.set(f"{namespace}:foreign", b"\xc1 not msgpack")
    await raw.hset(f"{namespace}:hash", "field", "value")
    async with RedisCache(redis_url, namespace=namespace) as cache:
        assert await cache.get("foreign") is None
        assert await cache.get_many(["foreign"]) == {}
        with pytest.raises(CacheError) as caught:
            await cache.get("hash")
        assert not isinstance(caught.value, CacheUnavailable)
        assert isinstance(caught.value.__cause__, rex.ResponseError)


async def test_an_unreachable_server_raises_cache_unavailable() -> None:
    async with RedisCache(f"redis://127.0.0.1:{closed_port()}/0") as cache:
        for call in (
            cache.get("k"),
            cache.get_many(["k"]),
            cache.set("k", 1),
            cache.delete("k"),
            cache.clear(),
            cache.ping(),
        ):
            with pytest.raises(CacheUnavailable) as caught:
                await call
            assert isinstance(caught.value.__cause__, rex.ConnectionError)


def test_every_driver_error_translates_to_a_cache_error() -> None:
    driver_errors = [
        cls
        for _, cls in inspect.getmembers(rex, inspect.isclass)
        if issubclass(cls, rex.RedisError)
    ]
    assert len(driver_errors) > 10
    for cls in driver_errors:
        translated = translate_error(cls.__new__(cls))
        assert isinstance(translated, CacheError), cls
    unavailable = (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError, rex.ReadOnlyError)
    for cls in unavailable:
        assert isinstance(translate_error(cls("x")), CacheUnavailable), cls
    assert isinstance(translate_error(ConnectionResetError()), CacheUnavailable)
    assert type(translate_error(rex.ResponseError("WRONGTYPE"))) is CacheError
    assert type(translate_error(rex.DataError("bad"))) is CacheError


async def test_redis_urls(redis_url: str, namespace: str) -> None:
    plain = create_cache(f"{redis_url}?namespace={namespace}&ttl=9&socket_keepalive=true")
    layered = create_cache(f"{redis_url}?namespace={namespace}&l1=50&l1_ttl=2")
    async with plain, layered:
        assert isinstance(plain, RedisCache)
        assert (plain.namespace, plain.default_ttl) == (namespace, 9.0)
        assert isinstance(layered, MultiLevelCache)
        assert isinstance(layered.l1, MemoryCache)
        assert (layered.l1.max_entries, layered.l1_ttl) == (50, 2.0)
        await plain.set("shared", "through the URL")
        assert await layered.get("shared") == "through the URL"
    with pytest.raises(ConfigurationError, match="not a number"):
        create_cache(f"{redis_url}?l1=lots")
