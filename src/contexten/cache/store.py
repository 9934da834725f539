"""The store cache level (L3): a table with time-to-live in the event store's database.

Shared by every process that opens the same store (SQLite file or PostgreSQL schema), and
it survives restarts, so a lookup one process paid for is free for the others: it sits
behind the in-process L1 (and Redis, where there is one) in a
:class:`~contexten.cache.multilevel.MultiLevelCache`. Values are encoded with msgspec's
MessagePack like the Redis level (bytes survive; tuples come back as lists).

The store implements :class:`CacheTable` (the SQLite and PostgreSQL stores do); this module
only needs that protocol, so the cache does not depend on the store. Expiry is judged by the
database's side: the machine's clock for SQLite (every process on it shares it), the server's
``clock_timestamp()`` for PostgreSQL. Expired rows read as absent and are deleted by later
writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from contexten.cache.base import Cache, Ttl, check_value, ttl_seconds

__all__ = ["CacheTable", "StoreCache"]


@runtime_checkable
class CacheTable(Protocol):
    """What a store offers to hold cache entries (see :class:`StoreCache`)."""

    async def cache_get(self, keys: Sequence[str]) -> dict[str, tuple[bytes, float | None]]:
        """The live entries among ``keys``: encoded value and seconds left (None: forever)."""
        ...

    async def cache_set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (None: no expiry)."""
        ...

    async def cache_delete(self, key: str) -> bool:
        """Remove ``key``; whether a live entry was there."""
        ...

    async def cache_clear(self, prefix: str) -> int:
        """Remove the keys starting with ``prefix`` (literally); how many live ones went."""
        ...


class StoreCache(Cache):
    """A :class:`~contexten.cache.base.Cache` over a store's cache table.

    Args:
        table: the store (opened and closed by its owner, not by this cache).
        namespace: a key prefix, so several caches can share one table.
        default_ttl: seconds an entry lives when :meth:`set` gives no ttl (None: forever).
    """

    def __init__(
        self, table: CacheTable, *, namespace: str = "", default_ttl: Ttl | None = None
    ) -> None:
        self.table = table
        self.namespace = namespace
        self.default_ttl = ttl_seconds(default_ttl)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder()

    def _decode(self, raw: bytes) -> Any | None:
        try:
            return self._decoder.decode(raw)
        except msgspec.DecodeError:
            return None  # written by something else: a miss, never an error

    async def get(self, key: str) -> Any | None:
        entry = (await self.get_many_with_ttl([key])).get(key)
        return None if entry is None else entry[0]

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return {k: v for k, (v, _) in (await self.get_many_with_ttl(keys)).items()}

    async def get_many_with_ttl(self, keys: Iterable[str]) -> dict[str, tuple[Any, float | None]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        ns = self.namespace
        rows = await self.table.cache_get([ns + k for k in wanted])
        found: dict[str, tuple[Any, float | None]] = {}
        for key in wanted:
            row = rows.get(ns + key)
            if row is not None:
                value = self._decode(row[0])
                if value is not None:
                    found[key] = (value, row[1])
        return found

    async def set(self, key: str, value: Any, *, ttl: Ttl | None = None) -> None:
        check_value(value)
        seconds = ttl_seconds(ttl, self.default_ttl)
        await self.table.cache_set(self.namespace + key, self._encoder.encode(value), seconds)

    async def delete(self, key: str) -> bool:
        return await self.table.cache_delete(self.namespace + key)

    async def clear(self, prefix: str = "") -> int:
        return await self.table.cache_clear(self.namespace + prefix)
