"""The shared cache level (L2): Redis through ``redis.asyncio`` (the ``redis`` extra).

Every key lives under a namespace prefix (``contexten:<key>``), so one Redis database can
hold several caches and :meth:`RedisCache.clear` only ever touches its own. Values are
encoded with msgspec's MessagePack (compact, fast, and bytes survive the round trip); a
value that does not decode, written by something else, reads as a miss. Time-to-live is set
on the server (``SET ... PX``), so expiry is exact and costs no client work.

Redis errors are translated at this edge: connection refused or reset, timeouts, a server
still loading or read-only raise :class:`~contexten.exceptions.CacheUnavailable`; any other
refusal raises :class:`~contexten.exceptions.CacheError`. The client fails fast (short
timeouts, one immediate retry for a stale pooled connection) because a cache that waits is
worse than no cache: :class:`~contexten.cache.MultiLevelCache` carries on without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from contexten.cache.base import Cache, Ttl, check_value, ttl_seconds
from contexten.exceptions import CacheError, CacheUnavailable

__all__ = ["RedisCache", "translate_error"]

_UNAVAILABLE: Final = (
    rex.ConnectionError,  # includes auth failures, busy loading, a pool wait timed out
    rex.TimeoutError,
    rex.ReadOnlyError,
    rex.TryAgainError,
    rex.ClusterDownError,
    rex.OutOfMemoryError,
)
_GLOB_SPECIALS: Final = frozenset("*?[]\\")
_SCAN_BATCH: Final = 500


def translate_error(error: BaseException) -> CacheError:
    """The Contexten error for a driver error (the whole mapping, in one place)."""
    if isinstance(error, (*_UNAVAILABLE, OSError)):
        return CacheUnavailable(f"Redis is unavailable: {type(error).__name__}: {error}")
    return CacheError(f"Redis refused the operation: {type(error).__name__}: {error}")


@contextmanager
def _edge() -> Iterator[None]:
    try:
        yield
    except (rex.RedisError, OSError) as e:
        raise translate_error(e) from e


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in _GLOB_SPECIALS else c for c in text)


class RedisCache(Cache):
    """A cache level on a Redis server, shared by every process that uses the same namespace.

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``rediss://`` for TLS); redis-py
            query options (``?socket_timeout=...``) pass through.
        namespace: the key prefix (keys are stored as ``<namespace>:<key>``).
        default_ttl: seconds an entry lives when :meth:`set` gives no ttl (None: forever).
        connect_timeout: seconds to wait for a connection before failing.
        timeout: seconds to wait for a reply before failing.
        max_connections: size of the connection pool.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "contexten",
        default_ttl: Ttl | None = None,
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        max_connections: int = 50,
    ) -> None:
        if not namespace:
            raise ValueError("a Redis cache needs a non-empty namespace")
        self.namespace = namespace
        self.default_ttl = ttl_seconds(default_ttl)
        self._prefix = f"{namespace}:"
        # a blocking pool: past max_connections, callers queue (up to `timeout`) for one
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            max_connections=max_connections,
            timeout=timeout,
        )
        self._client: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder()

    def _decode(self, raw: bytes | str | None) -> Any | None:
        if not isinstance(raw, bytes):  # None: a miss (str never comes: raw responses)
            return None
        try:
            return self._decoder.decode(raw)
        except msgspec.DecodeError:
            return None

    async def get(self, key: str) -> Any | None:
        with _edge():
            raw = await self._client.get(self._prefix + key)
        return self._decode(raw)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with _edge():
            raws = await self._client.mget([self._prefix + k for k in wanted])
        found: dict[str, Any] = {}
        for key, raw in zip(wanted, raws, strict=True):
            value = self._decode(raw)
            if value is not None:
                found[key] = value
        return found

    async def get_many_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[Any, float | None]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        names = [self._prefix + k for k in wanted]
        with _edge():
            async with self._client.pipeline(transaction=True) as pipe:  # one consistent read
                pipe.mget(names)
                for name in names:
                    pipe.pttl(name)
                raws, *pttls = await pipe.execute()
        found: dict[str, tuple[Any, float | None]] = {}
        for key, raw, pttl in zip(wanted, raws, pttls, strict=True):
            value = self._decode(raw)
            if value is not None and pttl not in (0, -2):  # 0, -2: expiring, gone
                found[key] = (value, None if pttl == -1 else pttl / 1000)  # -1: no expiry
        return found

    async def set(self, key: str, value: Any, *, ttl: Ttl | None = None) -> None:
        check_value(value)
        seconds = ttl_seconds(ttl, self.default_ttl)
        millis = None if seconds is None else max(1, math.ceil(seconds * 1000))
        data = self._encoder.encode(value)
        with _edge():
            await self._client.set(self._prefix + key, data, px=millis)

    async def delete(self, key: str) -> bool:
        with _edge():
            removed: int = await self._client.delete(self._prefix + key)
        return removed > 0

    async def clear(self, prefix: str = "") -> int:
        pattern = _glob_escape(self._prefix + prefix) + "*"
        removed = 0
        batch: list[bytes] = []
        with _edge():
            async for name in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
                batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    removed += await self._client.unlink(*batch)
                    batch.clear()
            if batch:
                removed += await self._client.unlink(*batch)
        return removed

    async def ping(self) -> None:
        with _edge():
            await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose()
